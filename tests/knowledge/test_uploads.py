"""Issue 45, ingestion of uploaded files (on SQLite and PostgreSQL: make test runs this file on each): a multipart
upload to /api/v1/collections/{id}/documents/ is stored and answered `queued` (202), and the django-q2 job
(knowledge.tasks, called here as the worker calls it) reads, chunks and embeds it to `ready`, or `failed` with the
parser's or the budget's reason, the collection's other documents untouched. The upload's own body limit is the
one stack's per-route exception: larger than CHATTER_MAX_REQUEST_BYTES, never past the upload limit (413)."""
import codecs
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from rest_framework.test import APIClient

from gateway.models import KeyLimits
from knowledge.models import Chunk, CollectionDocument
from knowledge.tasks import document_ingest_task
from tests.factories import ApiTokenFactory, BudgetFactory
from tests.knowledge.files import docx_bytes, pdf_bytes
from tests.knowledge.test_collections_api import TEXT, api_for, collection_made
from workflows.models import LLMCall

pytestmark = pytest.mark.django_db

LINES = ["Kettle repairs", "A cracked seal lets water out of the appliance.", "Replace the seal (part 7)."]


@pytest.fixture(autouse=True)
def commits(django_capture_on_commit_callbacks):
    """What a request hands over on commit (the job's enqueueing) is kept in `enqueued`, not run: the tests call
    the task as the worker would."""
    global _commits
    _commits = django_capture_on_commit_callbacks
    enqueued.clear()
    yield


def upload(api, collection, name, data, content_type, **fields):
    with _commits() as callbacks:
        answer = api.post(f"/api/v1/collections/{collection['id']}/documents/",
                    {"file": SimpleUploadedFile(name, data, content_type=content_type), **fields}, format="multipart")
    enqueued.extend(callbacks)
    return answer


_commits = None
enqueued = []


def test_upload_pdf_is_queued_then_the_job_reads_chunks_and_embeds_it(alice):
    api = api_for(alice)
    collection = collection_made(api, chunk_size=20, chunk_overlap=0)

    answer = upload(api, collection, "manual.pdf", pdf_bytes(LINES), "application/pdf", title="Kettle manual",
                    metadata=json.dumps({"lang": "en"}))

    assert answer.status_code == 202, answer.json()
    document = answer.json()
    assert (document["status"], document["chunk_count"], document["title"]) == ("queued", 0, "Kettle manual")
    assert len(enqueued) == 1 and not LLMCall.objects.exists()

    enqueued[0]()  # async_task, run inline by the tests' django-q2 (CHATTER_Q_SYNC)
    assert document_ingest_task(document["id"]) == "ready"  # a second delivery changes nothing

    stored = CollectionDocument.objects.get(pk=document["id"])
    assert stored.text.splitlines() == LINES and stored.file_data is None and stored.metadata == {"lang": "en"}
    assert stored.chunk_count == Chunk.objects.filter(document=stored).count() > 0
    assert "cracked seal" in " ".join(Chunk.objects.filter(document=stored).values_list("text", flat=True))
    assert LLMCall.objects.filter(execution__owner=alice, kind="embedding").count() >= 1
    shown = api.get(f"/api/v1/collections/{collection['id']}/documents/{document['id']}/").json()
    assert (shown["status"], shown["chunk_count"]) == ("ready", stored.chunk_count)


def test_upload_docx_and_html_become_ready_and_readding_identical_content_is_a_noop(alice):
    api = api_for(alice)
    collection = collection_made(api)
    docx = docx_bytes("Kettle repairs", LINES[1:])
    made = upload(api, collection, "notes.docx", docx, "application/octet-stream").json()
    page = upload(api, collection, "page.html", b"<h1>Descaling</h1><p>Limescale clogs the element.</p>",
                  "text/html").json()
    for document in (made, page):
        assert document_ingest_task(document["id"]) == "ready"
    tasks = len(enqueued)

    again = upload(api, collection, "copy.docx", docx, "application/octet-stream")

    assert (again.status_code, again.json()["id"], again.json()["status"]) == (200, made["id"], "ready")
    assert len(enqueued) == tasks and CollectionDocument.objects.count() == 2
    assert CollectionDocument.objects.get(pk=made["id"]).text.startswith("# Kettle repairs")
    assert "# Descaling" in CollectionDocument.objects.get(pk=page["id"]).text


