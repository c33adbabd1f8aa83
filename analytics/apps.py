from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _usage_rollups_ensure(sender, **kwargs) -> None:
    from analytics.services import usage_rollups_ensure

    usage_rollups_ensure()


class AnalyticsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "analytics"

    def ready(self) -> None:
        from analytics import receivers  # noqa: F401  (connects receivers)

        # A database with usage from before the rollups existed gets them built once, after migrate.
        post_migrate.connect(_usage_rollups_ensure, sender=self, dispatch_uid="analytics_usage_rollups_ensure")
