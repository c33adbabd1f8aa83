"""POST /api/v1/chat/ (sync and streamed), and the conversation endpoints it feeds."""
import time
import uuid
from decimal import Decimal

import httpx
import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from conversations.models import Conversation, Message
from tests.api.conftest import assert_error, error_fields, row_counts
from tests.api.sse import SSEParser, parse_sse
from tests.factories import ApiTokenFactory, WorkflowExecutionFactory
from tests.invariants import assert_all
from workflows.models import WorkflowExecution

URL = "/api/v1/chat/"
EXECUTION_FIELDS = {
    "id", "workflow_type", "template", "definition", "definition_version", "conversation", "schedule", "status",
    "mode", "provider", "model", "config", "input_data", "output_data", "error_type", "error_message",
    "created_at", "started_at", "completed_at", "execution_time_ms", "prompt_tokens", "completion_tokens",
    "total_tokens", "cost", "llm_calls", "tool_calls", "correlation_id", "trace_id", "cancel_requested", "forked_from",
    "forked_from_checkpoint", "prompt_version",
}
CONVERSATION_FIELDS = {
    "id", "title", "status", "created_at", "updated_at", "last_message_at", "message_count",
    "prompt_tokens", "completion_tokens", "total_tokens", "total_cost", "metadata",
}
MESSAGE_FIELDS = {
    "id", "conversation", "sequence", "role", "content", "execution", "prompt_tokens", "completion_tokens",
    "total_tokens", "cached_prompt_tokens", "reasoning_tokens", "cost", "provider_used", "model_used",
    "finish_reason", "response_time_ms", "usage_estimated", "usage_raw", "tool_calls", "error_message",
    "metadata", "created_at",
}
TOKENS = ("prompt_tokens", "completion_tokens", "total_tokens")


# --- sync -----------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_sync_turn_answers_201_with_execution_conversation_and_both_messages(api, alice):
    response = api.post(URL, {"message": "What is 12*7?"})

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"execution", "conversation", "messages"}
    execution = WorkflowExecution.objects.get(pk=body["execution"]["id"])
    assert set(body["execution"]) == EXECUTION_FIELDS
    assert body["execution"]["status"] == "completed"
    assert body["execution"]["workflow_type"] == "chat"
    assert body["execution"]["template"] == "universal_chat"
    assert body["execution"]["mode"] == "sync"
    assert (body["execution"]["llm_calls"], body["execution"]["tool_calls"]) == (2, 1)
    for field in TOKENS:
        assert body["execution"][field] == getattr(execution, field) > 0
    assert body["execution"]["cost"] == str(execution.cost) and Decimal(body["execution"]["cost"]) > 0

    conversation = Conversation.objects.get(owner=alice)
    assert set(body["conversation"]) == CONVERSATION_FIELDS
    assert body["conversation"]["id"] == str(conversation.pk) == body["execution"]["conversation"]
    assert body["conversation"]["message_count"] == 2
    assert body["conversation"]["total_cost"] == str(conversation.total_cost) == body["execution"]["cost"]
    for field in TOKENS:
        assert body["conversation"][field] == getattr(conversation, field) == getattr(execution, field)

    user, reply = body["messages"]
    assert set(user) == set(reply) == MESSAGE_FIELDS
    assert (user["sequence"], user["role"], user["content"]) == (1, "user", "What is 12*7?")
    assert (reply["sequence"], reply["role"]) == (2, "assistant")
    assert "84" in reply["content"]
    assert reply["content"] == body["execution"]["output_data"]["content"]
    for field in (*TOKENS, "cost"):
        assert reply[field] == body["execution"][field]
    assert (user["total_tokens"], user["cost"]) == (0, "0.00000000")
    assert_all(execution)


@pytest.mark.django_db
@pytest.mark.parametrize("conversation", ["new", "going on"])
def test_the_201s_conversation_is_the_conversation_as_a_read_gives_it(api, conversation):
    """The 201 renders the conversation from the terminal write, without reading it back: every field must be what
    GET /conversations/<id>/ says right after (title, status, times and metadata too, not only the totals)."""
    body = api.post(URL, {"message": "hello there"}).json()
    if conversation == "going on":
        conversation_id = body["conversation"]["id"]
        api.patch(f"/api/v1/conversations/{conversation_id}/", {"title": "Greetings", "metadata": {"k": "v"}},
                  format="json")
        body = api.post(URL, {"message": "and again", "conversation_id": conversation_id}).json()

    read = api.get(f"/api/v1/conversations/{body['conversation']['id']}/").json()

    assert body["conversation"] == {field: read[field] for field in CONVERSATION_FIELDS}
    assert body["conversation"]["title"] and body["conversation"]["created_at"] and body["conversation"]["updated_at"]
    assert body["conversation"]["last_message_at"] is not None


