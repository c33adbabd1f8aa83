"""Collections and their documents: made, changed and removed here (chunks and their vectors through
knowledge.ingest)."""
from __future__ import annotations

import codecs
import hashlib
import logging
import math
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django_q.tasks import async_task

from core.errors import Conflict, Forbidden, InvalidInput, NotFound, PayloadTooLarge
from core.schedules import schedule_keep
from engine.embedding_models import embeddings_refusal
from engine.embeddings_local import LOCAL_EMBEDDING_DIMENSIONS
from engine.embeddings_minilm import MINILM_DIMENSIONS, MINILM_MODEL
from gateway.embeddings import embeddings_create
from gateway.services import gateway_model
from knowledge.models import Chunk, Collection, CollectionDocument
from knowledge.parsers import file_type, text_blank, upload_size_check

logger = logging.getLogger(__name__)
SWEEP_SCHEDULE_NAME = "chatter-knowledge-lapsed-ingestions"
# Vectors' sizes of the models that run here; any other model's is asked of it once, as the collection is made.
KNOWN_DIMENSIONS = {("local", MINILM_MODEL): MINILM_DIMENSIONS, ("local", "local-embed-1"): LOCAL_EMBEDDING_DIMENSIONS}
# all-MiniLM-L6-v2 reads at most 256 word pieces, [CLS] and [SEP] included: a longer chunk would be cut.
MAX_CHUNK_TOKENS = {("local", MINILM_MODEL): 254}


@transaction.atomic
def chunks_create(*, texts: list[str], embeddings: list[list[float]],
                  document: CollectionDocument | None = None, staged: bool = False) -> list[Chunk]:
    """Chunks of `texts` with their `embeddings` (of `document`, in its collection, at positions from 0), in one
    statement. `staged` ones are the document's but in no collection yet (no search finds them): a re-embedding's,
    until it swaps them in."""
    if len(texts) != len(embeddings):
        raise ValueError(f"{len(texts)} texts and {len(embeddings)} embeddings")
    collection_id = document.collection_id if document is not None and not staged else None
    return Chunk.objects.bulk_create(
        [Chunk(text=text, dimensions=len(embedding), embedding=embedding, document=document,
               collection_id=collection_id, position=position)
         for position, (text, embedding) in enumerate(zip(texts, embeddings))])


def collection_editable_check(*, collection: Collection, actor) -> None:
    """Only its owner changes a collection or its documents; staff may also change a shared one. Whoever may see
    a shared collection may search it, not change it (403)."""
    if collection.owner_id != actor.pk and not (actor.is_staff and collection.shared):
        raise Forbidden("only the collection's owner (or staff, for a shared collection) may change it")


def _shared_check(*, shared: bool, actor) -> None:
    if shared and not actor.is_staff:
        raise InvalidInput("only staff may share a collection", details=[
            {"path": "shared", "code": "staff_only", "message": "only staff may share a collection"}])


def _model_resolved(asked: str) -> tuple[str, str]:
    """(provider, model) of an embedding model as a collection names it; a 400 on `embedding_model` when it
    cannot be called or has no embeddings API (a chat model: engine.embedding_models)."""
    try:
        provider, model, _ = gateway_model(asked)
    except NotFound as unknown:
        raise InvalidInput(unknown.message, details=[
            {"path": "embedding_model", "code": "unknown_model", "message": f"{asked} cannot be called"}]) from None
    if (refusal := embeddings_refusal(provider, model)) is not None:
        raise InvalidInput(f"embedding_model {asked!r} cannot embed: {refusal}", details=[
            {"path": "embedding_model", "code": "no_embeddings", "message": refusal}])
    return provider, model


def _chunk_limit(provider: str, model: str) -> int:
    return MAX_CHUNK_TOKENS.get((provider, model), settings.CHATTER_KNOWLEDGE_MAX_CHUNK_TOKENS)


