"""Hostile input through the public surface: every answer is a clear 4xx or a faithful store — never a 5xx,
never stored damage. (Oversized and malformed bodies: tests/api/test_request_limits.py; garbage websocket
frames: tests/realtime/test_websockets.py.)"""
import json

import pytest
from django.db import connection

from conversations.models import Conversation, Document, Message
from tests.api.conftest import assert_error, row_counts
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
    assert response.status_code in (200, 413)
    if response.status_code == 200:
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