@pytest.mark.django_db
def test_a_turn_continues_a_conversation(api):
    first = api.post(URL, {"message": "hello"}).json()
    conversation_id = first["conversation"]["id"]

    second = api.post(URL, {"message": "and again", "conversation_id": conversation_id}).json()

    assert second["conversation"]["id"] == conversation_id
    assert [m["sequence"] for m in second["messages"]] == [3, 4]
    assert second["conversation"]["message_count"] == 4
    assert second["conversation"]["total_tokens"] == (
        first["execution"]["total_tokens"] + second["execution"]["total_tokens"])


@pytest.mark.django_db
def test_the_config_fields_become_the_run_config(api):
    response = api.post(URL, {
        "message": "What is 12*7?", "provider": "local", "model": "local-echo-1", "temperature": 0.3,
        "max_tokens": 500, "system_prompt": "Be brief.", "enable_memory": False, "memory_window": 3,
        "enable_tools": False, "allowed_tools": ["calculator"], "max_tool_calls": 2, "enable_retrieval": True,
    })

    assert response.status_code == 201
    execution = response.json()["execution"]
    assert execution["config"] | {
        "provider": "local", "model": "local-echo-1", "temperature": 0.3, "max_tokens": 500,
        "system_prompt": "Be brief.", "enable_memory": False, "memory_window": 3, "enable_tools": False,
        "allowed_tools": ["calculator"], "max_tool_calls": 2, "enable_retrieval": True,
    } == execution["config"]
    assert (execution["llm_calls"], execution["tool_calls"]) == (1, 0)  # tools off: no calculator call


@pytest.mark.django_db
@pytest.mark.parametrize("payload, fields", [
    ({}, {"message"}),
    ({"message": "   "}, {"message"}),
    ({"message": "x" * 100_001}, {"message"}),
    ({"message": "hi", "temperature": 3}, {"temperature"}),
    ({"message": "hi", "temperature": "hot"}, {"temperature"}),
    ({"message": "hi", "max_tokens": 0}, {"max_tokens"}),
    ({"message": "hi", "provider": "nope"}, {"provider"}),
    ({"message": "hi", "allowed_tools": ["rm_rf"]}, {"allowed_tools"}),
    ({"message": "hi", "allowed_tools": "calculator"}, {"allowed_tools"}),
    ({"message": "hi", "max_tool_calls": -1, "memory_window": 0}, {"max_tool_calls", "memory_window"}),
    ({"message": "hi", "enable_tools": "perhaps"}, {"enable_tools"}),
    ({"message": "hi", "conversation_id": "not-a-uuid"}, {"conversation_id"}),
    ({"message": "hi", "template": "universal_chat", "definition_id": str(uuid.uuid4())}, {"definition_id"}),
    ({"message": "hi", "stream": "maybe"}, {"stream"}),
    ({"message": "", "temperature": 9, "provider": "x"}, {"message", "temperature", "provider"}),
])
def test_bad_input_is_a_400_naming_the_fields_and_leaves_no_row(api, payload, fields):
    before = row_counts()
    response = api.post(URL, payload)
    assert error_fields(assert_error(response, 400, "validation_error")) == fields
    assert row_counts() == before


@pytest.mark.django_db
def test_an_unknown_model_is_a_400_before_any_row(api):
    before = row_counts()
    details = assert_error(api.post(URL, {"message": "hi", "model": "gpt-nonexistent"}), 400, "validation_error")
    assert details[0]["path"] == "config.model"
    assert row_counts() == before


@pytest.mark.django_db
def test_an_unknown_template_is_a_404_and_leaves_no_row(api):
    before = row_counts()
    assert_error(api.post(URL, {"message": "hi", "template": "no-such-template"}), 404, "not_found")
    assert row_counts() == before


