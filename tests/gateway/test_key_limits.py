"""Per-key control through OpenAI's own client against real daphne servers: a key limited to some models gets a 403
for another, and nothing runs; a key past its requests or tokens per minute (in all, or for one model) gets a 429
with Retry-After and the x-ratelimit-* headers, and nothing runs; with Redis the count is shared by server
processes."""
import os

import openai
import pytest

from core.errors import InvalidInput
from gateway.limits import key_limits_set
from keys.models import ApiToken
from tests.clock import inside_one_minute
from tests.factories import ApiTokenFactory, ConversationFactory
from tests.gateway.conftest import client
from workflows.models import WorkflowExecution

USAGE = {"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30}
ASK = [{"role": "user", "content": "What is 12*7?"}]


def limit(gateway, **limits) -> None:
    """Limit alice's key, with the rest of the test inside one counting window: counts are per calendar minute
    (tests.clock), so a test that crossed into the next would start counting anew."""
    key_limits_set(api_key=ApiToken.objects.get(user__username="alice"), **limits)
    inside_one_minute()


def test_a_key_calls_only_its_allowed_models(gateway, openai_stub):
    limit(gateway, allowed_models=["gpt-4o-mini"])
    openai_stub.reply(content="84.", usage=USAGE)

    allowed = client(gateway).chat.completions.create(model="gpt-4o-mini", messages=ASK)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client(gateway).chat.completions.create(model="gpt-4o", messages=ASK)
    with pytest.raises(openai.PermissionDeniedError):
        client(gateway).embeddings.create(model="text-embedding-3-small", input="x")

    assert allowed.choices[0].message.content == "84."
    assert (refused.value.code, refused.value.param, refused.value.type) == (
        "model_not_allowed", "model", "permission_error")
    assert "gpt-4o-mini" in refused.value.message
    assert WorkflowExecution.objects.count() == 1 and len(openai_stub.requests) == 1


@pytest.mark.parametrize("asked", ["gpt-4o-mini ", " gpt-4o-mini", "gpt-4o-mini\n"])
def test_a_model_name_with_spaces_around_it_is_no_model_the_key_may_call(gateway, openai_stub, alice, asked):
    """Read trimmed, "gpt-4o-mini " passed the allow-list and went upstream as it came (the pass-through), where
    the upstream refused it: it is no model's name, a 404 naming `model` on every path, and nothing runs."""
    limit(gateway, allowed_models=["gpt-4o-mini"])
    api = client(gateway)
    kept = {"X-Chatter-Conversation": str(ConversationFactory(owner=alice).pk)}  # (the run path)

    calls = [lambda: api.chat.completions.create(model=asked, messages=ASK),
             lambda: api.chat.completions.create(model=asked, messages=ASK, stream=True),
             lambda: api.chat.completions.create(model=asked, messages=ASK, extra_headers=kept),
             lambda: api.responses.create(model=asked, input="What is 12*7?"),
             lambda: api.completions.create(model=asked, prompt="What is 12*7?"),
             lambda: api.embeddings.create(model=asked, input="x")]
    for call in calls:
        with pytest.raises(openai.NotFoundError) as refused:
            call()
        assert (refused.value.code, refused.value.param) == ("model_not_found", "model")
        assert "spaces around it" in refused.value.message

    assert WorkflowExecution.objects.count() == 0 and openai_stub.requests == []


def test_past_its_requests_per_minute_a_key_gets_a_429_and_nothing_runs(gateway, openai_stub):
    limit(gateway, rpm=2)
    openai_stub.reply(content="84.", usage=USAGE).reply(content="84.", usage=USAGE)
    api = client(gateway)

    first = api.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=ASK)
    second = api.responses.with_raw_response.create(model="gpt-4o-mini", input="What is 12*7?")
    with pytest.raises(openai.RateLimitError) as refused:
        api.chat.completions.create(model="gpt-4o-mini", messages=ASK)

    assert [r.headers["x-ratelimit-remaining-requests"] for r in (first, second)] == ["1", "0"]
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    headers = refused.value.response.headers
    assert refused.value.code == "rate_limit_exceeded" and "2 requests per minute" in refused.value.message
    assert 1 <= int(headers["retry-after"]) <= 60 and headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"].endswith("s")
    assert "x-should-retry" not in headers  # a passing refusal: OpenAI's clients retry it after Retry-After
    assert WorkflowExecution.objects.count() == 2 and len(openai_stub.requests) == 2


