"""A provider that cannot be reached, drops the connection or goes quiet: the run's error says which URL failed
and why (refused, reset mid-stream, timed out), never only "Connection error.", and carries no secret."""

import pytest

from conversations.models import Message
from tests.fixtures_server import refusing_port
from tests.invariants import assert_all
from workflows.models import ExecutionEvent
from workflows.services.run_requests import ChatRequest
from workflows.services.runs import execution_create, execution_run

pytestmark = pytest.mark.django_db

OPENAI = {"provider": "openai", "model": "gpt-4o-mini"}
KEY = "sk-test-not-a-real-key"  # the openai_server fixture's key
USAGE = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
AFTER_TWO_WORDS = 3  # the role chunk and two words


def chat(owner, **config):
    execution = execution_create(ChatRequest(owner=owner, message="Tell me something", config={**OPENAI, **config}))
    execution = execution_run(execution_id=execution.pk)
    execution.refresh_from_db()
    return execution


def assert_failed_naming(execution, *, error_type: str, url: str, reason: str) -> str:
    """The run failed with `error_type`; its message, the reply's and the terminal event's name the URL and the
    reason, and none of them carries the API key."""
    assert (execution.status, execution.error_type) == ("failed", error_type), execution.error_message
    message = execution.error_message
    assert url in message and reason in message, message
    assert message != "Connection error."
    reply = Message.objects.get(execution=execution, role="assistant")
    terminal = ExecutionEvent.objects.filter(execution=execution).order_by("-seq").first()
    assert reply.error_message == message == terminal.data["error_message"]
    stored = [message, reply.error_message, *(str(e.data) for e in ExecutionEvent.objects.filter(execution=execution))]
    assert not any(KEY in text for text in stored)
    assert_all(execution)
    return message


def test_a_refused_connection_names_the_url_and_says_refused(alice, settings):
    port = refusing_port()
    settings.OPENAI_BASE_URL = f"http://127.0.0.1:{port}/v1"
    settings.OPENAI_API_KEY = KEY
    execution = chat(alice)

    message = assert_failed_naming(execution, error_type="provider_error",
                                   url=f"http://127.0.0.1:{port}/v1/chat/completions", reason="connection refused")
    assert (execution.total_tokens, execution.llm_calls) == (0, 0)  # nothing reached a model
    assert message.startswith(f"openai call to http://127.0.0.1:{port}/v1/chat/completions failed: ")


def test_a_connection_reset_mid_stream_names_the_url_and_says_reset(alice, openai_server):
    openai_server.reply(content="one two three four five", usage=USAGE, fault="reset", fault_after=AFTER_TWO_WORDS)
    execution = chat(alice)

    assert_failed_naming(execution, error_type="provider_error", url=f"{openai_server.base_url}/chat/completions",
                         reason="connection reset mid-stream")
    assert execution.llm_calls == 1  # the two words streamed are kept, estimated (I5)


def test_a_server_that_closes_the_connection_mid_stream_names_the_url_and_says_closed(alice, openai_server):
    openai_server.reply(content="one two three four five", usage=USAGE, fault="close", fault_after=AFTER_TWO_WORDS)
    execution = chat(alice)

    assert_failed_naming(execution, error_type="provider_error", url=f"{openai_server.base_url}/chat/completions",
                         reason="connection closed by the server mid-stream")
    assert execution.llm_calls == 1  # the two words streamed are kept, estimated (I5)


def test_a_stream_that_stalls_past_the_provider_timeout_names_the_url_and_says_timed_out(
        alice, openai_server, settings):
    settings.CHATTER_PROVIDER_TIMEOUT_S = 1
    openai_server.reply(content="one two three four five", usage=USAGE, fault="stall", fault_after=AFTER_TWO_WORDS,
                        stall_s=3)
    execution = chat(alice, timeout_s=60)

    assert_failed_naming(execution, error_type="provider_timeout", url=f"{openai_server.base_url}/chat/completions",
                         reason="timed out after 1 s")


def test_a_server_that_accepts_but_never_answers_names_the_url_and_says_timed_out(alice, openai_server, settings):
    settings.CHATTER_PROVIDER_TIMEOUT_S = 1
    openai_server.reply(content="too late", usage=USAGE, delay_s=3)
    execution = chat(alice, timeout_s=60)

    assert_failed_naming(execution, error_type="provider_timeout", url=f"{openai_server.base_url}/chat/completions",
                         reason="timed out after 1 s")
    assert execution.llm_calls == 0


def test_credentials_in_the_base_url_are_left_out_of_the_message(alice, settings):
    port = refusing_port()
    settings.OPENAI_BASE_URL = f"http://chatter:url-secret@127.0.0.1:{port}/v1"
    settings.OPENAI_API_KEY = KEY
    execution = chat(alice)

    message = assert_failed_naming(execution, error_type="provider_error",
                                   url=f"http://127.0.0.1:{port}/v1/chat/completions", reason="connection refused")
    assert "url-secret" not in message and "chatter:" not in message


def test_a_base_url_without_v1_is_said_to_look_wrong_not_a_missing_model(api, openai_server, settings):
    root = openai_server.base_url.removesuffix("/v1")  # the stub, like OpenAI-compatible servers, answers at /v1/…
    settings.OPENAI_BASE_URL = root

    response = api.post("/api/v1/chat/", {"message": "Tell me something", **OPENAI}, format="json")

    assert response.status_code == 201, response.content
    execution = response.json()["execution"]
    assert execution["status"] == "failed"
    assert execution["error_message"].endswith(
        f"; the path of OPENAI_BASE_URL looks wrong: OpenAI-compatible servers answer under /v1 (try {root}/v1)")
    assert execution["error_message"].startswith(f"openai call to {root}/chat/completions failed: ")


def test_a_404_under_v1_gets_no_path_hint(api, openai_server):
    openai_server.reply(status=404)
    response = api.post("/api/v1/chat/", {"message": "Tell me something", **OPENAI}, format="json")

    execution = response.json()["execution"]
    assert execution["status"] == "failed" and "404" in execution["error_message"]
    assert "looks wrong" not in execution["error_message"]