@pytest.mark.parametrize("data, reason", [
    (pdf_bytes(LINES, user_password="s3cret"), "file_unreadable: the PDF is encrypted: it needs a password to be read"),
    (pdf_bytes(LINES)[:200], "file_unreadable: the PDF cannot be read: "),
], ids=["encrypted", "corrupt"])  # (an encrypted PDF's bytes differ in each process: make test's workers must agree)
def test_upload_encrypted_or_corrupt_pdf_fails_with_reason_and_the_others_are_untouched(alice, data, reason):
    api = api_for(alice)
    collection = collection_made(api)
    kept = api.post(f"/api/v1/collections/{collection['id']}/documents/", {"title": "kept", "text": TEXT},
                    format="json").json()
    kept_chunks = list(Chunk.objects.filter(document_id=kept["id"]).values_list("id", "text"))

    document = upload(api, collection, "manual.pdf", data, "application/pdf").json()

    assert document_ingest_task(document["id"]) == "failed"
    shown = api.get(f"/api/v1/collections/{collection['id']}/documents/{document['id']}/").json()
    assert shown["status"] == "failed" and shown["error"].startswith(reason) and len(shown["error"]) > len(reason) - 2
    assert not Chunk.objects.filter(document_id=document["id"]).exists()
    assert list(Chunk.objects.filter(document_id=kept["id"]).values_list("id", "text")) == kept_chunks
    assert CollectionDocument.objects.get(pk=kept["id"]).status == "ready"


def test_upload_of_a_blank_text_file_fails_saying_so_without_a_word_of_pdfs(alice):
    api = api_for(alice)
    collection = collection_made(api)

    document = upload(api, collection, "notes.txt", b" \n\n \t ", "text/plain").json()

    assert document_ingest_task(document["id"]) == "failed"
    shown = api.get(f"/api/v1/collections/{collection['id']}/documents/{document['id']}/").json()
    assert (shown["status"], shown["error"]) == ("failed", "file_unreadable: notes.txt has no text to read")


def test_upload_of_a_text_file_of_only_invisible_characters_fails_as_blank_embedding_nothing(alice):
    """The rule JSON text is held to (a 400, `blank`): zero-width spaces, a byte-order mark inside, a word joiner."""
    api = api_for(alice)
    collection = collection_made(api)
    invisible = "\u200b\u200b\ufeff\u200b\u2060\u200d"

    document = upload(api, collection, "z.txt", invisible.encode(), "text/plain").json()

    assert document_ingest_task(document["id"]) == "failed"
    shown = api.get(f"/api/v1/collections/{collection['id']}/documents/{document['id']}/").json()
    assert (shown["status"], shown["chunk_count"], shown["error"]) == (
        "failed", 0, "file_unreadable: z.txt has no text to read")
    assert not Chunk.objects.exists() and not LLMCall.objects.exists()


def test_item_04_the_ingestion_job_embeds_as_the_key_that_uploaded_its_limits_holding(alice):
    """A key that may not call the collection's model cannot get its embeddings made by uploading a file instead of
    sending text: the job's calls are the key's (its limits, its budgets, its spend), as the request's would be."""
    keys = {"open": ApiTokenFactory(user=alice, scopes=["knowledge"]),
            "chat only": ApiTokenFactory(user=alice, scopes=["knowledge"])}
    KeyLimits.objects.create(api_key=keys["chat only"], allowed_models=["gpt-4o-mini"])
    apis = {name: APIClient() for name in keys}
    for name, api in apis.items():
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {keys[name].key}")
    collection = collection_made(apis["open"])

    added = upload(apis["open"], collection, "a.txt", b"Kettles boil water.", "text/plain").json()
    enqueued[-1]()  # the job, inline (CHATTER_Q_SYNC), as the worker runs it
    refused = upload(apis["chat only"], collection, "b.txt", b"Descale the kettle monthly.", "text/plain").json()
    enqueued[-1]()

    assert CollectionDocument.objects.get(pk=added["id"]).status == "ready"
    (call,) = LLMCall.objects.filter(kind="embedding").select_related("execution")
    assert call.execution.api_key == keys["open"]  # the key's spend, under its budgets
    stored = CollectionDocument.objects.get(pk=refused["id"])
    assert (stored.status, stored.chunk_count) == ("failed", 0)
    assert stored.error.startswith("model_not_allowed: This key may not call the model `local-embed-1`"), stored.error
    as_text = apis["chat only"].post(f"/api/v1/collections/{collection['id']}/documents/",
                                     {"title": "c", "text": "Descale the kettle weekly."}, format="json").json()
    assert as_text["status"] == "failed" and as_text["error"].startswith("model_not_allowed")  # as the job decided


