"""A document's way to chunks: cut, embedded, written whole or not at all (docs/knowledge.md#ingestion).

`document_ingest(document)` is the one entry point, for a document added as JSON text (run inline by the API) and
for a queued job (knowledge.tasks: an uploaded file is read to text first): it takes a `queued` (or `failed`)
document to `ready` with its chunks, or to `failed` with the reason and no chunk. The embedding calls are the
collection owner's LLM calls (gateway.embeddings); progress is a `document_updated` event on the owner's feed.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from langchain_text_splitters import RecursiveCharacterTextSplitter

from core.errors import ChatterError, PayloadTooLarge
from engine.embeddings_minilm import MINILM_MODEL, minilm_token_count
from engine.usage import estimate_tokens
from gateway.embeddings import embeddings_create
from knowledge.models import Chunk, Collection, CollectionDocument
from knowledge.parsers import text_blank, text_from_file
from knowledge.services import chunks_create, document_enqueue, ingestion_lapsed, owners_key
from workflows.events import event_envelope, events_publish

logger = logging.getLogger(__name__)
Status = CollectionDocument.Status


def token_counter(embedding_model: str) -> Callable[[str], int]:
    """How a collection's chunks are measured: in all-MiniLM-L6-v2's word pieces for it, else by the offline
    estimate every provider's prompt is (about four characters a token)."""
    return minilm_token_count if embedding_model == f"local/{MINILM_MODEL}" else estimate_tokens


def text_split(text: str, collection: Collection, *, embedding_model: str | None = None) -> list[str]:
    """`text` in chunks of at most the collection's chunk_size tokens (of `embedding_model`, the collection's by
    default), overlapping by chunk_overlap: cut at paragraphs, then lines, sentences and words
    (langchain-text-splitters' recursive splitter)."""
    splitter = RecursiveCharacterTextSplitter(
        chunk_size=collection.chunk_size, chunk_overlap=collection.chunk_overlap,
        length_function=token_counter(embedding_model or collection.embedding_model),
        separators=["\n\n", "\n", ". ", "? ", "! ", " ", ""], keep_separator="end")
    return [chunk.strip() for chunk in splitter.split_text(text) if not text_blank(chunk)]  # something to search


def _claimed(document: CollectionDocument) -> datetime | None:
    """Mark the document `processing` if it was waiting (queued, or failed and tried again) or its ingestion died with
    its process (knowledge.services.ingestion_lapsed: a job delivered again takes it up): one caller wins. The claim
    is the time it was made, kept in `updated_at`, which only this ingestion writes while it holds it; None when
    another holds it."""
    now = timezone.now()
    waiting = Q(status__in=(Status.QUEUED, Status.FAILED)) | ingestion_lapsed()
    if CollectionDocument.objects.filter(waiting, pk=document.pk).update(status=Status.PROCESSING, error="",
                                                                         updated_at=now):
        return now
    return None


def _held(document: CollectionDocument, claim: datetime):
    """The document while this ingestion's claim holds (not deleted, nor taken up again by another)."""
    return CollectionDocument.objects.filter(pk=document.pk, status=Status.PROCESSING, updated_at=claim)


def _failed(document: CollectionDocument, claim: datetime, reason: str) -> None:
    _held(document, claim).update(status=Status.FAILED, error=reason[:2000], chunk_count=0)


def document_progress(document: CollectionDocument, *, status: str, done: int = 0, total: int = 0,
                      error: str = "") -> None:
    """`document_updated` on the collection owner's feed, once the caller's transaction (if any) commits."""
    envelope = event_envelope(execution_id="", event="document_updated", seq=None, data={
        "document_id": str(document.pk), "collection_id": str(document.collection_id), "title": document.title,
        "status": status,
        "chunks_done": done, "chunks_total": total, "error": error})
    owner_id = document.collection.owner_id
    transaction.on_commit(lambda: events_publish([], owner_id=owner_id, owner_only=(envelope,)))


def texts_embedded(*, owner, model: str, dimensions: int, texts: list[str], purpose: dict,
                   document: CollectionDocument, api_key=None, claim: datetime | None = None,
                   on_batch: Callable[[int], None] | None = None) -> list[list[float]] | None:
    """`document`'s `texts`' vectors by `model`, CHATTER_EMBEDDING_BATCH_SIZE at a time (each batch a run with one
    LLM call of `owner`'s, with `api_key` when it is theirs: knowledge.services.owners_key), `on_batch(done)` after
    each; a ChatterError when a batch fails (a budget, the provider) or
    the model answers vectors of another size than `dimensions`. None once the document is deleted (with its
    collection, or alone), or, for an ingestion's `claim`, taken up by another: before each batch it is looked for,
    so a deleted document costs at most the batch that was under way."""
    vectors: list[list[float]] = []
    size = settings.CHATTER_EMBEDDING_BATCH_SIZE
    for start in range(0, len(texts), size):
        there = CollectionDocument.objects.filter(pk=document.pk) if claim is None else _held(document, claim)
        if not there.exists():
            return None
        batch = embeddings_create(owner=owner, model=model, texts=texts[start:start + size],
                                  api_key=owners_key(owner=owner, api_key=api_key), purpose=purpose).vectors
        wrong = next((vector for vector in batch if len(vector) != dimensions), None)
        if wrong is not None:
            raise ChatterError(f"the model answered a vector of {len(wrong)} dimensions, "
                               f"the collection's are {dimensions}")
        vectors += batch
        if on_batch is not None:
            on_batch(len(vectors))
    return vectors