def test_past_its_tokens_per_minute_a_key_gets_a_429(gateway, openai_stub):
    limit(gateway, tpm=30)
    openai_stub.reply(content="84.", usage=USAGE)
    api = client(gateway)

    first = api.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=ASK)
    with pytest.raises(openai.RateLimitError) as refused:
        api.chat.completions.create(model="gpt-4o-mini", messages=ASK)

    assert first.headers["x-ratelimit-remaining-tokens"] == "30"  # before the call: its 30 tokens came after
    assert "30 tokens per minute" in refused.value.message
    assert refused.value.response.headers["x-ratelimit-remaining-tokens"] == "0"
    assert WorkflowExecution.objects.count() == 1


def test_a_limit_for_one_model_leaves_the_others(gateway, openai_stub):
    limit(gateway, per_model={"gpt-4o": {"rpm": 1}})
    for _ in range(3):
        openai_stub.reply(content="84.", usage=USAGE)
    api = client(gateway)

    api.chat.completions.create(model="gpt-4o", messages=ASK)
    with pytest.raises(openai.RateLimitError) as refused:
        api.chat.completions.create(model="gpt-4o", messages=ASK)
    api.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    api.chat.completions.create(model="openai/gpt-4o-mini", messages=ASK)

    assert "model gpt-4o: 1 requests per minute" in refused.value.message
    assert WorkflowExecution.objects.count() == 3


def test_a_key_without_limits_gets_no_ratelimit_headers(gateway, openai_stub):
    openai_stub.reply(content="84.", usage=USAGE)

    raw = client(gateway).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=ASK)

    assert not [name for name in raw.headers if name.startswith("x-ratelimit")]


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="counts are shared across processes through Redis")
def test_the_count_is_shared_by_server_processes(gateway, daphne_server, openai_stub):
    other = daphne_server(OPENAI_BASE_URL=openai_stub.base_url, OPENAI_API_KEY="sk-upstream-not-a-real-key",
                          CHATTER_PROVIDER_MAX_RETRIES="0")
    limit(gateway, allowed_models=["gpt-4o-mini"], rpm=3)
    for _ in range(3):
        openai_stub.reply(content="84.", usage=USAGE)
    apis = [client(gateway), openai.OpenAI(base_url=f"{other.base_url}/v1", api_key=gateway.key, max_retries=0)]

    for index in range(3):
        apis[index % 2].chat.completions.create(model="gpt-4o-mini", messages=ASK)
    with pytest.raises(openai.PermissionDeniedError) as not_allowed:
        apis[0].chat.completions.create(model="gpt-4o", messages=ASK)
    with pytest.raises(openai.RateLimitError) as refused:
        apis[1].chat.completions.create(model="gpt-4o-mini", messages=ASK)

    assert not_allowed.value.code == "model_not_allowed"
    assert refused.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert 1 <= int(refused.value.response.headers["retry-after"]) <= 60
    assert WorkflowExecution.objects.count() == 3 and len(openai_stub.requests) == 3


@pytest.mark.parametrize("limits, path", [
    ({"rpm": 0}, "rpm"), ({"tpm": "10"}, "tpm"), ({"allowed_models": "gpt-4o"}, "allowed_models"),
    ({"per_model": {"gpt-4o": {"rpd": 5}}}, "per_model.gpt-4o.rpd"),
], ids=["zero rpm", "text tpm", "models not a list", "an unknown per-model limit"])
def test_bad_limits_are_refused(alice, limits, path):
    key = ApiTokenFactory(user=alice, scopes=["gateway"])

    with pytest.raises(InvalidInput) as refused:
        key_limits_set(api_key=key, **limits)

    assert refused.value.details[0]["path"] == path
