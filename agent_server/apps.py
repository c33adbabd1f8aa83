from django.apps import AppConfig


class AgentServerConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "agent_server"
    verbose_name = "LangGraph Agent Server API"

    def ready(self) -> None:
        from agent_server import receivers, webhooks  # noqa: F401 - connect the receivers of workflows' signals
        from agent_server.store_index import store_index_check

        store_index_check()  # a store index naming a model Chatter cannot embed with stops start-up
