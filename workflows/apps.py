from django.apps import AppConfig
from django.core.signals import setting_changed  # (documented as django.test.signals.setting_changed)
from django.db.models.signals import post_delete, post_migrate


def _seed_builtins(sender, **kwargs) -> None:
    from workflows.services.schedules import scheduler_ensure
    from workflows.services.templates import builtins_seed

    builtins_seed()
    scheduler_ensure()


def _template_visible(*, owner, key_or_id: str):
    """The id of the template `owner` may see by key or id, None when none (what a budget may be on)."""
    from workflows.selectors import template_get

    template = template_get(user=owner, key_or_id=key_or_id)
    return template.pk if template is not None else None


class WorkflowsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "workflows"

    def ready(self) -> None:
        from budgets.targets import template_lookup_register
        from core.db import pools_close_before_fork
        from workflows import receivers  # noqa: F401 - closes sockets when their access ends
        from workflows.models import WorkflowSchedule
        from workflows.services.schedules import schedule_deleted_audit

        pools_close_before_fork()
        template_lookup_register(_template_visible)  # a budget may be on a template (budgets.targets)
        # The engine is configured from the settings, now and at every change of one; the deployments file
        # (CHATTER_DEPLOYMENTS) is read and checked as the process starts: a bad one stops it.
        from workflows.engine_setup import deployments_check, engine_configure

        engine_configure()
        setting_changed.connect(engine_configure, dispatch_uid="workflows_engine_configure")
        deployments_check()
        post_delete.connect(schedule_deleted_audit, sender=WorkflowSchedule, dispatch_uid="workflows_schedule_deleted")
        # Built-in templates and the system schedules exist after every migrate (and after test flushes).
        post_migrate.connect(_seed_builtins, sender=self, dispatch_uid="workflows_seed_builtins")
