from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _seed_builtins(sender, **kwargs) -> None:
    from workflows.services.schedules import scheduler_ensure
    from workflows.services.templates import builtins_seed

    builtins_seed()
    scheduler_ensure()


class WorkflowsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "workflows"

    def ready(self) -> None:
        from chatter_project.db import pools_close_before_fork

        pools_close_before_fork()
        # Built-in templates and the system schedules exist after every migrate (and after test flushes).
        post_migrate.connect(_seed_builtins, sender=self, dispatch_uid="workflows_seed_builtins")
