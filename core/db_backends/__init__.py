"""Database backends of our own, named by ENGINE in settings (Django's documented way to change a backend)."""
