"""django-q2 task functions: they take ids and call services, and are safe to deliver twice."""
from knowledge.ingestion_job import document_ingestion_run


def document_ingest_task(document_id: str) -> str:
    """Ingest a queued document; a second delivery finds it claimed and does nothing. Its status after."""
    return document_ingestion_run(document_id=document_id)
