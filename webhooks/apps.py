from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _after_migrate(sender, **kwargs) -> None:
    from webhooks.tasks import webhook_sweep_ensure

    webhook_sweep_ensure()


class WebhooksConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "webhooks"
    verbose_name = "Webhooks"

    def ready(self) -> None:
        # After every migrate (and test flush): the schedule of the sweep that sends lost deliveries again.
        post_migrate.connect(_after_migrate, sender=self, dispatch_uid="webhooks_after_migrate")
