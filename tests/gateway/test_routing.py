"""Routing over deployments (CHATTER_DEPLOYMENTS) through OpenAI's own client against real daphne servers: two stub
upstreams behind one model name, one of them down, rate limited or hung; the calls are served by the other, the
failed attempt is on the run, the failing deployment cools down (across server processes with Redis), the totals
stay exact; when every deployment of a model fails, the call falls back to the next model name."""
import json
import os
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from io import StringIO
from typing import Callable

import httpx
import openai
import pytest
from workflows.services.run_requests import ChatRequest
import yaml
from django.core.management import call_command

from tests.clock import inside_one_minute
from tests.factories import ApiTokenFactory
from tests.invariants import assert_all
from tests.openai_stub import OpenAIStub
from workflows.models import LLMCall, ProviderAttempt, WorkflowExecution

ASK = [{"role": "user", "content": "What is 12*7?"}]
USAGE = {"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30}
# gpt-4o-mini: $0.15 input, $0.60 output per million; gpt-4o: $2.50 and $10.00 (analytics' seeded prices)
MINI_COST = (Decimal(21) * Decimal("0.15") + Decimal(9) * Decimal("0.60")) / 10**6
KEYS = {"ROUTE_KEY_A": "sk-route-a-not-a-real-key", "ROUTE_KEY_B": "sk-route-b-not-a-real-key"}
FAULTS = {
    "500": ({"status": 500}, 500, "provider_error"),
    "429": ({"status": 429, "headers": {"retry-after": "90"}}, 429, "provider_rate_limited"),
    "hang": ({"delay_s": 3, "content": "too late", "usage": USAGE}, None, "provider_timeout"),
}


@pytest.fixture(scope="module")
def _upstreams_of_module():
    with OpenAIStub() as first, OpenAIStub() as second:
        yield first, second


@pytest.fixture
def upstreams(_upstreams_of_module):
    """The module's two stub upstreams, as new ones: what a test scripts and what they received go with it."""
    for stub in _upstreams_of_module:
        stub.reset()
    yield _upstreams_of_module
    for stub in _upstreams_of_module:
        stub.reset()


def deployment(name: str, stub: OpenAIStub, key: str, **more) -> dict:
    return {"name": name, "base_url": stub.base_url, "api_key_env": key, **more}


@dataclass(frozen=True)
class Names:
    """A test's own names in the module's deployments file. Its model names are dated variants, priced as the plain
    name (analytics' seeded prices match `gpt-4o-mini-2024-01-02`); its deployments' names are the module run's own,
    as cooldowns live in the shared cache (Redis outlives a run)."""

    day: int
    run: str

    @property
    def mini(self) -> str:
        return f"gpt-4o-mini-{date(2024, 1, 1) + timedelta(days=self.day):%Y-%m-%d}"

    @property
    def four_o(self) -> str:
        return f"gpt-4o-{date(2024, 1, 1) + timedelta(days=self.day):%Y-%m-%d}"

    @property
    def four_one(self) -> str:
        return f"gpt-4.1-{date(2024, 1, 1) + timedelta(days=self.day):%Y-%m-%d}"

    @property
    def four_one_mini(self) -> str:
        return f"gpt-4.1-mini-{date(2024, 1, 1) + timedelta(days=self.day):%Y-%m-%d}"

    @property
    def claude(self) -> str:
        """A claude-3-5-haiku model name of the test's own (priced as claude-3-5-haiku)."""
        return f"claude-3-5-haiku-{date(2024, 1, 1) + timedelta(days=self.day):%Y%m%d}"

    @property
    def a(self) -> str:
        return f"a-{self.run}"

    @property
    def b(self) -> str:
        return f"b-{self.run}"


# The models each server test routes, by its module and pytest name: `build(first, second, names)` with the two
# upstreams (tests/gateway/test_upstream_errors.py registers its own too, and shares these fixtures).
MODELS_OF: dict[tuple[str, str], Callable[[OpenAIStub, OpenAIStub, Names], dict]] = {}


def routes(build, ids=("",)):
    """The test's models in the module's deployments file (one per parameter id of a parametrized test)."""
    def register(test):
        for id_ in ids:
            MODELS_OF[test.__module__, f"{test.__name__}[{id_}]" if id_ else test.__name__] = build
        return test
    return register


@pytest.fixture(scope="module")
def _deployments_of_module(_upstreams_of_module, tmp_path_factory) -> tuple[dict, dict[str, Names]]:
    """ONE deployments file holding every server test's models: the environment of the server they share, and each
    test's names."""
    run = uuid.uuid4().hex[:6]
    names, models = {}, {}
    for day, (test, build) in enumerate(MODELS_OF.items(), start=1):
        names[test] = Names(day=day, run=run)
        own = build(*_upstreams_of_module, names[test])
        assert not own.keys() & models.keys(), f"{test}: a model name of another test's ({own.keys() & models.keys()})"
        models.update(own)
    path = tmp_path_factory.mktemp("routing") / "deployments.yaml"
    path.write_text(yaml.safe_dump({"models": models}))
    return {"CHATTER_DEPLOYMENTS": str(path), "CHATTER_PROVIDER_MAX_RETRIES": "0", **KEYS}, names


@dataclass
class Routed:
    base_url: str
    key: str
    env: dict
    names: Names | None = None  # a shared server's test's


@pytest.fixture
def routed(shared_daphne_server, _deployments_of_module, alice, request) -> Routed:
    """The server of the module's deployments file (no OPENAI_BASE_URL: the deployments are the upstreams), shared
    by its tests; alice's gateway key; this test's names; `.env` to start another on the same file."""
    env, names = _deployments_of_module
    server = shared_daphne_server(**env)
    key = ApiTokenFactory(user=alice, name="gateway", scopes=["gateway"]).key
    return Routed(base_url=server.base_url, key=key, env=env,
                  names=names[request.module.__name__, request.node.name])


@pytest.fixture
def routed_own(daphne_server, alice, tmp_path):
    """For a test whose deployments file needs settings of its own (`cooldown_s`): a server of its own, on a file
    holding `models` and those settings."""
    def start(models: dict, **settings_file) -> Routed:
        path = tmp_path / "deployments.yaml"
        path.write_text(yaml.safe_dump({**settings_file, "models": models}))
        env = {"CHATTER_DEPLOYMENTS": str(path), "CHATTER_PROVIDER_MAX_RETRIES": "0", **KEYS}
        key = ApiTokenFactory(user=alice, name="gateway", scopes=["gateway"]).key
        return Routed(base_url=daphne_server(**env).base_url, key=key, env=env)
    return start


def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=server.key, max_retries=0, timeout=30)


