"""django-q2 task functions of knowledge: they take ids and call services, and are safe to deliver twice.

A job asked for through an API key carries the key's id: its embeddings are that key's calls, held to its limits
(model allow-list, requests and tokens a minute) and to the budgets of the key, as the request's own would be. A key
deleted meanwhile has no limits left to hold."""
from keys.models import ApiToken
from knowledge.ingest import document_ingest
from knowledge.models import CollectionDocument
from knowledge.reembed import collection_reembed
from knowledge.services import documents_lapsed_requeue


def _api_key(api_key_id: int | None) -> ApiToken | None:
    return ApiToken.objects.filter(pk=api_key_id).first() if api_key_id is not None else None


def document_ingest_task(document_id: str, api_key_id: int | None = None) -> str:
    """Read, cut and embed a queued document (an upload), as the key that added it. A second delivery finds it taken
    and does nothing; a document deleted before or while it runs is gone."""
    document = CollectionDocument.objects.filter(pk=document_id).first()
    ingested = document_ingest(document, api_key=_api_key(api_key_id)) if document is not None else None
    return "gone" if ingested is None else ingested.status


def collection_reembed_task(collection_id: str, api_key_id: int | None = None) -> str:
    """Re-embed a collection whose embedding model was changed (knowledge.reembed), as the key that changed it: its
    model once it ends."""
    collection = collection_reembed(collection_id, api_key=_api_key(api_key_id))
    return "gone" if collection is None else collection.embedding_model


def documents_lapsed_requeue_task() -> int:
    """Every CHATTER_SWEEP_INTERVAL_S (knowledge.services.knowledge_sweep_ensure): the documents added as JSON text
    whose ingestion died with its request, queued again for the ingestion job. How many."""
    return documents_lapsed_requeue()
