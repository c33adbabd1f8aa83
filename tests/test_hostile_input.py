"""Hostile input through the public surface: every answer is a clear 4xx or a faithful store — never a 5xx,
never stored damage. (Oversized and malformed bodies: tests/api/test_request_limits.py; garbage websocket
frames: tests/realtime/test_websockets.py.)"""
import json

import httpx
import pytest
from django.db import connection
from django.test import Client

from agent_server.models import StoreItem
from budgets.models import Budget
from conversations.models import Conversation, Document, Message
from experiments.models import Experiment
from gateway.models import KeyLimits
from prompts.models import PromptLabel
from tests.api.conftest import assert_error, row_counts
from tests.datasets.factories import DatasetFactory, DatasetItemFactory
from tests.factories import ApiTokenFactory
from tests.prompts.factories import PromptFactory
from tests.surfaces import assert_surface_error
from workflows.models import WorkflowDefinition

pytestmark = pytest.mark.django_db
NASTY = [
    "'; DROP TABLE conversations_message; --",
    "\" OR 1=1 --",
    "<script>alert('x')</script><img src=x onerror=alert(1)>",
    "{{ settings.SECRET_KEY }} {% debug %}",
    "../../etc/passwd",
    "\u202eevil\u200b\ufeff",
    "𝕳𝖊𝖑𝖑𝖔 🧨",
]
NODES = [{"id": "start", "type": "start"}, {"id": "llm", "type": "model"}, {"id": "end", "type": "end"}]
EDGES = [{"source": "start", "target": "llm"}, {"source": "llm", "target": "end"}]


def tables_intact() -> None:
    tables = set(connection.introspection.table_names())
    assert {"conversations_message", "conversations_conversation", "workflows_workflowexecution"} <= tables


@pytest.mark.parametrize("text", NASTY)
def test_nasty_text_is_stored_and_returned_verbatim_everywhere(api, text):
    conversation = api.post("/api/v1/conversations/", {"title": text, "metadata": {text: text}}, format="json")
    document = api.post("/api/v1/documents/", {"title": text, "content": text}, format="json")
    definition = api.post("/api/v1/workflows/definitions/", {
        "name": text, "description": text, "metadata": {"note": text},
        "nodes": [NODES[0], {**NODES[1], "config": {"system_message": text}}, NODES[2]], "edges": EDGES,
    }, format="json")
    turn = api.post("/api/v1/chat/", {"message": text, "system_prompt": text}, format="json")

    assert [r.status_code for r in (conversation, document, definition, turn)] == [201, 201, 201, 201]
    assert Conversation.objects.get(pk=conversation.json()["id"]).title == text[:255]
    assert conversation.json()["metadata"] == {text: text}
    assert Document.objects.get(pk=document.json()["id"]).content == text
    assert WorkflowDefinition.objects.get(pk=definition.json()["id"]).nodes[1]["config"]["system_message"] == text
    user_message = Message.objects.get(pk=turn.json()["messages"][0]["id"])
    assert user_message.content == text
    tables_intact()


def test_the_admin_escapes_what_users_wrote(api, client, staff):
    script = "<script>alert('x')</script>"
    conversation_id = api.post("/api/v1/conversations/", {"title": script}, format="json").json()["id"]
    client.force_login(staff)
    for url in ("/admin/conversations/conversation/", f"/admin/conversations/conversation/{conversation_id}/change/"):
        page = client.get(url).content.decode()
        assert script not in page and "&lt;script&gt;" in page, url


@pytest.mark.parametrize("bad", ["nul\x00byte", "lone \ud800 surrogate"])
def test_nul_characters_and_lone_surrogates_are_a_400_and_no_row(api, bad):
    before = row_counts(), Document.objects.count()
    raw = json.dumps({"title": "t", "content": "c", "metadata": {"k": bad}})
    assert_error(api.post("/api/v1/documents/", raw, content_type="application/json"), 400, "parse_error")
    raw = json.dumps({"message": "hi", bad: 1})
    assert_error(api.post("/api/v1/chat/", raw, content_type="application/json"), 400, "parse_error")
    assert (row_counts(), Document.objects.count()) == before