@pytest.mark.django_db
def test_a_background_turn_is_202_pending_and_handed_to_a_worker_after_commit(
        api, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = api.post(URL, {"message": "What is 12*7?", "background": True}, format="json")
    assert response.status_code == 202
    assert (response.json()["status"], response.json()["mode"]) == ("pending", "background")
    assert response["Location"] == response.json()["links"]["self"] == f"/api/v1/executions/{response.json()['id']}/"
    execution = WorkflowExecution.objects.get()
    assert execution.messages.get().role == "user"  # the user message is saved before the run
    assert len(callbacks) == 1  # enqueued only once the execution is committed
    callbacks[0]()  # test settings run django-q2 tasks synchronously
    execution.refresh_from_db()
    assert execution.status == "completed" and execution.messages.count() == 2


@pytest.mark.django_db
def test_stream_and_background_together_are_a_400_and_no_row(api):
    before = row_counts()
    details = assert_error(api.post(URL, {"message": "hi", "background": True, "stream": True}, format="json"),
                           400, "validation_error")
    assert "background" in {d["path"] for d in details}
    assert row_counts() == before


@pytest.mark.django_db
def test_too_many_concurrent_runs_is_a_429(api, alice):
    WorkflowExecutionFactory(owner=alice, message="still pending")  # a chat turn, pending
    before = row_counts()
    with override_settings(CHATTER_MAX_CONCURRENT_RUNS=1):
        assert_error(api.post(URL, {"message": "hi"}), 429, "too_many_runs")
    assert row_counts() == before


@pytest.mark.django_db
def test_run_creation_is_throttled(api, run_rate):
    run_rate("2/min")
    assert api.post(URL, {"message": "one"}).status_code == 201
    assert api.post("/api/v1/executions/", {"template": "universal_chat"}).status_code == 201  # same scope
    before = row_counts()

    response = api.post(URL, {"message": "three"})

    details = assert_error(response, 429, "throttled")
    assert [d["code"] for d in details] == ["wait"]
    assert float(details[0]["message"]) > 0 and int(response["Retry-After"]) > 0
    assert row_counts() == before
    assert api.get("/api/v1/conversations/").status_code == 200  # reads are not throttled


@pytest.mark.django_db
def test_a_session_post_needs_the_csrf_token(alice):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)

    response = client.post(URL, {"message": "hi"})
    assert_error(response, 403, "permission_denied")
    assert "CSRF" in response.json()["error"]["message"]
    assert row_counts() == (0, 0, 0)

    client.cookies["csrftoken"] = "A" * 32
    assert client.post(URL, {"message": "hi"}, HTTP_X_CSRFTOKEN="A" * 32).status_code == 201


@pytest.mark.django_db
def test_bob_cannot_add_to_alices_conversation(api, bob_api):
    conversation_id = api.post(URL, {"message": "hello"}).json()["conversation"]["id"]
    before = row_counts()

    assert_error(bob_api.post(URL, {"message": "hi", "conversation_id": conversation_id}), 404, "not_found")
    assert row_counts() == before


# --- conversations --------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_the_conversation_list_is_the_owners_newest_first_and_paginated(api, bob_api):
    ids = [api.post(URL, {"message": f"turn {i}"}).json()["conversation"]["id"] for i in range(3)]
    bob_api.post(URL, {"message": "bob's"})

    page = api.get("/api/v1/conversations/?page_size=2").json()

    assert page["count"] == 3
    assert [c["id"] for c in page["results"]] == ids[::-1][:2]
    assert page["next"].endswith("page=2&page_size=2") and page["previous"] is None
    assert set(page["results"][0]) == CONVERSATION_FIELDS
    assert [c["id"] for c in api.get(page["next"]).json()["results"]] == ids[:1]
    assert ids[0] not in {c["id"] for c in bob_api.get("/api/v1/conversations/").json()["results"]}
    assert bob_api.get("/api/v1/conversations/").json()["count"] == 1


@pytest.mark.django_db
def test_a_conversation_shows_its_aggregates(api):
    first = api.post(URL, {"message": "What is 2+3?"}).json()
    api.post(URL, {"message": "thanks", "conversation_id": first["conversation"]["id"]})
    conversation = Conversation.objects.get(pk=first["conversation"]["id"])

    body = api.get(f"/api/v1/conversations/{conversation.pk}/").json()

    assert body["message_count"] == 4
    for field in TOKENS:
        assert body[field] == getattr(conversation, field) > 0
    assert body["total_cost"] == str(conversation.total_cost)
    assert body["title"] == "What is 2+3?"


@pytest.mark.django_db
def test_messages_carry_every_token_and_cost_field_in_order(api):
    conversation_id = api.post(URL, {"message": "What is 12*7?"}).json()["conversation"]["id"]

    page = api.get(f"/api/v1/conversations/{conversation_id}/messages/").json()

    assert page["count"] == 2
    user, reply = page["results"]
    assert set(reply) == MESSAGE_FIELDS
    assert (user["role"], reply["role"]) == ("user", "assistant")
    row = Message.objects.get(pk=reply["id"])
    for field in (*TOKENS, "cached_prompt_tokens", "reasoning_tokens", "response_time_ms", "usage_estimated",
                  "provider_used", "model_used", "finish_reason", "usage_raw", "tool_calls"):
        assert reply[field] == getattr(row, field), field
    assert reply["cost"] == str(row.cost)
    assert reply["total_tokens"] == reply["prompt_tokens"] + reply["completion_tokens"]