def names() -> tuple[str, str]:
    """Deployment names of this test's own: cooldowns live in the shared cache (Redis outlives a test)."""
    suffix = uuid.uuid4().hex[:6]
    return f"a-{suffix}", f"b-{suffix}"


def attempts_of(execution) -> list[tuple]:
    return list(ProviderAttempt.objects.filter(execution=execution).order_by("id").values_list(
        "deployment", "model", "ok", "status_code", "error_type"))


def assert_exact() -> None:
    for execution in WorkflowExecution.objects.all():
        assert_all(execution)
    call_command("reconcile_aggregates", stdout=StringIO())  # exits 1 (SystemExit) on any drift


@routes(lambda down, healthy, n: {n.mini: {"deployments": [
    deployment(n.a, down, "ROUTE_KEY_A", weight=1_000_000), deployment(n.b, healthy, "ROUTE_KEY_B")]}})
def test_the_execution_detail_lists_each_attempt_of_a_routed_call(routed, upstreams, alice):
    down, healthy = upstreams
    down.always(status=500)
    healthy.always(content="84.", usage=USAGE)
    a, b, mini = routed.names.a, routed.names.b, routed.names.mini
    raw = client(routed).chat.completions.with_raw_response.create(model=mini, messages=ASK)
    reader = ApiTokenFactory(user=alice, scopes=["read"]).key

    detail = httpx.get(f"{routed.base_url}/api/v1/executions/{raw.headers['x-request-id']}/",
                       headers={"Authorization": f"Bearer {reader}"})

    assert detail.status_code == 200, detail.text
    attempts = detail.json()["provider_attempts"]
    assert [(t["deployment"], t["model"], t["provider"], t["ok"], t["status_code"], t["error_type"], t["node_id"])
            for t in attempts] == [
        (f"{mini}/{a}", mini, "openai", False, 500, "provider_error", "model"),
        (f"{mini}/{b}", mini, "openai", True, None, "", "model")]
    assert attempts[0]["cooldown_s"] == 30 and down.base_url.removesuffix("/v1") in attempts[0]["error"]
    assert KEYS["ROUTE_KEY_A"] not in detail.text and KEYS["ROUTE_KEY_B"] not in detail.text
    assert [(call["deployment"], call["total_tokens"]) for call in detail.json()["llm_call_log"]] == [
        (f"{mini}/{b}", 30)]  # only the attempt that answered is billed
    assert_exact()