@pytest.mark.parametrize("number", ["1e309", "-1e400", "1.5e99999"])
def test_a_number_past_a_floats_range_is_a_400_and_no_row(api, number):
    """Python's json reads 1e309 as infinity, which no JSON column can hold (SQLite's JSON_VALID refused it: a 500
    after the view had run); refused as NaN and Infinity are."""
    before = row_counts(), Document.objects.count()
    raw = '{"title": "t", "content": "c", "metadata": {"k": %s}}' % number
    assert_error(api.post("/api/v1/documents/", raw, content_type="application/json"), 400, "parse_error")
    raw = '{"message": "hi", "temperature": %s}' % number
    assert_error(api.post("/api/v1/chat/", raw, content_type="application/json"), 400, "parse_error")
    assert (row_counts(), Document.objects.count()) == before


INT_MAX, BIGINT_MAX = 2**31 - 1, 2**63 - 1  # a PositiveIntegerField's most, a PositiveBigIntegerField's


def test_an_integer_past_its_columns_range_is_a_400_naming_it_and_writes_nothing(api, alice):
    """Past its column's range an integer was a 500 (SQLite's OverflowError, PostgreSQL's out of range) or, on
    PostgreSQL, stored wrapped to 32 bits (rpm 2**32 + 7 answered 200 and kept 7)."""
    key = ApiTokenFactory(user=alice, name="app", scopes=["gateway"])
    prompt = PromptFactory(owner=alice, name="support", content="Answer briefly.", labels=["production"])
    dataset = DatasetFactory(owner=alice)
    DatasetItemFactory(dataset=dataset, input="question", expected_output="answer")
    limits, budget = f"/api/v1/keys/{key.uid}/limits/", {"scope": "user", "period": "day"}
    experiment = {"name": "big", "dataset": str(dataset.pk), "start": False}
    cases = [
        ("post", "/api/v1/budgets/", {**budget, "limit_tokens": 2**63}, "limit_tokens"),
        ("post", "/api/v1/budgets/", {**budget, "limit_tokens": 10**30}, "limit_tokens"),
        ("put", limits, {"rpm": 2**31}, "rpm"),
        ("put", limits, {"rpm": 2**32 + 7}, "rpm"),
        ("put", limits, {"tpm": 2**63}, "tpm"),
        ("put", limits, {"per_model": {"gpt-4o-mini": {"rpm": 10**30}}}, "per_model.gpt-4o-mini.rpm"),
        ("put", "/api/v1/prompts/support/labels/production/", {"version": 2**32 + 1}, "version"),
        ("put", "/api/v1/prompts/support/labels/production/", {"split": {"1": 50, str(2**32 + 1): 50}}, "split"),
        ("post", "/api/v1/experiments/", {**experiment, "targets": [
            {"prompt": {"name": "support", "version": 2**32 + 1}}]}, "targets.0.prompt.version"),
        ("post", "/api/v1/collections/", {"name": "c", "chunk_size": 2**63}, "chunk_size"),
    ]
    before = (Budget.objects.count(), KeyLimits.objects.count(), Experiment.objects.count(),
              list(PromptLabel.objects.values_list("name", "version_id", "split")))

    for method, url, body, path in cases:
        details = assert_error(getattr(api, method)(url, body, format="json"), 400, "validation_error")
        assert path in [item["path"] for item in details], (body, details)

    assert (Budget.objects.count(), KeyLimits.objects.count(), Experiment.objects.count(),
            list(PromptLabel.objects.values_list("name", "version_id", "split"))) == before
    # The most each column holds is taken and read back as it was sent.
    assert api.put(limits, {"rpm": INT_MAX, "tpm": INT_MAX}, format="json").status_code == 200
    assert (api.get(limits).json()["rpm"], KeyLimits.objects.get().tpm) == (INT_MAX, INT_MAX)
    assert api.post("/api/v1/budgets/", {**budget, "limit_tokens": BIGINT_MAX}, format="json").status_code == 201
    assert api.get("/api/v1/budgets/").json()["results"][0]["limit_tokens"] == BIGINT_MAX


