"""Each user with Documents (/api/v1/documents/) gets a default collection, "Documents", holding each of them as a
queued collection document. Only rows are written here: their vectors are built by the ingestion job once the
workers take them (knowledge/apps.py hands queued documents over after every migrate)."""
import hashlib
import uuid

from django.db import migrations

NAME = "Documents"
# The defaults this shipped with: all-MiniLM-L6-v2 (run in-process), 200 tokens a chunk overlapping by 40.
MODEL, DIMENSIONS, CHUNK_SIZE, CHUNK_OVERLAP = "local/all-MiniLM-L6-v2", 384, 200, 40


def mirror(apps, schema_editor):
    Document = apps.get_model("conversations", "Document")
    Collection = apps.get_model("knowledge", "Collection")
    CollectionDocument = apps.get_model("knowledge", "CollectionDocument")
    collections = {}
    for document in Document.objects.order_by("created_at", "id").iterator():
        collection = collections.get(document.owner_id)
        if collection is None:
            collection = Collection.objects.filter(owner_id=document.owner_id, name=NAME).first() or \
                Collection.objects.create(id=uuid.uuid4(), owner_id=document.owner_id, name=NAME,
                                          description="your documents from /api/v1/documents/",
                                          embedding_model=MODEL, dimensions=DIMENSIONS, chunk_size=CHUNK_SIZE,
                                          chunk_overlap=CHUNK_OVERLAP)
            collections[document.owner_id] = collection
        digest = hashlib.sha256(document.content.encode()).hexdigest()
        if CollectionDocument.objects.filter(collection=collection, content_hash=digest).exists():
            continue
        CollectionDocument.objects.create(id=uuid.uuid4(), collection=collection, title=document.title,
                                          text=document.content, content_hash=digest, metadata=document.metadata,
                                          status="queued", source_document_id=document.id)


def unmirror(apps, schema_editor):
    apps.get_model("knowledge", "CollectionDocument").objects.filter(source_document__isnull=False).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("knowledge", "0005_uploads_and_reembedding"),
    ]

    operations = [migrations.RunPython(mirror, unmirror)]
