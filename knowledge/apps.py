from django.apps import AppConfig
from django.db import connections
from django.db.models.signals import post_migrate


class KnowledgeConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "knowledge"

    def ready(self) -> None:
        post_migrate.connect(_vector_indexes_ensure, sender=self, dispatch_uid="knowledge_vector_indexes_ensure")


def _vector_indexes_ensure(*, using: str, **kwargs) -> None:
    # A migration that rebuilt the chunk table on SQLite dropped the triggers keeping its vector indexes in step.
    from knowledge.vector_index import vector_indexes_ensure

    vector_indexes_ensure(using=connections[using])