def owners_key(*, owner, api_key):
    """The API key a run of `owner`'s embeddings carries: the key the request came with when it is `owner`'s, else
    none. A collection's embeddings are its owner's runs (their budgets, their spend); staff changing a shared
    collection they do not own would otherwise book the owner's spend on their own key (its budgets, usage by key)."""
    return api_key if api_key is not None and api_key.user_id == owner.pk else None


def _dimensions(*, provider: str, model: str, owner, api_key, probe: str) -> int:
    """The size of the model's vectors: known here, or asked of it once (an embedding call of `owner`'s, counted as
    every one)."""
    dimensions = KNOWN_DIMENSIONS.get((provider, model))
    if dimensions is None:
        dimensions = len(embeddings_create(owner=owner, model=f"{provider}/{model}", texts=[probe],
                                           api_key=owners_key(owner=owner, api_key=api_key),
                                           purpose={"collection_probe": probe}).vectors[0])
    return dimensions


def _name_free_check(*, owner, name: str, other_than: Collection | None = None) -> None:
    """409 when `owner` has another collection named `name` (the unique constraint still settles a race)."""
    taken = Collection.objects.filter(owner=owner, name=name)
    if other_than is not None:
        taken = taken.exclude(pk=other_than.pk)
    if taken.exists():
        raise Conflict(f"you have a collection named {name!r}")


def collection_create(*, owner, name: str, embedding_model: str | None = None, chunk_size: int | None = None,
                      chunk_overlap: int | None = None, description: str = "", shared: bool = False,
                      api_key=None) -> Collection:
    """A new collection. Its embedding model (`provider/model` or a model name the gateway knows; by default
    CHATTER_KNOWLEDGE_EMBEDDING_MODEL), the vectors' size and the chunking are fixed from now on (a change of
    model re-embeds: collection_update). A model whose size is not known here is asked once (an embedding call,
    counted as every one is)."""
    _shared_check(shared=shared, actor=owner)
    provider, model = _model_resolved(embedding_model or settings.CHATTER_KNOWLEDGE_EMBEDDING_MODEL)
    limit = _chunk_limit(provider, model)
    chunk_size = chunk_size or min(settings.CHATTER_KNOWLEDGE_CHUNK_SIZE, limit)
    overlap_sent = chunk_overlap is not None
    chunk_overlap = chunk_overlap if overlap_sent else settings.CHATTER_KNOWLEDGE_CHUNK_OVERLAP
    if not 1 <= chunk_size <= limit:
        raise InvalidInput(f"chunk_size must be from 1 to {limit} tokens for {provider}/{model}", details=[
            {"path": "chunk_size", "code": "out_of_range", "message": f"at most {limit}"}])
    if not overlap_sent and chunk_overlap >= chunk_size:  # the user sent a size, not the overlap it is below
        raise InvalidInput(f"chunk_size must be more than the default chunk_overlap ({chunk_overlap}): send a "
                           f"chunk_overlap below {chunk_size} too, or a larger chunk_size", details=[
                               {"path": "chunk_size", "code": "below_default_overlap",
                                "message": f"more than {chunk_overlap}, or send chunk_overlap"}])
    if not 0 <= chunk_overlap < chunk_size:
        raise InvalidInput("chunk_overlap must be 0 or more and less than chunk_size", details=[
            {"path": "chunk_overlap", "code": "out_of_range", "message": "less than chunk_size"}])
    _name_free_check(owner=owner, name=name)  # before the probe: a refused request spends nothing
    dimensions = _dimensions(provider=provider, model=model, owner=owner, api_key=api_key, probe=name)
    try:
        with transaction.atomic():
            return Collection.objects.create(
                owner=owner, name=name, description=description, shared=shared,
                embedding_model=f"{provider}/{model}", dimensions=dimensions, chunk_size=chunk_size,
                chunk_overlap=chunk_overlap)
    except IntegrityError:
        raise Conflict(f"you have a collection named {name!r}") from None


