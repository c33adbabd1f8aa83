"""django-q2 task functions of knowledge: they take ids and call services, and are safe to deliver twice."""
from knowledge.ingest import document_ingest
from knowledge.models import CollectionDocument
from knowledge.reembed import collection_reembed


def document_ingest_task(document_id: str) -> str:
    """Read, cut and embed a queued document (an upload). A second delivery finds it taken and does nothing; a
    document deleted meanwhile is gone."""
    document = CollectionDocument.objects.filter(pk=document_id).first()
    return "gone" if document is None else document_ingest(document).status


def collection_reembed_task(collection_id: str) -> str:
    """Re-embed a collection whose embedding model was changed (knowledge.reembed): its model once it ends."""
    collection = collection_reembed(collection_id)
    return "gone" if collection is None else collection.embedding_model