@pytest.mark.django_db
def test_bob_gets_404_for_alices_conversation(api, bob_api):
    conversation_id = api.post(URL, {"message": "hello"}).json()["conversation"]["id"]

    assert_error(bob_api.get(f"/api/v1/conversations/{conversation_id}/"), 404, "not_found")
    assert_error(bob_api.get(f"/api/v1/conversations/{conversation_id}/messages/"), 404, "not_found")
    assert_error(api.get("/api/v1/conversations/not-a-uuid/"), 404, "not_found")


# --- streamed -------------------------------------------------------------------------------------------
async def read_sse(response) -> str:
    return b"".join([chunk async for chunk in response.streaming_content]).decode()


@pytest.mark.django_db(transaction=True)
async def test_a_streamed_turn_is_sse_whose_tokens_make_the_saved_reply(async_client, alice):
    await async_client.aforce_login(alice)

    response = await async_client.post(URL, {"message": "What is 12*7?", "stream": True},
                                       content_type="application/json")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-cache" and response["X-Accel-Buffering"] == "no"
    frames = parse_sse(await read_sse(response))
    execution = await WorkflowExecution.objects.select_related("conversation").aget(owner=alice)
    reply = await Message.objects.aget(execution=execution, role="assistant")

    tokens = [f for f in frames if f.event == "token"]
    assert tokens and all(f.id is None for f in tokens)
    assert "".join(f.envelope["data"]["text"] for f in tokens) == reply.content
    persisted = [f for f in frames if f.id is not None]
    assert [int(f.id) for f in persisted] == [f.envelope["seq"] for f in persisted] == list(
        range(1, len(persisted) + 1))
    assert all(f.event == f.envelope["event"] and f.envelope["execution_id"] == str(execution.pk) for f in frames)
    assert persisted[0].event == "workflow_started" and persisted[-1].event == "workflow_completed"
    assert frames[-1] == persisted[-1]  # the stream ends with the terminal event (I6)

    done = persisted[-1].envelope["data"]
    assert execution.status == "completed" and execution.mode == "stream"
    for field in TOKENS:
        assert done[field] == getattr(execution, field) == getattr(reply, field)
    assert Decimal(done["cost"]) == execution.cost == reply.cost
    assert done["message_id"] == str(reply.pk)
    conversation = execution.conversation  # its new totals reach the owner's /ws/events/ (conversation_updated)
    assert conversation.message_count == 2
    for field in TOKENS:
        assert getattr(conversation, field) == getattr(reply, field)
    assert conversation.total_cost == reply.cost


@pytest.mark.django_db(transaction=True)
async def test_a_streamed_turn_with_bad_input_is_a_json_400_and_no_row(async_client, alice):
    await async_client.aforce_login(alice)
    response = await async_client.post(URL, {"message": "", "stream": True}, content_type="application/json",
                                       headers={"Accept": "text/event-stream"})
    assert_error(response, 400, "validation_error")
    assert await Conversation.objects.acount() == await WorkflowExecution.objects.acount() == 0


@pytest.mark.django_db(transaction=True)
def test_a_client_that_disconnects_mid_stream_does_not_fail_the_run(shared_daphne_server, alice):
    server = shared_daphne_server(CHATTER_LOCAL_TOKEN_DELAY_MS="50")  # as test_execution_events' live resume
    logged_before = server.log.stat().st_size  # what the shared server logged for earlier tests
    key = ApiTokenFactory(user=alice).key
    message = "please repeat all of these words back to me slowly one at a time " * 2

    parser, tokens = SSEParser(), []
    client = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Token {key}"}, timeout=30)
    with client, client.stream("POST", URL, json={"message": message, "stream": True}) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            frame = parser.feed_line(line)
            if frame is not None and frame.event == "token":
                tokens.append(frame.envelope["data"]["text"])
            if len(tokens) == 2:
                break  # leaving the block closes the connection mid-stream

    execution = WorkflowExecution.objects.get(owner=alice)
    deadline = time.monotonic() + 30
    while execution.status not in WorkflowExecution.TERMINAL and time.monotonic() < deadline:
        time.sleep(0.1)
        execution.refresh_from_db()
    assert execution.status == "completed", execution.error_message
    user, reply = Message.objects.filter(conversation=execution.conversation_id).order_by("sequence")
    assert user.content == message
    assert reply.content.startswith("".join(tokens)) and len(reply.content) > len("".join(tokens))
    assert reply.completion_tokens > 0 and reply.total_tokens == execution.total_tokens
    assert reply.cost == execution.cost > 0
    assert_all(execution)
    assert b"Traceback" not in server.log.read_bytes()[logged_before:]
