"""Each user's default collection: the documents of /api/v1/documents/ (conversations' Document), searched by meaning
like any collection's. A Document is mirrored there as a `queued` collection document when it is made (its vectors
built by the ingestion job, knowledge.tasks, as the API key that made the Document would: its limits and budgets
hold) and goes with it when it is deleted (a cascade). Documents of the same text share one mirror: when the one it
mirrors is deleted, it mirrors another of them (the oldest), and goes with the last. The Documents that
existed before are mirrored by the migration 0006_default_collections_of_documents, which only writes rows (it
calls no model): after every `migrate`, queued documents are handed to the workers (apps.py).

The default collection is named DEFAULT_COLLECTION_NAME; it is made with the settings' embedding model and chunking
(the migration: all-MiniLM-L6-v2, 384 dimensions, 200 tokens overlapping by 40, the defaults it shipped with).
"""
from __future__ import annotations

import hashlib

from django.db import transaction

from knowledge.models import Collection, CollectionDocument

DEFAULT_COLLECTION_NAME = "Documents"


def default_collection(owner) -> Collection:
    """`owner`'s default collection, made now if they have none."""
    from knowledge.services import collection_create  # (a collection is made one way)

    found = Collection.objects.filter(owner=owner, name=DEFAULT_COLLECTION_NAME).first()
    return found or collection_create(owner=owner, name=DEFAULT_COLLECTION_NAME,
                                      description="your documents from /api/v1/documents/")


def document_mirror(document, *, api_key=None) -> CollectionDocument | None:
    """A Document of /api/v1/documents/ in its owner's default collection, queued for ingestion as `api_key` would
    embed it (None when that collection already holds the same text; a failed one, or one whose ingestion died, is
    queued again)."""
    from knowledge.services import document_enqueue, document_tried_again

    collection = default_collection(document.owner)
    with transaction.atomic():
        mirrored, created = CollectionDocument.objects.get_or_create(
            collection=collection, content_hash=hashlib.sha256(document.content.encode()).hexdigest(),
            defaults={"title": document.title, "text": document.content, "metadata": document.metadata,
                      "source_document": document})
        if not created:
            if document_tried_again(mirrored):
                document_enqueue(mirrored, api_key=api_key)
            return None
        document_enqueue(mirrored, api_key=api_key)
    return mirrored


def document_mirror_hand_over(document) -> None:
    """Before a Document is deleted: its mirror, if it has one, mirrors another Document of its owner with the same
    text (the oldest; its title and metadata too) and outlives it. Without one it goes with the Document."""
    from conversations.models import Document

    mirrored = CollectionDocument.objects.filter(source_document=document).first()
    twin = (Document.objects.filter(owner_id=document.owner_id, content=document.content,
                                    collection_document__isnull=True)  # one mirror a Document
            .exclude(pk=document.pk).order_by("created_at", "pk").first()) if mirrored is not None else None
    if twin is not None:
        CollectionDocument.objects.filter(pk=mirrored.pk).update(source_document=twin, title=twin.title,
                                                                 metadata=twin.metadata)


def queued_documents_enqueue() -> int:
    """Hand every queued collection document to the workers (those a migration made; a second delivery of one
    already handed over changes nothing). How many."""
    from knowledge.services import document_enqueue

    queued = list(CollectionDocument.objects.filter(status=CollectionDocument.Status.QUEUED).only("pk"))
    for document in queued:
        document_enqueue(document)
    return len(queued)
