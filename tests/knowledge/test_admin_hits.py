"""Issue 45, the admin's hit testing: a collection's page searches it as retrieval would (what Dify calls hit
testing), showing the ranked chunks with their scores; its documents are listed with status and chunk counts."""
import pytest
from django.urls import reverse

from knowledge.ingest import document_ingest
from knowledge.services import collection_create, document_add

pytestmark = pytest.mark.django_db


def test_item_04_a_collections_admin_page_shows_what_retrieval_would_return(client, staff, alice):
    collection = collection_create(owner=alice, name="manuals", embedding_model="local/local-embed-1")
    for title, text in (("Seal", "A cracked seal lets water out of the kettle."),
                        ("Gears", "Index the rear derailleur by turning the barrel adjuster.")):
        document_ingest(document_add(collection=collection, actor=alice, title=title, text=text)[0])
    client.force_login(staff)
    page = reverse("admin:knowledge_collection_change", args=[collection.pk])

    plain = client.get(page).content.decode()
    searched = client.get(page, {"q": "barrel adjuster", "mode": "keyword"}).content.decode()

    assert "Search (hit testing)" in plain and "<p>Seal</p>" in plain and "<p>Ready</p>" in plain
    hits = searched[searched.index('id="hit-testing"'):]
    assert "Gears" in hits and "barrel adjuster" in hits and "keyword" in hits and "Seal" not in hits
