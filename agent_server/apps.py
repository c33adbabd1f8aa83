from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _after_migrate(sender, **kwargs) -> None:
    from agent_server.tasks import thread_expiry_sweep_ensure

    thread_expiry_sweep_ensure()


class AgentServerConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "agent_server"
    verbose_name = "LangGraph Agent Server API"

    def ready(self) -> None:
        from agent_server import receivers, webhooks  # noqa: F401 - connect the receivers of workflows' signals
        from agent_server.store_index import store_index_check

        store_index_check()  # a store index naming a model Chatter cannot embed with stops start-up
        # After every migrate (and test flush): the schedule of the sweep of threads past their ttl.
        post_migrate.connect(_after_migrate, sender=self, dispatch_uid="agent_server_after_migrate")
