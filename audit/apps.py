from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _after_migrate(sender, **kwargs) -> None:
    from audit.services import access_denied_schedule_ensure

    access_denied_schedule_ensure()


class AuditConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "audit"

    def ready(self) -> None:
        from audit import receivers  # noqa: F401  (connects receivers)

        # After every migrate (and test flush): the schedule that writes the windows of anonymous refusals.
        post_migrate.connect(_after_migrate, sender=self, dispatch_uid="audit_after_migrate")
