"""A graph's `model` node takes a stored prompt by name and label (or version), fetched when it runs: a label move
reaches the next run, the version's config fills what the node leaves open, and every LLM call names the version."""
import pytest

from tests.api.conftest import assert_error
from tests.invariants import assert_all
from tests.prompts.conftest import prompt_graph
from workflows.models import LLMCall, WorkflowExecution
from workflows.services.run_requests import ExecutionRequest

pytestmark = pytest.mark.django_db
OPENAI = {"provider": "openai", "model": "gpt-4o-mini"}
USAGE = {"prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35}


def run(api, graph: dict, *, variables=None, config=None, **extra) -> dict:
    response = api.post("/api/v1/executions/", {
        "graph": graph, "input": {"message": "Which one?", "variables": variables or {}}, "config": config or {},
        "mode": "sync", **extra}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["execution"]


def define(api, graph: dict) -> str:
    response = api.post("/api/v1/workflows/definitions/", {"name": "support bot", **graph}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def test_a_label_move_is_picked_up_by_the_next_run_and_every_call_names_its_version(api, alice, support,
                                                                                   openai_server):
    definition = define(api, prompt_graph({"name": "support", "label": "production"}))
    v1, v2 = support.versions.get(version=1), support.versions.get(version=2)
    openai_server.reply(content="Kettle A.", usage=USAGE).reply(content="A.", usage=USAGE)
    body = {"definition_id": definition, "input": {"message": "Which one?", "variables": {"topic": "kettles"}},
            "config": OPENAI, "mode": "sync"}

    first = api.post("/api/v1/executions/", body, format="json").json()["execution"]
    assert api.put("/api/v1/prompts/support/labels/production/", {"version": 2}, format="json").status_code == 200
    second = api.post("/api/v1/executions/", body, format="json").json()["execution"]

    sent = [request.body for request in openai_server.requests]
    assert [r["messages"][0] for r in sent] == [{"role": "system", "content": "You answer about kettles."},
                                                 {"role": "system", "content": "Be terse about kettles."}]
    assert [r["messages"][1]["content"] for r in sent] == ["Which one?", "Which one?"]
    assert [r["temperature"] for r in sent] == [0.1, 0.7] and sent[1]["max_completion_tokens"] == 50
    assert [first["prompt_version"], second["prompt_version"]] == [str(v1.pk), str(v2.pk)]
    for execution, version in ((first, v1), (second, v2)):
        detail = api.get(f"/api/v1/executions/{execution['id']}/").json()
        assert [call["prompt_version"] for call in detail["llm_call_log"]] == [str(version.pk)]
        assert_all(WorkflowExecution.objects.get(pk=execution["id"]))


def test_the_nodes_own_keys_win_over_the_versions_config(api, alice, support, openai_server):
    openai_server.reply(content="ok", usage=USAGE)
    graph = prompt_graph({"name": "support", "version": 2})
    graph["nodes"][1]["config"]["temperature"] = 0.0

    run(api, graph, config=OPENAI)

    sent = openai_server.last_request.body
    assert sent["temperature"] == 0.0 and sent["max_completion_tokens"] == 50


def test_a_chat_turn_with_a_prompted_definition_records_the_version_on_every_call(api, alice, support):
    graph = prompt_graph({"name": "support", "label": "latest"})
    graph["nodes"].insert(1, {"id": "memory", "type": "memory"})
    graph["edges"] = [{"source": "start", "target": "memory"}, {"source": "memory", "target": "llm"},
                      {"source": "llm", "target": "end"}]
    definition = define(api, graph)

    first = api.post("/api/v1/chat/", {"message": "hello", "definition_id": definition}, format="json")
    conversation = first.json()["conversation"]["id"]
    second = api.post("/api/v1/chat/", {"message": "again", "definition_id": definition,
                                        "conversation_id": conversation}, format="json")

    assert second.status_code == 201
    calls = LLMCall.objects.filter(execution__conversation_id=conversation)
    assert calls.count() == 2 and set(calls.values_list("prompt_version__version", flat=True)) == {2}
    assert_all(WorkflowExecution.objects.get(pk=second.json()["execution"]["id"]))


def test_an_inline_prompt_records_no_version(api, alice):
    execution = run(api, {"nodes": [{"id": "start", "type": "start"},
                                     {"id": "llm", "type": "model", "config": {"system_message": "Be brief."}},
                                     {"id": "end", "type": "end"}],
                          "edges": [{"source": "start", "target": "llm"}, {"source": "llm", "target": "end"}]})

    assert execution["prompt_version"] is None
    assert list(LLMCall.objects.values_list("prompt_version", flat=True)) == [None]


def test_item_16_a_prompt_that_is_not_the_owners_is_refused_before_any_run_as_a_missing_one(bob_api, bob, support):
    """Issue 43 item 16: refused at once (it was a run that failed when it ran), in the words a missing one gets."""
    def ask(name: str):
        return bob_api.post("/api/v1/executions/", {
            "graph": prompt_graph({"name": name, "label": "production"}), "input": {"message": "hi"},
            "mode": "sync"}, format="json")

    foreign, missing = ask("support"), ask("nothing-here")

    details = assert_error(foreign, 400, "validation_error")
    assert [(d["code"], d["message"]) for d in details] == [("not_found", "prompt 'support' not found")]
    assert foreign.json()["error"]["message"].replace("support", "X") == \
        missing.json()["error"]["message"].replace("nothing-here", "X")
    assert not WorkflowExecution.objects.filter(owner=bob).exists()


@pytest.mark.parametrize("ref", [{"label": "production"}, {"name": "support", "label": "x", "version": 2},
                                 {"name": "no spaces allowed"}, {"name": "support", "version": 0}, "support"])
def test_a_bad_prompt_reference_is_a_400_before_any_row(api, alice, support, ref):
    before = WorkflowExecution.objects.count()

    response = api.post("/api/v1/executions/", {"graph": prompt_graph(ref), "input": {"message": "hi"}},
                        format="json")

    details = assert_error(response, 400, "invalid_graph")
    assert any(".config.prompt" in item["path"] for item in details), details
    assert WorkflowExecution.objects.count() == before


def test_a_python_graph_fetches_a_prompt_and_its_calls_name_the_version(api, alice, support, openai_server,
                                                                         settings, monkeypatch):
    from pathlib import Path

    settings.CHATTER_GRAPHS = {"prompted": (str(Path(__file__).parent / "graphs.py"), "graph")}
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    openai_server.reply(content="Teapot B.", usage=USAGE)
    graph = {"nodes": [{"id": "start", "type": "start"},
                       {"id": "py", "type": "python_graph", "config": {"graph": "prompted"}},
                       {"id": "end", "type": "end"}],
             "edges": [{"source": "start", "target": "py"}, {"source": "py", "target": "end"}]}

    execution = run(api, graph)

    sent = openai_server.last_request.body
    assert sent["messages"][0] == {"role": "system", "content": "You answer about teapots."}
    assert sent["temperature"] == 0.1
    version = support.versions.get(version=1)
    assert execution["status"] == "completed" and execution["prompt_version"] == str(version.pk)
    assert list(LLMCall.objects.values_list("prompt_version", flat=True)) == [version.pk]
    assert_all(WorkflowExecution.objects.get(pk=execution["id"]))


def test_prompt_fetch_outside_a_run_says_so():
    from core.errors import RunError
    from engine.graph_prompts import prompt_fetch

    with pytest.raises(RunError, match="inside a node"):
        prompt_fetch("support")


@pytest.mark.django_db(transaction=True)  # the run streams on its own thread, with its own connection
def test_a_call_swept_mid_stream_still_names_its_prompt_version(alice, support, openai_server, monkeypatch,
                                                                settings):
    """The worker's process is as good as gone (its run swept while the call streams): the call the sweep records
    from what the node row said it sent carries the version too."""
    import threading
    import time

    from django.db import connections

    from tests.workflows.test_background_runs import wait_for
    from tests.workflows.test_sweep import beats_stopped, sweeps_a_sweep_interval_apart
    from workflows import heartbeat, recorder
    from workflows.services.recovery import HEARTBEAT_LOST_S
    from workflows.services.runs import execution_create, execution_stream

    settings.CHATTER_RESUME_ATTEMPTS = 0  # the sweep ends the run rather than queueing it again
    monkeypatch.setattr(heartbeat, "HEARTBEAT_S", 0.2)
    monkeypatch.setattr(recorder, "heartbeat", heartbeat._Heartbeat())  # not one still asleep for 5 s
    openai_server.reply(content="one two three four five six seven eight", usage=USAGE, chunk_delay_s=0.3)
    execution = execution_create(ExecutionRequest(owner=alice, graph=prompt_graph({"name": "support"}),
                                                  message="Which one?", mode="stream", config=OPENAI))
    reader = threading.Thread(target=lambda: (list(execution_stream(execution_id=execution.pk)),
                                              connections.close_all()), daemon=True)
    reader.start()
    row = WorkflowExecution.objects.filter(pk=execution.pk)
    assert wait_for(lambda: len(row.get().stream_progress.get("text", "")) > 3, timeout=15)
    beats_stopped(execution, recorder.heartbeat)  # cut off from the database, as far as the sweeps can tell

    assert [e.pk for e in sweeps_a_sweep_interval_apart(from_s=HEARTBEAT_LOST_S + 1)] == [execution.pk]
    reader.join(15)
    time.sleep(1)  # the worker sees the sweep at its next chunk and stops

    execution.refresh_from_db()
    call = LLMCall.objects.get(execution=execution)
    assert (execution.status, call.estimated) == ("failed", True)
    assert call.prompt_version == execution.prompt_version == support.versions.get(version=1)
    assert_all(execution)