def test_upload_unsupported_type_is_415_and_stores_nothing(alice):
    api = api_for(alice)
    collection = collection_made(api)

    answer = upload(api, collection, "photo.png", b"\x89PNG....", "image/png")

    assert answer.status_code == 415 and answer.json()["error"]["code"] == "unsupported_media_type"
    assert not CollectionDocument.objects.exists() and not enqueued


@override_settings(CHATTER_MAX_REQUEST_BYTES=2048, DATA_UPLOAD_MAX_MEMORY_SIZE=2048,
                   CHATTER_KNOWLEDGE_MAX_UPLOAD_BYTES=8192)
def test_upload_past_the_request_limit_is_taken_and_oversize_is_413_in_the_error_shape(alice):
    api = api_for(alice)
    collection = collection_made(api)
    documents = f"/api/v1/collections/{collection['id']}/documents/"

    taken = upload(api, collection, "long.txt", b"kettle " * 1000, "text/plain")  # 7,000 bytes: over 2,048
    oversize = upload(api, collection, "big.txt", b"x" * 8193, "text/plain")  # the file over its limit
    far_over = upload(api, collection, "huge.txt", b"x" * 20_000, "text/plain")  # the body over the route's
    json_body = api.post(documents, {"title": "t", "text": "x" * 4096}, format="json")  # JSON keeps its limit
    elsewhere = api.post("/api/v1/collections/", {"name": "x", "file": SimpleUploadedFile("a.txt", b"x" * 4096)},
                         format="multipart")  # a route that takes no files

    assert taken.status_code == 202, taken.json()
    assert oversize.status_code == 413 and oversize.json()["error"]["details"] == [
        {"path": "file", "code": "max_bytes", "message": "8192"}]
    assert far_over.status_code == 413 and far_over.json()["error"]["details"] == [
        {"path": "", "code": "max_bytes", "message": str(8192 + 2048)}]
    assert json_body.status_code == 413 and json_body.json()["error"]["details"][0]["message"] == "2048"
    assert elsewhere.status_code == 415
    assert list(CollectionDocument.objects.values_list("file_name", flat=True)) == ["long.txt"]


def test_upload_bad_metadata_or_no_file_is_400_and_stores_nothing(alice):
    api = api_for(alice)
    collection = collection_made(api)

    not_json = upload(api, collection, "a.txt", b"kettle", "text/plain", metadata="{lang: en}")
    not_object = upload(api, collection, "a.txt", b"kettle", "text/plain", metadata="[1, 2]")
    no_file = api.post(f"/api/v1/collections/{collection['id']}/documents/", {"title": "t"}, format="multipart")

    assert [a.status_code for a in (not_json, not_object, no_file)] == [400, 400, 400]
    assert not_json.json()["error"]["details"][0]["path"] == "metadata"
    assert no_file.json()["error"]["details"][0]["path"] == "file"
    assert not CollectionDocument.objects.exists()


def test_upload_of_two_files_in_one_request_is_400_naming_file_and_stores_nothing(alice):
    api = api_for(alice)
    collection = collection_made(api)
    files = [SimpleUploadedFile(name, text, content_type="text/plain")
             for name, text in (("first.txt", b"the first file"), ("second.txt", b"the second file"))]

    with _commits() as callbacks:
        answer = api.post(f"/api/v1/collections/{collection['id']}/documents/", {"file": files},
                          format="multipart")

    assert answer.status_code == 400, answer.json()
    (detail,) = answer.json()["error"]["details"]
    assert (detail["path"], detail["code"]) == ("file", "repeated")
    assert not CollectionDocument.objects.exists() and not callbacks