# The only test that routes text-embedding-3-small (whose seeded price has no dated variants).
@routes(lambda down, healthy, n: {"text-embedding-3-small": {"deployments": [
    deployment(n.a, down, "ROUTE_KEY_A", weight=1_000_000), deployment(n.b, healthy, "ROUTE_KEY_B")]}})
def test_an_embeddings_call_is_routed_retried_on_the_other_deployment_and_billed_once(routed, upstreams):
    down, healthy = upstreams
    down.always(status=503)
    healthy.always(usage={"prompt_tokens": 5, "total_tokens": 5}, model="text-embedding-3-small-2024")
    a, b = routed.names.a, routed.names.b

    raw = client(routed).embeddings.with_raw_response.create(model="text-embedding-3-small", input=["a", "b"],
                                                             dimensions=4)

    reply = raw.parse()
    assert [len(item.embedding) for item in reply.data] == [4, 4] and reply.usage.total_tokens == 5
    assert len(down.requests) == len(healthy.requests) == 1
    assert down.requests[0].headers["authorization"] == f"Bearer {KEYS['ROUTE_KEY_A']}"
    assert healthy.requests[0].headers["authorization"] == f"Bearer {KEYS['ROUTE_KEY_B']}"
    run = WorkflowExecution.objects.get(pk=raw.headers["x-request-id"])
    model = "text-embedding-3-small"
    assert attempts_of(run) == [(f"{model}/{a}", model, False, 503, "provider_error"),
                                (f"{model}/{b}", model, True, None, "")]
    (call,) = LLMCall.objects.filter(execution=run)
    assert (call.deployment, call.requested_model, call.model, call.prompt_tokens, call.total_tokens) == (
        f"{model}/{b}", model, "text-embedding-3-small-2024", 5, 5)
    assert (run.status, run.total_tokens, run.llm_calls, run.cost) == ("completed", 5, 1, call.cost)
    assert call.cost > 0 and not call.unpriced
    assert_exact()


# `a` weighs a million times `b`: without the cooldown every call would try it first.
@routes(lambda down, healthy, n: {n.mini: {"deployments": [
    deployment(n.a, down, "ROUTE_KEY_A", weight=1_000_000, timeout_s=1), deployment(n.b, healthy, "ROUTE_KEY_B")]}},
    ids=FAULTS)
@pytest.mark.parametrize("fault", FAULTS)
def test_a_failing_deployment_is_retried_on_the_other_and_cools_down(routed, upstreams, fault):
    down, healthy = upstreams
    answer, status, error_type = FAULTS[fault]
    down.always(**answer)
    healthy.always(content="84.", usage=USAGE)
    a, b, mini = routed.names.a, routed.names.b, routed.names.mini
    api = client(routed)

    first = api.chat.completions.with_raw_response.create(model=mini, messages=ASK, stream=True,
                                                          stream_options={"include_usage": True})
    chunks = list(first.parse())
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    second = api.chat.completions.create(model=mini, messages=ASK)
    third = api.chat.completions.create(model=mini, messages=ASK)

    # The stream carries only the reply of the deployment that answered, and its usage.
    assert text == second.choices[0].message.content == third.choices[0].message.content == "84."
    assert chunks[-1].usage.total_tokens == 30
    assert len(down.requests) == 1 and len(healthy.requests) == 3  # cooling down after its failure: left out
    runs = list(WorkflowExecution.objects.order_by("created_at"))
    assert str(runs[0].pk) == first.headers["x-request-id"] and runs[0].mode == "stream"
    assert attempts_of(runs[0]) == [(f"{mini}/{a}", mini, False, status, error_type),
                                    (f"{mini}/{b}", mini, True, None, "")]
    assert [attempts_of(run) for run in runs[1:]] == [[(f"{mini}/{b}", mini, True, None, "")]] * 2
    failed = ProviderAttempt.objects.get(ok=False)
    assert failed.node_execution.execution_id == runs[0].pk and failed.cooldown_s == (90 if fault == "429" else 30)
    assert down.base_url.removesuffix("/v1") in failed.error and KEYS["ROUTE_KEY_A"] not in failed.error
    # Only the attempt that answered is billed: each run is exactly the healthy upstream's report.
    calls = LLMCall.objects.order_by("created_at")
    assert [(c.deployment, c.requested_model, c.total_tokens, c.cost) for c in calls] == [
        (f"{mini}/{b}", mini, 30, MINI_COST)] * 3
    assert [(run.status, run.total_tokens, run.cost, run.llm_calls) for run in runs] == [
        ("completed", 30, MINI_COST, 1)] * 3
    assert healthy.requests[0].headers["authorization"] == f"Bearer {KEYS['ROUTE_KEY_B']}"
    assert down.requests[0].headers["authorization"] == f"Bearer {KEYS['ROUTE_KEY_A']}"
    assert_exact()


