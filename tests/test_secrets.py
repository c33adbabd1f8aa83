"""Secrets (the provider API key, SECRET_KEY, passwords, API tokens) never appear in responses, logs, events or
audit rows — also when the provider echoes the key back in an error (docs/operations/audit.md#secrets)."""
import json
import logging

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings as django_settings
from django.core import serializers
from rest_framework.test import APIClient

from audit.models import AuditEvent
from conversations.models import Conversation, Message
from keys.models import ApiToken
from tests.factories import ApiTokenFactory
from workflows.models import (
    ExecutionEvent,
    LLMCall,
    NodeExecution,
    ToolCall,
    WorkflowExecution,
)

pytestmark = pytest.mark.django_db(transaction=True)
API_KEY = "sk-test-SECRET-9f8e7d6c5b4a39281706"
OPENAI = {"provider": "openai", "model": "gpt-4o-mini"}
USAGE = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}


@pytest.fixture
def provider(openai_stub, settings):
    settings.OPENAI_BASE_URL = openai_stub.base_url
    settings.OPENAI_API_KEY = API_KEY
    return openai_stub


def body_text(response) -> str:
    if not response.streaming:
        return response.content.decode()

    async def collect():
        return b"".join([chunk async for chunk in response.streaming_content])

    return async_to_sync(collect)().decode()


def stored_rows() -> str:
    rows = []
    for model in (WorkflowExecution, NodeExecution, ToolCall, LLMCall, ExecutionEvent, Message, Conversation,
                  AuditEvent, ApiToken):
        rows.append(serializers.serialize("json", model.objects.all()))
    return "\n".join(rows)


def test_no_secret_leaks_from_a_full_run_and_a_failing_one(provider, alice, staff, caplog):
    caplog.set_level(logging.DEBUG)
    token = ApiTokenFactory(user=alice).key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    staff_client = APIClient()
    staff_client.force_login(staff)
    secrets = [API_KEY, django_settings.SECRET_KEY, token, "alice-password"]

    issued = client.post("/api/v1/auth/token/", {"username": "alice", "password": "alice-password"}, format="json")
    assert set(issued.json()) == {"token"}  # handing out a new token, once, is that endpoint's job, and nothing more
    secrets.append(issued.json()["token"])
    responses = []
    provider.reply(tool_calls=[{"name": "calculator", "arguments": {"expression": "12*7"}}], usage=USAGE)
    provider.reply(content="84.", usage=USAGE)
    ok = client.post("/api/v1/chat/", {"message": "What is 12*7?", **OPENAI}, format="json")
    assert ok.status_code == 201, ok.content
    provider.reply(status=401, error_body={"error": {
        "message": f"Incorrect API key provided: {API_KEY}. Authorization: Bearer {API_KEY}",
        "type": "invalid_request_error", "code": "invalid_api_key"}})
    failed = client.post("/api/v1/chat/", {"message": "again", **OPENAI,
                                           "conversation_id": ok.json()["conversation"]["id"]}, format="json")
    assert failed.status_code == 201 and failed.json()["execution"]["status"] == "failed"
    provider.reply(content="streamed", usage=USAGE)
    streamed = client.post("/api/v1/chat/", {"message": "stream it", "stream": True, **OPENAI}, format="json")
    responses += [ok, failed, streamed]
    for execution_id in (ok.json()["execution"]["id"], failed.json()["execution"]["id"]):
        responses += [client.get(f"/api/v1/executions/{execution_id}/"),
                      client.get(f"/api/v1/executions/{execution_id}/events/")]
    responses += [client.get(f"/api/v1/conversations/{ok.json()['conversation']['id']}/messages/"),
                  staff_client.get("/api/v1/audit/events/", {"page_size": 100}),
                  client.get("/api/v1/health/"), client.get("/metrics")]

    bodies = "\n".join(body_text(r) for r in responses)
    assert "Incorrect API key provided" in bodies  # the provider's error reaches the user, minus the key
    everything = {"responses": bodies, "logs": caplog.text, "rows": stored_rows()}
    for where, text in everything.items():
        for secret in secrets:
            assert secret not in text, f"a secret leaked into {where}"
    assert json.dumps(provider.requests[0].headers).count(API_KEY) == 1  # the key did reach the provider
