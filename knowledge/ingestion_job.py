"""A document's ingestion as a background job (django-q2, `knowledge.tasks.document_ingest_task`): the document goes
queued → processing → ready, or failed with the reason, and its owner's feed (/ws/events/) hears
`document_updated` at each step and as chunks are embedded, through the one event path (workflows.events).

What it needs of the knowledge app (the interface; the collections' models and services provide it):
- `knowledge.models.Document` with `status` (`Document.Status`: QUEUED, PROCESSING, READY, FAILED, the values
  "queued", "processing", "ready", "failed"), `status_reason` (text), `collection_id`, and
  `collection.owner_id`;
- `knowledge.services.document_ingest(document, *, progress)`: parses, chunks, embeds and writes the document's
  chunks in one transaction, calling `progress(done, total)` as chunks are embedded. It raises one of the error
  hierarchy's (core.errors.ChatterError: FileUnreadable, a refused budget, a provider's error) when the document
  cannot be ingested: its message is the reason the document keeps. It does not change `status`: this job does.
A second delivery of the task finds the document claimed and does nothing.
"""
from __future__ import annotations

import logging

from django.apps import apps
from django.db import transaction
from django.utils.module_loading import import_string

from core.errors import ChatterError, Unavailable
from workflows.events import event_envelope, events_publish

logger = logging.getLogger(__name__)

QUEUED, PROCESSING, READY, FAILED = "queued", "processing", "ready", "failed"


def _documents():
    return apps.get_model("knowledge", "Document").objects


def document_enqueue(*, document_id) -> None:
    """Hand a committed queued document to the django-q2 workers (call it from transaction.on_commit). A broker
    that refuses leaves the document failed, saying so, not queued for ever."""
    from django_q.tasks import async_task

    try:
        async_task("knowledge.tasks.document_ingest_task", str(document_id), task_name=f"document-{document_id}",
                   group="knowledge")
    except Exception as exc:  # noqa: BLE001 - whatever the broker raised, the document must not stay queued
        logger.exception("document %s could not be queued", document_id)
        _documents().filter(pk=document_id, status=QUEUED).update(
            status=FAILED, status_reason=f"could not be queued: {type(exc).__name__}")
        raise Unavailable("the document could not be queued", code="queue_unavailable") from exc


def document_ingestion_run(*, document_id) -> str:
    """Ingest a queued document (the task's body); its status after."""
    if not _documents().filter(pk=document_id, status=QUEUED).update(status=PROCESSING, status_reason=""):
        return _documents().filter(pk=document_id).values_list("status", flat=True).first() or "missing"
    document = _documents().select_related("collection").get(pk=document_id)
    owner_id = document.collection.owner_id
    _updated(document, owner_id=owner_id, status=PROCESSING)
    ingest = import_string("knowledge.services.document_ingest")
    try:
        ingest(document, progress=lambda done, total: _updated(document, owner_id=owner_id, status=PROCESSING,
                                                               done=done, total=total))
    except ChatterError as exc:
        status, reason = FAILED, exc.message
    except Exception as exc:  # noqa: BLE001 - the document ends failed, saying why; nothing of it was written
        logger.exception("document %s failed", document_id)
        status, reason = FAILED, f"internal error ({type(exc).__name__})"
    else:
        status, reason = READY, ""
    _documents().filter(pk=document_id, status=PROCESSING).update(status=status, status_reason=reason)
    _updated(document, owner_id=owner_id, status=status, reason=reason)
    return status


def _updated(document, *, owner_id, status: str, reason: str = "", done: int | None = None,
             total: int | None = None) -> None:
    """`document_updated` on the owner's feed once what is being written commits (at once outside a transaction).
    Not persisted: it is no run's event."""
    data = {"document_id": str(document.pk), "collection_id": str(document.collection_id), "status": status,
            "reason": reason, "done": done, "total": total}

    def publish() -> None:
        envelope = event_envelope(execution_id="", event="document_updated", seq=None, data=data)
        events_publish([], owner_id=owner_id, owner_only=(envelope,))

    transaction.on_commit(publish)