def collection_update(*, collection: Collection, actor, changes: dict, api_key=None) -> Collection:
    """Rename, describe or (staff) share a collection, or change its embedding model: that re-embeds every document
    as a job (knowledge.reembed; the model is `pending_embedding_model` until its chunks are all in place, and
    searches use the old ones until then). Its chunking stays as it was made. The changes apply to the collection
    as it is now (collection_locked): of changes of model made at once, one starts a re-embedding, the others are
    a 409 (each size probe they made stays counted)."""
    collection_editable_check(collection=collection, actor=actor)
    changes = dict(changes)
    if "shared" in changes:
        _shared_check(shared=changes["shared"], actor=actor)
    if "name" in changes:
        _name_free_check(owner=collection.owner, name=changes["name"], other_than=collection)
    asked = changes.pop("embedding_model", None)
    if asked is not None:
        _reembed_plan(collection=collection, asked=asked, actor=actor, api_key=api_key, changes=changes)
    try:
        with transaction.atomic():
            collection = collection_locked(collection)
            if changes.get("pending_embedding_model"):
                _reembedding_check(collection)
                if changes["pending_embedding_model"] == collection.embedding_model:  # a change made meanwhile
                    for name in ("pending_embedding_model", "pending_dimensions", "reembed_error"):
                        changes.pop(name)
            for name, value in changes.items():
                setattr(collection, name, value)
            collection.save(update_fields=[*changes, "updated_at"])
            if changes.get("pending_embedding_model"):
                transaction.on_commit(lambda: collection_reembed_enqueue(collection, api_key=api_key))
    except IntegrityError:
        raise Conflict(f"you have a collection named {changes.get('name')!r}") from None
    return collection


def collection_locked(collection: Collection) -> Collection:
    """The collection's row as it is now, locked until the caller's transaction ends; NotFound when it was deleted
    (a change or a delete of one deleted meanwhile is a 404, never a write to a row that is gone)."""
    locked = Collection.objects.select_related("owner").select_for_update(of=("self",)).filter(
        pk=collection.pk).first()
    if locked is None:
        raise NotFound("collection not found")
    return locked


def _reembedding_check(collection: Collection) -> None:
    if collection.pending_embedding_model:
        raise Conflict(f"the collection is being re-embedded with {collection.pending_embedding_model}; wait for it "
                       "to end", code="reembedding")


def _reembed_plan(*, collection: Collection, asked: str, actor, api_key, changes: dict) -> None:
    """Add to `changes` what starts a change of `collection`'s embedding model to `asked` (nothing when it is the
    model it has): 409 while another change is under way, 400 when the model cannot be called or reads less than
    the collection's chunk size."""
    provider, model = _model_resolved(asked)
    _reembedding_check(collection)
    if f"{provider}/{model}" == collection.embedding_model:
        return
    limit = _chunk_limit(provider, model)
    if collection.chunk_size > limit:
        raise InvalidInput(f"{provider}/{model} reads at most {limit} tokens, less than the collection's chunk size "
                           f"({collection.chunk_size})", details=[
                               {"path": "embedding_model", "code": "chunk_size_too_large",
                                "message": f"at most {limit}"}])
    changes.update(pending_embedding_model=f"{provider}/{model}", reembed_error="",
                   pending_dimensions=_dimensions(provider=provider, model=model, owner=collection.owner,
                                                  api_key=api_key, probe=collection.name))


def collection_reembed_enqueue(collection: Collection, *, api_key=None) -> None:
    """Hand a collection's change of model to the django-q2 workers, with the API key that asked for it (its limits
    and budgets hold in the job as in the request); one the queue refuses is ended at once."""
    try:
        async_task("knowledge.tasks.collection_reembed_task", str(collection.pk), _key_id(api_key),
                   task_name=f"reembed-{collection.pk}", group="knowledge")
    except Exception as exc:  # noqa: BLE001 - whatever the broker raised, the change must not stay pending
        logger.exception("collection %s could not be queued for re-embedding", collection.pk)
        Collection.objects.filter(pk=collection.pk).update(pending_embedding_model="", pending_dimensions=None,
                                                           reembed_error=f"queue_unavailable: {type(exc).__name__}")