@routes(lambda down, healthy, n: {
    n.four_o: {"deployments": [deployment(n.a, down, "ROUTE_KEY_A")], "fallbacks": [n.mini]},
    n.mini: {"deployments": [deployment(n.b, healthy, "ROUTE_KEY_B")]},
})
def test_when_every_deployment_of_a_model_fails_the_call_falls_back_to_the_next_model(routed, upstreams):
    down, healthy = upstreams
    down.always(status=503)
    healthy.always(content="84.", usage=USAGE)
    a, b, mini, four_o = routed.names.a, routed.names.b, routed.names.mini, routed.names.four_o

    reply = client(routed).chat.completions.create(model=four_o, messages=ASK)

    # named as the model that answered (issue 43 item 20), as OpenAI names the model that answered
    assert reply.choices[0].message.content == "84." and reply.model == mini
    assert healthy.requests[0].body["model"] == mini
    run = WorkflowExecution.objects.get()
    assert attempts_of(run) == [(f"{four_o}/{a}", four_o, False, 503, "provider_error"),
                                (f"{mini}/{b}", mini, True, None, "")]
    call = LLMCall.objects.get()
    # Billed as the model that answered (the fallback's price), not the one asked for.
    assert (call.requested_model, call.deployment, call.cost) == (mini, f"{mini}/{b}", MINI_COST)
    assert (run.model, run.cost, run.total_tokens) == (four_o, MINI_COST, 30)
    assert_exact()


# The only test that routes claude-3-5-haiku-latest.
@routes(lambda down, claude, n: {
    n.mini: {"deployments": [deployment(n.a, down, "ROUTE_KEY_A")], "fallbacks": ["claude-3-5-haiku-latest"]},
    "claude-3-5-haiku-latest": {"deployments": [
        {"name": n.b, "provider": "anthropic", "base_url": claude.root_url, "api_key_env": "ROUTE_KEY_B"}]},
})
def test_a_model_falls_back_to_an_anthropic_deployment(routed, upstreams):
    down, claude = upstreams
    down.always(status=502)
    claude.always(content="84.", usage={"input_tokens": 21, "output_tokens": 9}, model="claude-3-5-haiku-20241022")
    a, b, mini = routed.names.a, routed.names.b, routed.names.mini

    streamed = client(routed).chat.completions.create(model=mini, messages=ASK, stream=True,
                                                      stream_options={"include_usage": True})
    chunks = list(streamed)

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "84."
    sent = claude.requests[0]
    assert (sent.path, sent.body["model"]) == ("/v1/messages", "claude-3-5-haiku-latest")
    assert KEYS["ROUTE_KEY_B"] in (sent.headers.get("x-api-key"), sent.headers.get("authorization", "")[7:])
    call = LLMCall.objects.get()
    # claude-3-5-haiku: $0.80 input, $4.00 output per million (analytics' seeded prices)
    assert (call.provider, call.requested_model, call.deployment, call.prompt_tokens, call.completion_tokens,
            call.cost) == ("anthropic", "claude-3-5-haiku-latest", f"claude-3-5-haiku-latest/{b}", 21, 9,
                           (Decimal(21) * Decimal("0.80") + Decimal(9) * Decimal("4.00")) / 10**6)
    assert chunks[-1].usage.total_tokens == 30
    assert attempts_of(WorkflowExecution.objects.get()) == [
        (f"{mini}/{a}", mini, False, 502, "provider_error"),
        (f"claude-3-5-haiku-latest/{b}", "claude-3-5-haiku-latest", True, None, "")]
    assert_exact()