def _file_read(document: CollectionDocument) -> str:
    """An uploaded file's text (the parser's error when it cannot be read), kept as the document's text; the file
    itself is let go."""
    text = text_from_file(document.file_name, document.content_type, bytes(document.file_data))
    if len(text) > settings.CHATTER_KNOWLEDGE_MAX_TEXT_CHARS:
        raise PayloadTooLarge(f"the file's text is more than {settings.CHATTER_KNOWLEDGE_MAX_TEXT_CHARS} "
                              "characters", code="document_too_large")
    CollectionDocument.objects.filter(pk=document.pk).update(text=text, file_data=None)
    return text


def _stored(document: CollectionDocument) -> CollectionDocument | None:
    """The document as stored; None when it was deleted meanwhile."""
    return CollectionDocument.objects.filter(pk=document.pk).first()


def _queued_again(document: CollectionDocument, claim: datetime, api_key) -> CollectionDocument | None:
    if _held(document, claim).update(status=Status.QUEUED, chunk_count=0):
        document_enqueue(document, api_key=api_key)
    return _stored(document)


def document_ingest(document: CollectionDocument, *, api_key=None) -> CollectionDocument | None:
    """Read an uploaded file's text, cut `document`'s text into chunks, embed them (batched; each request an LLM
    call of the collection's owner, with `api_key`'s limits when a key of the owner's asked), and write the chunks with their
    vectors and the document `ready` in one transaction. Any failure (the parser, the provider, a budget, a limit)
    leaves it `failed` with the reason and without chunks; nothing is raised. A document that is not waiting
    (already processing or ready) is left as it is. Progress is published (the module's docstring). Returns the
    document as stored, or None when it was deleted meanwhile (with its collection, or while it was embedded):
    nothing of it is written then, no batch is embedded after the one under way as it was deleted, and the
    embeddings already made stay counted (each batch a run of its own)."""
    claim = _claimed(document)
    if claim is None:
        return _stored(document)
    document = CollectionDocument.objects.select_related("collection").filter(pk=document.pk).first()
    if document is None:
        return None
    collection = document.collection
    texts: list[str] = []
    try:
        document_progress(document, status=Status.PROCESSING)
        text = _file_read(document) if document.file_data is not None else document.text
        texts = text_split(text, collection)
        vectors = texts_embedded(
            owner=collection.owner, model=collection.embedding_model, dimensions=collection.dimensions, texts=texts,
            document=document, api_key=api_key, claim=claim,
            purpose={"document": str(document.pk), "collection": str(collection.pk)},
            on_batch=lambda done: document_progress(document, status=Status.PROCESSING, done=done,
                                                    total=len(texts)))
        if vectors is None:  # deleted (or taken up again) while it was embedded: its next batches are not
            return _stored(document)
        with transaction.atomic():
            if not Collection.objects.select_for_update().filter(
                    pk=collection.pk, embedding_model=collection.embedding_model).exists():
                # the collection changed model meanwhile (knowledge.reembed)
                return _queued_again(document, claim, api_key)
            # Locked: a delete now waits for this transaction (and takes the chunks with it); one before it won, as
            # did another ingestion that took it up.
            if not _held(document, claim).select_for_update().exists():
                return _stored(document)
            Chunk.objects.filter(document=document).delete()
            chunks_create(texts=texts, embeddings=vectors, document=document)
            _held(document, claim).update(status=Status.READY, chunk_count=len(texts))
            document_progress(document, status=Status.READY, done=len(texts), total=len(texts))
    except ChatterError as failure:
        _failed(document, claim, f"{failure.code}: {failure.message}")
        document_progress(document, status=Status.FAILED, total=len(texts), error=f"{failure.code}: {failure.message}")
    except Exception as failure:  # noqa: BLE001 - whatever broke, the document says so rather than stay processing
        if _stored(document) is None:  # deleted as it was written (a constraint, a lock): nothing to say
            return None
        logger.exception("document %s could not be ingested", document.pk)
        _failed(document, claim, f"internal_error: {type(failure).__name__}")
        document_progress(document, status=Status.FAILED, total=len(texts),
                          error=f"internal_error: {type(failure).__name__}")
    return _stored(document)