def collection_delete(*, collection: Collection, actor) -> None:
    """A collection with its documents, chunks and vectors; NotFound when it was deleted meanwhile."""
    collection_editable_check(collection=collection, actor=actor)
    with transaction.atomic():
        collection_locked(collection).delete()


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def document_add(*, collection: Collection, actor, title: str, text: str,
                 metadata: dict | None = None) -> tuple[CollectionDocument, bool]:
    """A document of `text`, `queued` for knowledge.ingest.document_ingest; and whether it is new. Identical text
    already in the collection is that document (a failed one is queued again). Text with nothing to search is a
    400, text over CHATTER_KNOWLEDGE_MAX_TEXT_CHARS a 413; either way nothing is written. One whose ingestion died
    with its process is queued again too (ingestion_lapsed)."""
    collection_editable_check(collection=collection, actor=actor)
    if text_blank(text):
        raise InvalidInput("a document needs some text", details=[
            {"path": "text", "code": "blank", "message": "the text is empty"}])
    if len(text) > settings.CHATTER_KNOWLEDGE_MAX_TEXT_CHARS:
        raise PayloadTooLarge(f"a document's text may be at most {settings.CHATTER_KNOWLEDGE_MAX_TEXT_CHARS} "
                              "characters", code="document_too_large")
    digest = content_hash(text)
    with transaction.atomic():
        document, created = CollectionDocument.objects.get_or_create(
            collection=collection, content_hash=digest,
            defaults={"title": title, "text": text, "metadata": metadata or {}})
        if not created:
            document_tried_again(document)
    return document, created


def ingestion_lapsed() -> Q:
    """The `processing` documents whose ingestion died with its process: claimed (knowledge.ingest.document_ingest sets
    `updated_at` as it claims one) longer ago than a job may run, as django-q2 stops a job at Q_CLUSTER's timeout (a
    worker killed, a job past it: django-q2 then delivers it again once `retry` has passed). They may be taken up
    again: by that delivery, or by adding the same text or file again."""
    return Q(status=CollectionDocument.Status.PROCESSING,
             updated_at__lt=timezone.now() - timedelta(seconds=settings.Q_CLUSTER["timeout"]))


def documents_lapsed_requeue() -> int:
    """Each document added as JSON text whose ingestion died with the request that ran it (its process killed:
    ingestion_lapsed) queued again and handed to the workers, as no job of its own would be delivered again; embedded
    as its collection's owner (which API key added it is not kept). Uploads and the mirrors of /api/v1/documents/
    have a job of their own, which django-q2 delivers again with its key. How many. (Every CHATTER_SWEEP_INTERVAL_S:
    knowledge_sweep_ensure.)"""
    requeued = 0
    lapsed = CollectionDocument.objects.filter(ingestion_lapsed(), file_name="", source_document__isnull=True)
    for document in lapsed.only("pk"):
        with transaction.atomic():  # taken as a request adding its text again takes it: one of them wins
            if CollectionDocument.objects.filter(ingestion_lapsed(), pk=document.pk).update(
                    status=CollectionDocument.Status.QUEUED, error="", chunk_count=0):
                document_enqueue(document)
                requeued += 1
    if requeued:
        logger.warning("%d document(s) whose ingestion died with its request queued again", requeued)
    return requeued


def knowledge_sweep_ensure() -> None:
    """The django-q2 schedule of documents_lapsed_requeue, every CHATTER_SWEEP_INTERVAL_S as the runs' recovery sweep
    (whole minutes: django-q2's granularity), kept by name."""
    from django_q.models import Schedule

    schedule_keep(SWEEP_SCHEDULE_NAME, func="knowledge.tasks.documents_lapsed_requeue_task",
                  schedule_type=Schedule.MINUTES, minutes=max(1, math.ceil(settings.CHATTER_SWEEP_INTERVAL_S / 60)),
                  repeats=-1)


