from django.apps import AppConfig


class QuickFlushConfig(AppConfig):
    """Installed by the test settings only: its `flush` command (management/commands/flush.py) overrides Django's
    for the suite, as Django lets an installed app override a built-in command."""

    name = "tests.quick_flush"
    label = "quick_flush"
