from django.apps import AppConfig


class ChatterProjectConfig(AppConfig):
    """The plumbing, installed as an app for the one table it owns: API tokens."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "chatter_project"
    verbose_name = "Chatter"
