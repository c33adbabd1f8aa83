from django.apps import AppConfig


class KeysConfig(AppConfig):
    """API keys: the model, how a request is authenticated by one, and the keys API."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "keys"
    verbose_name = "API keys"

    def ready(self) -> None:
        from keys import receivers  # noqa: F401 - connects the receivers that refresh the memo of key reads
