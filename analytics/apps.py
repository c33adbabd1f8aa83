from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _after_migrate(sender, **kwargs) -> None:
    from analytics.prices import prices_seed
    from analytics.services import reconcile_schedule_ensure, usage_rollups_ensure

    prices_seed()
    reconcile_schedule_ensure()
    usage_rollups_ensure()


class AnalyticsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "analytics"

    def ready(self) -> None:
        from analytics import receivers  # noqa: F401  (connects receivers)
        from analytics.selectors import price_for_call, priced_model_names
        from workflows.pricing import price_lookup_register

        # Runs price their calls through workflows.pricing; the prices are this app's (ModelPrice).
        price_lookup_register(price_for_call, models=priced_model_names)

        # After every migrate (and test flush), after workflows' (INSTALLED_APPS order): the seed prices and the
        # reconciliation's schedule exist, and a database with usage from before the rollups gets them built once.
        post_migrate.connect(_after_migrate, sender=self, dispatch_uid="analytics_after_migrate")
