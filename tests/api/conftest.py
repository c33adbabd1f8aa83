import pytest
from django.core.cache import cache

from conversations.models import Conversation, Message
from workflows.models import WorkflowExecution


@pytest.fixture(autouse=True)
def fresh_throttles():
    cache.clear()  # throttle counters live in the cache, keyed by user id (ids repeat across tests)


def row_counts() -> tuple[int, int, int]:
    return Conversation.objects.count(), Message.objects.count(), WorkflowExecution.objects.count()


def assert_error(response, status: int, code: str) -> dict:
    """The one error shape; returns its details."""
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body["error"]["details"]
