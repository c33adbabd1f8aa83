from django.apps import AppConfig
from django.db.models.signals import post_migrate


class CoreConfig(AppConfig):
    """The plumbing every app stands on. An installed app for one table: the hot reads' version where no cache is
    shared by every process (core.models.HotReadsVersion)."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "core"

    def ready(self) -> None:
        from core.cache import hot_reads

        post_migrate.connect(hot_reads.version_row_ensure, sender=self, dispatch_uid="core_hot_reads_version_row")
