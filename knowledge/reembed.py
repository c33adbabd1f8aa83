"""A collection's change of embedding model, as a job (knowledge.tasks): every ready document cut again and embedded
with the new model into `staged` chunks, swapped in by one transaction once all are there; a failed request drops
the staged chunks and keeps the old model (`reembed_error`). Progress is `collection_updated` on the owner's feed.
The design: docs/knowledge.md#ingestion.
"""
from __future__ import annotations

import logging

from django.db import transaction

from core.errors import ChatterError
from knowledge.ingest import text_split, texts_embedded
from knowledge.models import Chunk, Collection, CollectionDocument
from knowledge.services import chunks_create, document_enqueue
from workflows.events import event_envelope, events_publish

logger = logging.getLogger(__name__)
Status = CollectionDocument.Status


def collection_progress(collection: Collection, *, status: str, done: int = 0, total: int = 0,
                        error: str = "") -> None:
    """`collection_updated` on the owner's feed, once the caller's transaction (if any) commits."""
    envelope = event_envelope(execution_id="", event="collection_updated", seq=None, data={
        "collection_id": str(collection.pk), "status": status, "embedding_model": collection.embedding_model,
        "pending_embedding_model": collection.pending_embedding_model, "chunks_done": done, "chunks_total": total,
        "error": error})
    owner_id = collection.owner_id
    transaction.on_commit(lambda: events_publish([], owner_id=owner_id, owner_only=(envelope,)))


def _staged(collection: Collection):
    return Chunk.objects.filter(document__collection=collection, collection__isnull=True)


def reembed_stage(collection: Collection, *, api_key=None) -> dict:
    """Embed every ready document of `collection` with its pending model into staged chunks (what a failed or
    dead try left staged goes first). Returns {document id: chunk count} of the documents staged: one deleted
    meanwhile is not (the batches embedded before it was stay counted; none after). Raises the ChatterError that
    stopped it."""
    model, dimensions = collection.pending_embedding_model, collection.pending_dimensions
    _staged(collection).delete()
    documents = list(collection.documents.filter(status=Status.READY).order_by("created_at", "id"))
    plans = [(document, text_split(document.text, collection, embedding_model=model)) for document in documents]
    total, done, counts = sum(len(texts) for _, texts in plans), 0, {}
    collection_progress(collection, status="reembedding", total=total)
    for document, texts in plans:
        vectors = texts_embedded(  # None for one deleted meanwhile: it costs nothing more
            owner=collection.owner, model=model, dimensions=dimensions, texts=texts, document=document,
            api_key=api_key, purpose={"document": str(document.pk), "collection": str(collection.pk), "reembed": model},
            on_batch=lambda count, before=done: collection_progress(collection, status="reembedding",
                                                                    done=before + count, total=total))
        if vectors is not None and _stage_written(document, texts, vectors):
            counts[document.pk] = len(texts)
        done += len(texts)
    return counts


@transaction.atomic
def _stage_written(document: CollectionDocument, texts: list[str], vectors: list[list[float]]) -> bool:
    """Write a document's staged chunks; False (nothing written) when it was deleted meanwhile. Locked: a delete of
    it now waits, and takes the staged chunks with it; one before it won."""
    if not CollectionDocument.objects.select_for_update().filter(pk=document.pk).exists():
        return False
    chunks_create(texts=texts, embeddings=vectors, document=document, staged=True)
    return True


@transaction.atomic
def reembed_swap(collection: Collection, counts: dict) -> Collection | None:
    """Put the staged chunks in place of the old ones and the pending model in place of the old, in one
    transaction; documents that have no staged chunks (added meanwhile) are queued again. None (and nothing
    changed) when the change was called off meanwhile."""
    locked = Collection.objects.select_for_update().filter(
        pk=collection.pk, pending_embedding_model=collection.pending_embedding_model).first()
    if locked is None:
        return None
    Chunk.objects.filter(collection=locked).delete()
    _staged(locked).update(collection=locked)
    for document_id, count in counts.items():
        CollectionDocument.objects.filter(pk=document_id).update(chunk_count=count)
    again = list(locked.documents.filter(status=Status.READY).exclude(pk__in=list(counts)))
    CollectionDocument.objects.filter(pk__in=[d.pk for d in again]).update(status=Status.QUEUED, chunk_count=0)
    for document in again:
        document_enqueue(document)
    locked.embedding_model, locked.dimensions = locked.pending_embedding_model, locked.pending_dimensions
    locked.pending_embedding_model, locked.pending_dimensions, locked.reembed_error = "", None, ""
    locked.save(update_fields=["embedding_model", "dimensions", "pending_embedding_model", "pending_dimensions",
                               "reembed_error", "updated_at"])
    total = sum(counts.values())
    collection_progress(locked, status="ready", done=total, total=total)
    return locked


def collection_reembed(collection_id, *, api_key=None) -> Collection | None:
    """The job: stage, then swap (the module's docstring); the embeddings are `api_key`'s calls when a key asked. A
    collection with no change pending (done already, or deleted) is left as it is; None when it is gone (deleted
    before or while it ran). Never raises: a failure is the collection's `reembed_error`."""
    collection = Collection.objects.select_related("owner").filter(pk=collection_id).first()
    if collection is None or not collection.pending_embedding_model:
        return collection
    try:
        staged = reembed_stage(collection, api_key=api_key)
        return reembed_swap(collection, staged) or _stored(collection)
    except Exception as failure:  # noqa: BLE001 - whatever broke, the collection says so rather than stay pending
        if not isinstance(failure, ChatterError):
            logger.exception("collection %s could not be re-embedded", collection.pk)
        reason = (f"{failure.code}: {failure.message}" if isinstance(failure, ChatterError)
                  else f"internal_error: {type(failure).__name__}")
        _staged(collection).delete()
        Collection.objects.filter(pk=collection.pk).update(pending_embedding_model="", pending_dimensions=None,
                                                           reembed_error=reason[:2000])
        collection_progress(collection, status="failed", error=reason)
        return _stored(collection)


def _stored(collection: Collection) -> Collection | None:
    """The collection as stored; None when it was deleted meanwhile."""
    return Collection.objects.filter(pk=collection.pk).first()