@routes(lambda first, second, n: {n.mini: {"deployments": [deployment(n.a, first, "ROUTE_KEY_A"),
                                                           deployment(n.b, second, "ROUTE_KEY_B")]}})
def test_when_every_deployment_fails_the_call_fails_with_each_attempt_on_the_run(routed, upstreams):
    first, second = upstreams
    first.always(status=500)
    second.always(status=429)
    a, b, mini = routed.names.a, routed.names.b, routed.names.mini
    api = client(routed)

    with pytest.raises(openai.APIStatusError) as failed:
        api.chat.completions.create(model=mini, messages=ASK)
    with pytest.raises(openai.APIStatusError) as unavailable:
        api.chat.completions.create(model=mini, messages=ASK)

    # One rate limited among them: a wait (429, Retry-After: when the first may take a call again), not a failure.
    assert failed.value.status_code == 429 and failed.value.response.headers["retry-after"] == "30"
    runs = list(WorkflowExecution.objects.order_by("created_at"))
    assert f"every deployment of '{mini}'" in runs[0].error_message  # the run (the operator's) says which
    assert sorted((d, ok, s) for d, _, ok, s, _ in attempts_of(runs[0])) == [
        (f"{mini}/{a}", False, 500), (f"{mini}/{b}", False, 429)]
    # Both cooling down: the next call tries neither; the run says why.
    assert (unavailable.value.status_code, unavailable.value.code) == (429, "provider_unavailable")
    assert 1 <= int(unavailable.value.response.headers["retry-after"]) <= 30
    assert "cooling down" in runs[1].error_message and attempts_of(runs[1]) == []
    assert len(first.requests) == len(second.requests) == 1
    assert [(run.status, run.total_tokens, run.cost) for run in runs] == [("failed", 0, 0)] * 2
    assert not LLMCall.objects.exists()
    assert_exact()


@routes(lambda down, healthy, n: {n.mini: {"deployments": [
    deployment(n.a, down, "ROUTE_KEY_A", weight=1_000_000), deployment(n.b, healthy, "ROUTE_KEY_B")]}})
@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="cooldowns are shared across processes through Redis")
def test_the_cooldown_holds_across_server_processes(routed, daphne_server, upstreams):
    down, healthy = upstreams
    down.always(status=500)
    healthy.always(content="84.", usage=USAGE)
    mini = routed.names.mini
    other = Routed(base_url=daphne_server(**routed.env).base_url, key=routed.key, env=routed.env,
                   names=routed.names)  # a second process of the same file, the test's own

    client(routed).chat.completions.create(model=mini, messages=ASK)
    replies = [client(other).chat.completions.create(model=mini, messages=ASK) for _ in range(3)]

    assert [reply.choices[0].message.content for reply in replies] == ["84."] * 3
    assert len(down.requests) == 1 and len(healthy.requests) == 4  # the other process never tried `a`
    assert ProviderAttempt.objects.filter(ok=False).count() == 1
    assert_exact()


# The only test that routes house-model (which has no price).
@routes(lambda first, second, n: {
    n.four_o: {"deployments": [deployment(n.a, first, "ROUTE_KEY_A")], "fallbacks": [n.mini]},
    n.mini: {"deployments": [deployment(n.b, second, "ROUTE_KEY_B")]},
    "house-model": {"deployments": [deployment(n.a, first, "ROUTE_KEY_A")]},
})
def test_the_models_listed_are_the_routed_ones_and_an_unpriced_one_is_explained(routed, upstreams):
    a, mini, four_o = routed.names.a, routed.names.mini, routed.names.four_o
    api = client(routed)

    listed = {model.id: model.owned_by for model in api.models.list()}
    one = api.models.retrieve(mini)
    with pytest.raises(openai.NotFoundError) as unpriced:
        api.chat.completions.create(model="house-model", messages=ASK)

    assert {four_o: "openai", mini: "openai"}.items() <= listed.items()
    assert "house-model" not in listed and "local-echo-1" in listed  # the offline provider is still there
    assert (one.id, one.owned_by) == (mini, "openai")
    assert "routed to deployments" in unpriced.value.message and f"house-model/{a}" in unpriced.value.message
    assert not WorkflowExecution.objects.exists() and not upstreams[0].requests