def document_tried_again(document: CollectionDocument) -> bool:
    """A document added again as it is (the same text or file): queued again when it failed or its ingestion died
    (ingestion_lapsed); whether it was."""
    again = Q(status=CollectionDocument.Status.FAILED) | ingestion_lapsed()
    if not CollectionDocument.objects.filter(again, pk=document.pk).update(status=CollectionDocument.Status.QUEUED,
                                                                           error="", chunk_count=0):
        return False
    document.status, document.error, document.chunk_count = CollectionDocument.Status.QUEUED, "", 0
    return True


def document_upload(*, collection: Collection, actor, upload, title: str | None = None,
                    metadata: dict | None = None, api_key=None) -> tuple[CollectionDocument, bool]:
    """A document of an uploaded file (Django's UploadedFile), stored as it came and `queued` for the ingestion job
    (knowledge.tasks), which reads, cuts and embeds it as `api_key` would (its limits and budgets hold in the job as
    in a request that adds text); and whether it is new. A file over
    CHATTER_KNOWLEDGE_MAX_UPLOAD_BYTES is a 413 and one of a type no parser reads a 415, before it is stored. The
    same bytes again are the document already there (a failed one, or one whose ingestion died, is queued again)."""
    collection_editable_check(collection=collection, actor=actor)
    upload_size_check(upload.size)
    content_type = _declared_type(upload)
    file_type(upload.name, content_type)
    data = b"".join(upload.chunks())
    upload_size_check(len(data))
    with transaction.atomic():
        document, created = CollectionDocument.objects.get_or_create(
            collection=collection, content_hash=hashlib.sha256(data).hexdigest(),
            defaults={"title": title or upload.name[:255] or "upload", "metadata": metadata or {},
                      "file_name": (upload.name or "")[:255], "file_data": data,
                      "content_type": content_type[:255]})
        if not created:
            document_tried_again(document)
        if document.status == CollectionDocument.Status.QUEUED:
            document_enqueue(document, api_key=api_key)
    return document, created


def _declared_type(upload) -> str:
    """The upload's media type with the charset it declared (Django keeps the charset apart, in `upload.charset`):
    a text file is read in it. A charset Python does not know is a 400, before anything is stored."""
    media_type, charset = upload.content_type or "", upload.charset
    if isinstance(charset, bytes):  # as Django's multipart parser hands a header's parameters
        charset = charset.decode("ascii", "replace")
    if not charset:
        return media_type
    try:
        codecs.lookup(charset)
    except (LookupError, ValueError):  # ValueError: a name Python cannot look up at all (a NUL in it)
        raise InvalidInput(f"unknown charset {charset!r}", details=[
            {"path": "file", "code": "unknown_charset", "message": f"{charset} is not a known charset"}]) from None
    return f"{media_type}; charset={charset}"


def _key_id(api_key) -> int | None:
    return api_key.pk if api_key is not None else None


def document_enqueue(document: CollectionDocument, *, api_key=None) -> None:
    """Hand a queued document to the django-q2 workers once the caller's transaction commits, with the API key that
    added it (the job embeds as that key would: knowledge.tasks). A document the queue refuses is `failed` at once
    (queue_unavailable), not left waiting for a worker that never comes."""
    def enqueue() -> None:
        try:
            async_task("knowledge.tasks.document_ingest_task", str(document.pk), _key_id(api_key),
                       task_name=f"document-{document.pk}", group="knowledge")
        except Exception as exc:  # noqa: BLE001 - whatever the broker raised, the document must not stay queued
            logger.exception("document %s could not be queued", document.pk)
            CollectionDocument.objects.filter(pk=document.pk, status=CollectionDocument.Status.QUEUED).update(
                status=CollectionDocument.Status.FAILED, error=f"queue_unavailable: {type(exc).__name__}")

    transaction.on_commit(enqueue)


def document_delete(*, document: CollectionDocument, actor) -> None:
    """A document with its chunks and their vectors (the keyword index follows: knowledge's migrations)."""
    collection_editable_check(collection=document.collection, actor=actor)
    document.delete()
