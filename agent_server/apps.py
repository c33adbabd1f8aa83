from django.apps import AppConfig


class AgentServerConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "agent_server"
    verbose_name = "LangGraph Agent Server API"

    def ready(self) -> None:
        from agent_server import receivers  # noqa: F401 - connects the receivers of workflows' signals