# --- a graph's model node is routed the same way, in process ------------------------------------------------------
GRAPH = {
    "nodes": [{"id": "start", "type": "start"},
              {"id": "llm", "type": "model", "config": {"provider": "openai", "model": "gpt-4o-mini"}},
              {"id": "end", "type": "end"}],
    "edges": [{"source": "start", "target": "llm"}, {"source": "llm", "target": "end"}],
}


@pytest.fixture
def routed_here(tmp_path, settings, monkeypatch):
    """Route this process's calls over `models` (the test's own settings; the keys in its environment)."""
    def route(models: dict) -> None:
        for name, value in KEYS.items():
            monkeypatch.setenv(name, value)
        path = tmp_path / f"deployments-{uuid.uuid4().hex[:6]}.json"
        path.write_text(json.dumps({"models": models}))
        settings.CHATTER_DEPLOYMENTS = str(path)
        settings.CHATTER_PROVIDER_MAX_RETRIES = 0
    return route


def test_a_graph_runs_model_node_is_routed_and_the_dashboard_shows_each_deployment(
        api, staff, upstreams, routed_here, settings):
    down, healthy = upstreams
    down.always(status=500)
    healthy.always(content="84.", usage=USAGE)
    a, b = names()
    routed_here({"gpt-4o-mini": {"deployments": [
        deployment(a, down, "ROUTE_KEY_A", weight=1_000_000), deployment(b, healthy, "ROUTE_KEY_B")]}})
    settings.OPENAI_API_KEY = settings.OPENAI_BASE_URL = None  # the deployments are the only upstreams

    response = api.post("/api/v1/executions/", {"graph": GRAPH, "input": {"message": "What is 12*7?"}},
                        format="json")
    api.post("/api/v1/executions/", {"graph": GRAPH, "input": {"message": "And 6*7?"}}, format="json")

    assert response.status_code == 201, response.content
    run = WorkflowExecution.objects.get(pk=response.json()["execution"]["id"])
    assert (run.status, run.output_data["content"], run.total_tokens, run.cost) == ("completed", "84.", 30, MINI_COST)
    assert attempts_of(run) == [(f"gpt-4o-mini/{a}", "gpt-4o-mini", False, 500, "provider_error"),
                                (f"gpt-4o-mini/{b}", "gpt-4o-mini", True, None, "")]
    assert {attempt.node_execution.node_id for attempt in ProviderAttempt.objects.filter(execution=run)} == {"llm"}
    assert_exact()

    from rest_framework.test import APIClient

    admin = APIClient()
    admin.force_login(staff)
    page = admin.get("/admin/analytics/usagerollup/")
    attempts_page = admin.get("/admin/workflows/providerattempt/")

    assert page.status_code == 200 and attempts_page.status_code == 200
    rows = page.context["deployments"]
    assert [(r["deployment"], r["llm_calls"], r["cost"], r["attempts"], r["errors"]) for r in rows] == [
        (f"gpt-4o-mini/{b}", 2, 2 * MINI_COST, 2, 0), (f"gpt-4o-mini/{a}", 0, Decimal(0), 1, 1)]
    html = page.content.decode()
    assert f'data-deployment="gpt-4o-mini/{a}"' in html and f'data-deployment="gpt-4o-mini/{b}"' in html
    assert f"gpt-4o-mini/{a}" in attempts_page.content.decode()


def test_a_deployment_at_its_requests_per_minute_is_left_out_until_the_next_minute(alice, upstreams, routed_here,
                                                                                 settings):
    from workflows.services.runs import execution_run_now

    for stub in upstreams:
        stub.always(content="84.", usage=USAGE)
    a, b = names()
    routed_here({"gpt-4o-mini": {"deployments": [deployment(a, upstreams[0], "ROUTE_KEY_A", weight=1_000_000, rpm=2),
                                                 deployment(b, upstreams[1], "ROUTE_KEY_B")]}})
    inside_one_minute()  # the counts are per calendar minute: the test stays inside one
    config = {"provider": "openai", "model": "gpt-4o-mini", "enable_memory": False, "enable_tools": False}

    runs = [execution_run_now(ChatRequest(owner=alice, message="hello", config=config)) for _ in range(4)]

    assert [attempts_of(run)[0][0] for run in runs] == [f"gpt-4o-mini/{a}"] * 2 + [f"gpt-4o-mini/{b}"] * 2
    assert len(upstreams[0].requests) == 2 and all(len(attempts_of(run)) == 1 for run in runs)
    assert_exact()