NUL_IN_PATH_OR_QUERY = [
    "/api/v1/pricing/in-force/?provider=%00&model=x", "/api/v1/conversations/?title=a%00b",
    "/api/v1/workflows/templates/%00/", "/api/v1/conversations/%00/messages/", "/api/v1/executions/?%00=1",
    "/langgraph/threads/%00", "/langgraph/store/items?namespace=a%00&key=b", "/langgraph/assistants/a%00b",
    "/v1/models?x=%00",
]


@pytest.mark.parametrize("url", NUL_IN_PATH_OR_QUERY)
def test_it_refuses_a_nul_in_a_path_or_query_string_in_the_surfaces_shape(alice, url, caplog):
    key = ApiTokenFactory(user=alice).key
    response = Client().get(url, HTTP_AUTHORIZATION=f"Bearer {key}", HTTP_X_API_KEY=key)

    assert response.status_code == 400
    body = assert_surface_error(response.status_code, response["Content-Type"], response.content,
                                path=url.split("?")[0])
    assert "NUL" in json.dumps(body)
    # the client's bad input: one warning line (Django logs it as an ERROR with a traceback)
    [record] = [record for record in caplog.records if record.name.startswith("django.security")]
    assert (record.levelname, record.exc_info) == ("WARNING", None)
    assert record.getMessage().endswith("contains a NUL character")


@pytest.mark.parametrize("body", [
    '{"metadata": {"k": "nul\\u0000byte"}}', '{"metadata": {"nul\\u0000key": 1}}',
    '{"metadata": {"k": "lone \\ud800 surrogate"}}', '{"metadata": {"k": NaN}}', '{"metadata": {}, "metadata": {}}',
    '{"metadata": {"k": 1e309}}',
    "[" * 100_000,
])
def test_it_refuses_json_no_column_can_hold_on_langgraph_with_a_422_and_no_row(alice, body):
    key = ApiTokenFactory(user=alice).key
    client = Client()
    before = row_counts(), StoreItem.objects.count()

    for method, path, sent in [("post", "/langgraph/threads", body), ("post", "/langgraph/threads/search", body),
                               ("put", "/langgraph/store/items", body.replace('"metadata"', '"value"').replace(
                                   "{", '{"namespace": ["n"], "key": "k", ', 1))]:
        response = getattr(client, method)(path, sent, content_type="application/json", HTTP_X_API_KEY=key)
        assert response.status_code == 422, (path, sent[:80], response.content)
        assert_surface_error(response.status_code, response["Content-Type"], response.content, path=path)
    assert (row_counts(), StoreItem.objects.count()) == before


@pytest.mark.django_db(transaction=True)
def test_a_real_server_refuses_a_nul_in_a_path_or_query_string(shared_daphne_server, alice):
    """Through daphne, as an attacker sends it: the ASGI path of the same refusal."""
    server = shared_daphne_server()
    key = ApiTokenFactory(user=alice).key
    headers = {"Authorization": f"Bearer {key}", "x-api-key": key}
    for url in NUL_IN_PATH_OR_QUERY:
        response = httpx.get(f"{server.base_url}{url}", headers=headers)
        assert response.status_code == 400, (url, response.text)
        assert_surface_error(response.status_code, response.headers["content-type"], response.content,
                             path=url.split("?")[0])


@pytest.mark.parametrize("method, url, body", [
    ("get", "/langgraph/threads/{thread}/runs?offset=" + "9" * 40, None),
    ("get", "/langgraph/threads/{thread}/runs?limit=1e400", None),
    ("get", "/langgraph/threads/{thread}/history?limit=" + "9" * 40, None),
    ("post", "/langgraph/threads/search", {"offset": 10**40}),
    ("post", "/langgraph/store/items/search", {"offset": 2**63}),
])
def test_it_refuses_a_limit_or_offset_past_what_sql_takes_on_langgraph_with_a_422(alice, method, url, body):
    key = ApiTokenFactory(user=alice).key
    client = Client()
    thread = client.post("/langgraph/threads", "{}", content_type="application/json", HTTP_X_API_KEY=key).json()
    path = url.format(thread=thread["thread_id"])

    response = getattr(client, method)(path, json.dumps(body) if body else None, content_type="application/json",
                                       HTTP_X_API_KEY=key)

    assert response.status_code == 422, response.content
    assert_surface_error(response.status_code, response["Content-Type"], response.content, path=path)


