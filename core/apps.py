from django.apps import AppConfig
from django.core.signals import setting_changed  # (documented as django.test.signals.setting_changed)
from django.db.models.signals import post_migrate


class CoreConfig(AppConfig):
    """The plumbing every app stands on. An installed app for one table: the hot reads' version where no cache is
    shared by every process (core.models.HotReadsVersion)."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "core"

    def ready(self) -> None:
        from core.cache import hot_reads
        from core.secrets import secrets_forget

        post_migrate.connect(hot_reads.version_row_ensure, sender=self, dispatch_uid="core_hot_reads_version_row")
        setting_changed.connect(secrets_forget, dispatch_uid="core_secrets_forget")
