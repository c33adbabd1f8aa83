from django.apps import AppConfig
from django.db.backends.signals import connection_created


class ChatterProjectConfig(AppConfig):
    """The composition root: settings, URLs, ASGI, health and metrics. It has no models; it stays an installed app
    for its migrations, which made the API keys' table (the keys app's now): databases record them, and keys',
    gateway's, workflows' and analytics' migrations depend on them."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "chatter_project"
    verbose_name = "Chatter"

    def ready(self) -> None:
        from django.conf import settings

        from core.db import pooled_connection_check

        if settings.CHATTER_TRACING:
            from core.otel import tracing_setup

            tracing_setup(settings.CHATTER_TRACES_EXPORTERS)

        connection_created.connect(pooled_connection_check, dispatch_uid="chatter_pooled_connection_check")
