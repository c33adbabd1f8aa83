from django.apps import AppConfig


class KeysConfig(AppConfig):
    """API keys: the model, how a request is authenticated by one, and the keys API."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "keys"
    verbose_name = "API keys"
