"""Bodies the API refuses before any view logic: too large (413), too deeply nested, not UTF-8, not JSON."""
import json

import pytest
from django.test import override_settings

from conversations.models import Document
from tests.api.conftest import assert_error, row_counts

pytestmark = pytest.mark.django_db


@override_settings(CHATTER_MAX_REQUEST_BYTES=2048, DATA_UPLOAD_MAX_MEMORY_SIZE=2048)
def test_an_oversized_body_is_a_413_and_writes_nothing(api):
    body = json.dumps({"title": "t", "content": "x" * 4096})
    details = assert_error(api.post("/api/v1/documents/", body, content_type="application/json"), 413,
                           "payload_too_large")
    assert details == [{"path": "", "code": "max_bytes", "message": "2048"}]
    assert not Document.objects.exists()


@override_settings(CHATTER_MAX_REQUEST_BYTES=2048, DATA_UPLOAD_MAX_MEMORY_SIZE=2048)
def test_a_body_within_the_limit_is_accepted(api):
    body = json.dumps({"title": "t", "content": "x" * 1500})
    assert api.post("/api/v1/documents/", body, content_type="application/json").status_code == 201


def test_deeply_nested_json_is_a_400_and_no_row(api):
    before = row_counts()
    nested = "[" * 5000 + "]" * 5000
    body = '{"message": "hi", "metadata": ' + nested + "}"
    assert_error(api.post("/api/v1/chat/", body, content_type="application/json"), 400, "parse_error")
    moderately = '{"message": "hi", "config": ' + '{"a": ' * 40 + "1" + "}" * 40 + "}"
    assert_error(api.post("/api/v1/executions/", moderately, content_type="application/json"), 400, "parse_error")
    assert row_counts() == before


def test_invalid_utf8_is_a_400(api):
    body = b'{"title": "t", "content": "caf\xe9"}'
    assert_error(api.post("/api/v1/documents/", body, content_type="application/json"), 400, "parse_error")
    assert not Document.objects.exists()


def test_nan_and_infinity_are_not_json(api):
    body = '{"message": "hi", "temperature": NaN}'
    assert_error(api.post("/api/v1/chat/", body, content_type="application/json"), 400, "parse_error")


def test_a_form_body_is_415_on_json_endpoints(api):
    assert_error(api.post("/api/v1/documents/", {"title": "t", "content": "c"}, format="multipart"), 415,
                 "unsupported_media_type")


def test_a_json_object_naming_a_key_twice_is_a_400_and_no_row(api):
    before = row_counts()
    body = '{"message": "first", "message": "second"}'
    response = api.post("/api/v1/chat/", body, content_type="application/json")
    assert_error(response, 400, "parse_error")
    assert "duplicate key 'message'" in response.json()["error"]["message"]
    nested = '{"message": "hi", "config": {"temperature": 0.1, "temperature": 0.9}}'
    assert_error(api.post("/api/v1/chat/", nested, content_type="application/json"), 400, "parse_error")
    assert row_counts() == before


@pytest.mark.parametrize("path", ["/api/v1/health/", "/api/v1/conversations/", "/api/v1/executions/"])
def test_more_query_parameters_than_django_reads_is_a_400_in_the_error_shape(api, path, settings):
    query = "&".join(f"p{i}=1" for i in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1))
    response = api.get(f"{path}?{query}")
    assert_error(response, 400, "parse_error")
    assert "too many" in response.json()["error"]["message"].lower()
