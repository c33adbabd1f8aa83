"""django-q2 task functions of knowledge: they take ids and call services, and are safe to deliver twice."""
from knowledge.ingest import document_ingest
from knowledge.models import CollectionDocument


def document_ingest_task(document_id: str) -> str:
    """Read, cut and embed a queued document (an upload). A second delivery finds it taken and does nothing; a
    document deleted meanwhile is gone."""
    document = CollectionDocument.objects.filter(pk=document_id).first()
    return "gone" if document is None else document_ingest(document).status