def test_a_reply_that_breaks_off_is_not_retried_and_its_usage_so_far_is_billed(alice, upstreams, routed_here):
    """Text already streamed cannot be taken back: the call is the broken reply (estimated, as for any provider), not a
    second answer from another deployment; the deployment that broke cools down all the same."""
    from workflows.services.runs import execution_run_now

    breaking, healthy = upstreams
    breaking.always(content="The answer is 84.", usage=USAGE, fault="reset", fault_after=3)
    healthy.always(content="84.", usage=USAGE)
    a, b = names()
    routed_here({"gpt-4o-mini": {"deployments": [deployment(a, breaking, "ROUTE_KEY_A", weight=1_000_000),
                                                 deployment(b, healthy, "ROUTE_KEY_B")]}})
    config = {"provider": "openai", "model": "gpt-4o-mini", "enable_memory": False, "enable_tools": False}

    broken = execution_run_now(ChatRequest(owner=alice, message="hello", config=config))
    after = execution_run_now(ChatRequest(owner=alice, message="hello", config=config))

    assert (broken.status, broken.error_type) == ("failed", "provider_error")
    assert attempts_of(broken) == [(f"gpt-4o-mini/{a}", "gpt-4o-mini", False, None, "provider_error")]
    call = LLMCall.objects.get(execution=broken)
    assert (call.deployment, call.estimated) == (f"gpt-4o-mini/{a}", True) and call.completion_tokens > 0
    assert broken.total_tokens == call.total_tokens and broken.cost == call.cost
    assert attempts_of(after) == [(f"gpt-4o-mini/{b}", "gpt-4o-mini", True, None, "")]
    assert len(breaking.requests) == len(healthy.requests) == 1
    assert_exact()


def test_routing_a_call_adds_no_database_round_trip(alice, upstreams, routed_here, settings):
    """The deployment is chosen from the table in memory and the shared cache; the attempt row rides on the write
    of its call (on PostgreSQL in the same statement; on SQLite its own INSERT in the same transaction)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.workflows.test_query_count import statements_and_transactions
    from workflows.services.runs import execution_run_now

    for stub in upstreams:
        stub.always(content="84.", usage=USAGE)
    a, b = names()
    routed_here({"gpt-4o": {"deployments": [deployment(a, upstreams[0], "ROUTE_KEY_A"),
                                            deployment(b, upstreams[1], "ROUTE_KEY_B")]}})
    settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = upstreams[0].base_url, "sk-test-not-a-real-key"

    def run(model: str) -> list[str]:
        config = {"provider": "openai", "model": model, "enable_memory": False, "enable_tools": False}
        execution_run_now(ChatRequest(owner=alice, message="warm up", config=config))  # caches, prices
        with CaptureQueriesContext(connection) as queries:
            execution = execution_run_now(ChatRequest(owner=alice, message="hello", config=config))
        assert execution.status == "completed"
        # (less the cancel check's poll of the run's row, made when a turn outlasts workflows.cancels.CANCEL_POLL_S:
        # a loaded machine's, not the routing's)
        return [q["sql"] for q in queries.captured_queries
                if not (q["sql"].startswith("SELECT") and '"cancel_requested"' in q["sql"].split(" FROM ")[0])]

    plain, routed = run("gpt-4o-mini"), run("gpt-4o")  # gpt-4o-mini: OPENAI_BASE_URL's; gpt-4o: routed

    assert ProviderAttempt.objects.filter(deployment__startswith="gpt-4o/").count() == 2
    # A model the file does not route goes to the provider's one upstream as before: no attempt, no deployment.
    assert ProviderAttempt.objects.count() == 2 and len(upstreams[0].requests) + len(upstreams[1].requests) == 4
    assert set(LLMCall.objects.filter(requested_model="gpt-4o-mini").values_list("deployment", flat=True)) == {""}
    plain_statements, plain_transactions, _ = statements_and_transactions(plain)
    routed_statements, routed_transactions, shown = statements_and_transactions(routed)
    attempt_inserts = 0 if connection.vendor == "postgresql" else 1
    assert (routed_statements, routed_transactions) == (plain_statements + attempt_inserts, plain_transactions), (
        "\n".join(shown))
    assert sum(sql.startswith("SELECT") for sql in routed) == sum(sql.startswith("SELECT") for sql in plain)
