import re

import pytest
from django.core.cache import cache

from conversations.models import Conversation, Message
from workflows.models import WorkflowExecution


@pytest.fixture(autouse=True)
def fresh_throttles():
    cache.clear()  # throttle counters live in the cache, keyed by user id (ids repeat across tests)


def row_counts() -> tuple[int, int, int]:
    return Conversation.objects.count(), Message.objects.count(), WorkflowExecution.objects.count()


def error_fields(details: list[dict]) -> set[str]:
    """The top-level input fields an error's details name ("" for the request as a whole)."""
    return {re.split(r"[.\[]", item["path"])[0] for item in details}


def assert_error(response, status: int, code: str) -> list[dict]:
    """The one error shape; returns its details: always a list of {path, code, message}."""
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    details = body["error"]["details"]
    assert isinstance(details, list), details
    for item in details:
        assert set(item) == {"path", "code", "message"}, item
        assert all(isinstance(value, str) for value in item.values()), item
        assert item["code"] and item["message"], item
    return details
