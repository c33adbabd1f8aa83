"""A document's way to chunks: cut, embedded, written whole or not at all.

`document_ingest(document)` is the one entry point, for a document added as JSON text (run inline by the API) and
for a queued job (a file parsed to text first): it takes a `queued` (or `failed`) document to `ready` with its
chunks, or to `failed` with the reason and no chunk. The embedding calls are the collection owner's, counted and
held to budgets as every LLM call (gateway.embeddings).
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import transaction
from langchain_text_splitters import RecursiveCharacterTextSplitter

from core.errors import ChatterError
from gateway.embeddings import embeddings_create
from knowledge.models import Chunk, Collection, CollectionDocument
from knowledge.services import chunks_create
from workflows.engine.embeddings_minilm import MINILM_MODEL, minilm_token_count
from workflows.engine.usage import estimate_tokens

logger = logging.getLogger(__name__)
Status = CollectionDocument.Status


def token_counter(embedding_model: str) -> Callable[[str], int]:
    """How a collection's chunks are measured: in all-MiniLM-L6-v2's word pieces for it, else by the offline
    estimate every provider's prompt is (about four characters a token)."""
    return minilm_token_count if embedding_model == f"local/{MINILM_MODEL}" else estimate_tokens


def text_split(text: str, collection: Collection) -> list[str]:
    """`text` in chunks of at most the collection's chunk_size tokens, overlapping by chunk_overlap: cut at
    paragraphs, then lines, sentences and words (langchain-text-splitters' recursive splitter)."""
    splitter = RecursiveCharacterTextSplitter(
        chunk_size=collection.chunk_size, chunk_overlap=collection.chunk_overlap,
        length_function=token_counter(collection.embedding_model),
        separators=["\n\n", "\n", ". ", "? ", "! ", " ", ""], keep_separator="end")
    return [chunk.strip() for chunk in splitter.split_text(text) if chunk.strip()]


def _claimed(document: CollectionDocument) -> bool:
    """Mark the document `processing` if it was waiting (queued, or failed and tried again): one caller wins."""
    return CollectionDocument.objects.filter(pk=document.pk, status__in=(Status.QUEUED, Status.FAILED)).update(
        status=Status.PROCESSING, error="") == 1


def _failed(document: CollectionDocument, reason: str) -> None:
    CollectionDocument.objects.filter(pk=document.pk).update(status=Status.FAILED, error=reason[:2000],
                                                             chunk_count=0)


def document_ingest(document: CollectionDocument, *, api_key=None) -> CollectionDocument:
    """Cut `document`'s text into chunks, embed them (batched; each request an LLM call of the collection's owner,
    with `api_key`'s limits when a key asked), and write the chunks with their vectors and the document `ready`
    in one transaction. Any failure (the provider, a budget, a limit) leaves it `failed` with the reason and
    without chunks; nothing is raised. A document that is not waiting (already processing or ready) is left as it
    is. Returns the document as stored."""
    if not _claimed(document):
        return CollectionDocument.objects.get(pk=document.pk)
    collection = document.collection
    try:
        texts = text_split(document.text, collection)
        vectors = embeddings_create(owner=collection.owner, model=collection.embedding_model, texts=texts,
                                    api_key=api_key, purpose={"document": str(document.pk),
                                                              "collection": str(collection.pk)}).vectors
        if any(len(vector) != collection.dimensions for vector in vectors):
            raise ChatterError(f"the model answered vectors of {len(vectors[0])} dimensions, "
                               f"the collection's are {collection.dimensions}")
        with transaction.atomic():
            Chunk.objects.filter(document=document).delete()
            chunks_create(texts=texts, embeddings=vectors, document=document)
            CollectionDocument.objects.filter(pk=document.pk).update(status=Status.READY, chunk_count=len(texts))
    except ChatterError as failure:
        _failed(document, f"{failure.code}: {failure.message}")
    except Exception as failure:  # noqa: BLE001 - whatever broke, the document says so rather than stay processing
        logger.exception("document %s could not be ingested", document.pk)
        _failed(document, f"internal_error: {type(failure).__name__}")
    return CollectionDocument.objects.get(pk=document.pk)
