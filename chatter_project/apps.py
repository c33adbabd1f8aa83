from django.apps import AppConfig
from django.db.backends.signals import connection_created


class ChatterProjectConfig(AppConfig):
    """The plumbing, installed as an app for the one table it owns: API tokens."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "chatter_project"
    verbose_name = "Chatter"

    def ready(self) -> None:
        from chatter_project.db import pooled_connection_check

        connection_created.connect(pooled_connection_check, dispatch_uid="chatter_pooled_connection_check")
