from django.apps import AppConfig
from django.db import connections
from django.db.models.signals import post_migrate


class KnowledgeConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "knowledge"

    def ready(self) -> None:
        post_migrate.connect(_vector_indexes_ensure, sender=self, dispatch_uid="knowledge_vector_indexes_ensure")
        post_migrate.connect(_keyword_statistics_ensure, sender=self,
                             dispatch_uid="knowledge_keyword_statistics_ensure")
        # Runs search collections through workflows, which sits below this app and never imports it.
        from workflows.knowledge_search import collections_search_register

        collections_search_register(_collections_search, check=_collections_check)
        post_migrate.connect(_queued_enqueue, sender=self, dispatch_uid="knowledge_queued_enqueue")
        post_migrate.connect(_sweep_ensure, sender=self, dispatch_uid="knowledge_sweep_ensure")
        from conversations.signals import document_created, document_deleting

        document_created.connect(_document_mirror, dispatch_uid="knowledge_document_mirror")
        document_deleting.connect(_document_hand_over, dispatch_uid="knowledge_document_hand_over")


def _vector_indexes_ensure(*, using: str, **kwargs) -> None:
    # A migration that rebuilt the chunk table on SQLite dropped the triggers keeping its vector indexes in step.
    from knowledge.vector_index import vector_indexes_ensure

    vector_indexes_ensure(using=connections[using])


def _keyword_statistics_ensure(*, using: str, **kwargs) -> None:
    # The same rebuild drops the triggers keeping the collections' word statistics (SQLite).
    from knowledge.keyword_statistics import keyword_statistics_ensure

    keyword_statistics_ensure(using=connections[using])


def _collections_search(**kwargs):
    # Imported when a run first searches: a command's start stays free of the search's imports.
    from knowledge.retrieval import collections_search_for_run

    return collections_search_for_run(**kwargs)


def _collections_check(*, user, refs) -> None:
    from knowledge.retrieval import collections_named

    collections_named(user=user, refs=refs)


def _queued_enqueue(*, using: str, **kwargs) -> None:
    # Documents a migration queued (knowledge.defaults) get their vectors from the workers, not the migration.
    from knowledge.defaults import queued_documents_enqueue

    queued_documents_enqueue()


def _sweep_ensure(**kwargs) -> None:
    # After every migrate (and test flush): the schedule that takes up JSON documents whose request died.
    from knowledge.services import knowledge_sweep_ensure

    knowledge_sweep_ensure()


def _document_mirror(*, document, api_key=None, **kwargs) -> None:
    # A Document of /api/v1/documents/ joins its owner's default collection (knowledge.defaults), embedded as the
    # API key that made it would.
    from knowledge.defaults import document_mirror

    document_mirror(document, api_key=api_key)


def _document_hand_over(*, document, **kwargs) -> None:
    # A mirror shared by Documents of the same text outlives the one it names (knowledge.defaults).
    from knowledge.defaults import document_mirror_hand_over

    document_mirror_hand_over(document)