CONDITIONS = {
    "deep_parens": "(" * 5000 + "has_tool_calls" + ")" * 5000,
    "long_chain": "has_tool_calls and " * 3000 + "true",
    "python": "__import__('os').system('touch /tmp/pwned')",
    "dunder": "state.__class__.__mro__",
    "power": "9 ** 9 ** 9 ** 9 > 1",
    "huge_number": "1" * 5000 + " > 1",
    "unterminated": "output == 'abc",
    "only_ops": "and or not ( ) == !=",
    "unicode": "\u202e\u0000has_tool_calls",
}


@pytest.mark.parametrize("name", sorted(CONDITIONS))
def test_crafted_conditions_are_rejected_cleanly(api, name):
    edges = [{"source": "start", "target": "llm"}, {"source": "llm", "target": "end", "condition": CONDITIONS[name]},
             {"source": "llm", "target": "end"}]
    body = json.dumps({"nodes": NODES, "edges": edges})

    checked = api.post("/api/v1/workflows/definitions/validate/", body, content_type="application/json")
    created = api.post("/api/v1/workflows/definitions/", json.dumps(
        {"name": "x", "nodes": NODES, "edges": edges}), content_type="application/json")
    run = api.post("/api/v1/executions/", json.dumps({"graph": {"nodes": NODES, "edges": edges}}),
                   content_type="application/json")

    if checked.status_code == 200:
        assert checked.json()["valid"] is False and checked.json()["errors"], name
    else:
        assert checked.status_code == 400, (name, checked.content)
    assert created.status_code == 400 and run.status_code == 400, name
    assert not WorkflowDefinition.objects.exists()


def test_huge_graphs_are_refused_with_a_clear_error(api):
    nodes = [{"id": "start", "type": "start"}] + [{"id": f"n{i}", "type": "delay"} for i in range(500)] + [
        {"id": "end", "type": "end"}]
    edges = [{"source": a["id"], "target": b["id"]} for a, b in zip(nodes, nodes[1:])]
    details = assert_error(api.post("/api/v1/workflows/definitions/", {"name": "big", "nodes": nodes, "edges": edges},
                                    format="json"), 400, "invalid_graph")
    assert "too_large" in {d["code"] for d in details}
    many_edges = [{"source": "start", "target": "llm"}] * 20000
    response = api.post("/api/v1/workflows/definitions/validate/", {"nodes": NODES, "edges": many_edges},
                        format="json")
    assert response.status_code == 200, response.content  # ~760 kB: under CHATTER_MAX_REQUEST_BYTES, so validated
    assert response.json()["valid"] is False
    assert not WorkflowDefinition.objects.exists()


def test_wrong_types_in_every_field_are_400s(api):
    before = row_counts()
    for url, body in [
        ("/api/v1/chat/", {"message": ["a"]}), ("/api/v1/chat/", {"message": "hi", "temperature": "hot"}),
        ("/api/v1/chat/", {"message": "hi", "conversation_id": "'; --"}),
        ("/api/v1/executions/", {"graph": "nodes"}), ("/api/v1/executions/", {"template": {"k": 1}}),
        ("/api/v1/conversations/", {"title": {"a": 1}}), ("/api/v1/documents/", {"title": 5, "content": None}),
        ("/api/v1/schedules/", {"name": "s", "template": "summarize", "cron": "* * * * * * *"}),
        ("/api/v1/workflows/templates/", {"key": "../x", "name": "x", "graph": []}),
    ]:
        response = api.post(url, body, format="json")
        assert response.status_code == 400, (url, body, response.content)
    assert api.post("/api/v1/chat/", [1, 2, 3], format="json").status_code == 400
    assert api.post("/api/v1/chat/", "just a string", format="json").status_code == 400
    assert row_counts() == before