def test_upload_by_a_user_over_budget_fails_with_budget_reason(alice):
    api = api_for(alice)
    collection = collection_made(api)
    BudgetFactory(owner=alice, period="month", limit_usd="0.00000001", mode="hard")
    api.post(f"/api/v1/collections/{collection['id']}/documents/", {"title": "a", "text": "spend it " * 50},
             format="json")
    document = upload(api, collection, "manual.pdf", pdf_bytes(LINES), "application/pdf").json()

    assert document_ingest_task(document["id"]) == "failed"

    stored = CollectionDocument.objects.get(pk=document["id"])
    assert stored.error.startswith("budget_exceeded") and stored.chunk_count == 0
    assert not Chunk.objects.filter(document=stored).exists()


def test_upload_to_another_users_collection_is_404(alice, bob):
    collection = collection_made(api_for(alice))
    answer = upload(api_for(bob), collection, "a.txt", b"kettle", "text/plain")
    assert answer.status_code == 404 and not CollectionDocument.objects.exists()


def test_it_reads_a_text_file_in_the_charset_its_upload_declared(alice):
    api = api_for(alice)
    collection = collection_made(api, chunk_size=20, chunk_overlap=0)
    latin = upload(api, collection, "latin1.txt", "Café crème brûlée recipe.".encode("latin-1"),
                   "text/plain; charset=latin-1")
    wide = upload(api, collection, "utf16.txt", "UTF-16 text about the spout.".encode("utf-16"),
                  "text/plain; charset=utf-16")
    assert (latin.status_code, wide.status_code) == (202, 202), (latin.json(), wide.json())

    for job in enqueued:
        job()

    read = {document.file_name: document for document in CollectionDocument.objects.all()}
    assert (read["latin1.txt"].status, read["latin1.txt"].text) == ("ready", "Café crème brûlée recipe.")
    assert (read["utf16.txt"].status, read["utf16.txt"].text) == ("ready", "UTF-16 text about the spout.")


def test_a_byte_order_mark_names_a_text_files_encoding_when_its_upload_declared_none(alice):
    api = api_for(alice)
    collection = collection_made(api, chunk_size=20, chunk_overlap=0)
    files = {"excel.csv": ("name,size\nkettle,1.7 l\n".encode("utf-16"), "text/csv"),  # a BOM, little-endian here
             "notes.txt": ("Spout café notes.".encode("utf-16-be"), "text/plain"),
             "wide.md": (codecs.BOM_UTF32_BE + "# Lid\nA hinge.".encode("utf-32-be"), "text/markdown")}
    files["notes.txt"] = (codecs.BOM_UTF16_BE + files["notes.txt"][0], "text/plain")
    for name, (data, content_type) in files.items():
        assert upload(api, collection, name, data, content_type).status_code == 202

    for job in enqueued:
        job()

    read = {document.file_name: document for document in CollectionDocument.objects.all()}
    assert {name: (document.status, document.error) for name, document in read.items()} == {
        name: ("ready", "") for name in files}
    assert "| kettle | 1.7 l |" in read["excel.csv"].text
    assert (read["notes.txt"].text, read["wide.md"].text) == ("Spout café notes.", "# Lid\nA hinge.")


@pytest.mark.parametrize("charset", ["no-such-charset", "utf\x00-8"], ids=["unknown", "with_a_nul"])
def test_it_refuses_an_upload_whose_charset_is_unknown_and_stores_nothing(alice, charset):
    """A charset with a NUL in it was a 500: Python's codecs.lookup raises ValueError for it, not LookupError."""
    api = api_for(alice)
    collection = collection_made(api)

    answer = upload(api, collection, "odd.txt", b"some text", f"text/plain; charset={charset}")

    assert answer.status_code == 400 and answer.json()["error"]["details"][0]["path"] == "file"
    assert not CollectionDocument.objects.exists() and not enqueued
