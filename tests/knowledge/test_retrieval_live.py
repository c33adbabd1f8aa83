"""Issue 45, "In workflows": a run's retrieval shown on the live page (headless Chromium against a real daphne
server): the run picked from the list is replayed, and its retrieval node's line says how many chunks it found and
how long it took, each chunk's title, position and score on hover. And "Ingestion": a document being added shows its
progress on the same page (the ingestion job's `document_updated` events on the owner's feed)."""
import httpx
import pytest

from tests.browser import needs_chromium
from tests.factories import ApiTokenFactory
from tests.knowledge.test_retrieval_node import collection_with_documents, turn
from tests.test_live_page import live_server_url, logged_in_page  # noqa: F401 - the fixture

__all__ = ["live_server_url"]
pytest_plugins = ["tests.fixtures_browser"]


@needs_chromium
@pytest.mark.one_database  # the page shows a recorded event; the search on each database is test_retrieval_node's
@pytest.mark.django_db(transaction=True)
def test_item_in_workflows_the_live_page_shows_a_retrieval_and_item_03_ingestion(
        live_server_url, alice, new_page):  # noqa: F811
    manuals = collection_with_documents(alice, "manuals")
    key = ApiTokenFactory(user=alice, scopes=["knowledge"]).key
    execution = turn(alice, "kettle seal", collections=["manuals"], k=2)
    assert execution.status == "completed", execution.error_message

    with logged_in_page(new_page, live_server_url) as (page, errors):
        page.locator(f'[data-testid=run-item][data-execution-id="{execution.pk}"]').click()
        shown = page.locator('[data-testid=node][data-node-id=search] [data-testid=retrieval]')
        shown.wait_for(timeout=30_000)
        text, hover = shown.inner_text(), shown.get_attribute("title")

        # item 3: a document added while the page is open shows its progress there, to `ready`.
        page.locator("[data-testid=ingestion][data-feed=open]").wait_for(state="attached", timeout=30_000)
        added = httpx.post(f"{live_server_url}/api/v1/collections/{manuals.pk}/documents/", timeout=30,
                           headers={"Authorization": f"Token {key}"},
                           json={"title": "Lid", "text": "The kettle lid hinge snapped and the lid no longer closes."})
        assert added.status_code == 201, added.text
        ingested = page.locator(f'[data-testid=ingestion-item][data-document-id="{added.json()["id"]}"]'
                                '[data-status=ready]')
        ingested.wait_for(timeout=30_000)
        ingestion_line = ingested.inner_text()

    assert text.startswith("retrieval: 2 chunks ") and text.endswith(" ms"), text
    assert hover.splitlines()[0].startswith("Seal #0 (") and len(hover.splitlines()) == 2, hover
    assert ingestion_line == "Lid: ready · 1/1 chunks", ingestion_line
    assert errors == []
