"""A `human_input` node (docs/operations/durable-runs.md): the run pauses `waiting` with an `input_required` event,
holds nothing while it waits, and POST /api/v1/executions/<id>/resume/ goes on with it from its checkpoint; a bad
answer is a 400 that writes nothing; an unanswered question ends the run at its timeout (the recovery sweep)."""
from datetime import timedelta
from io import StringIO

import httpx
import pytest
from django.core.management import call_command
from django.utils import timezone

from audit.models import AuditEvent
from conversations.models import Message
from tests.api.conftest import assert_error
from tests.api.sse import parse_sse
from tests.factories import ApiTokenFactory
from tests.invariants import assert_all
from tests.schema_host import schema_host  # noqa: F401 (a fixture)
from workflows.models import Checkpoint, ExecutionEvent, LLMCall, NodeExecution, WorkflowExecution
from workflows.services.recovery import execution_sweep

pytestmark = pytest.mark.django_db
URL = "/api/v1/executions/"
# model → ask (a number from 1 to 10) → model: an LLM call before the pause and one after.
ASKING = {
    "nodes": [{"id": "start", "type": "start"}, {"id": "first", "type": "model"},
              {"id": "ask", "type": "human_input", "config": {
                  "prompt": "How many?", "schema": {"type": "integer", "minimum": 1, "maximum": 10},
                  "timeout_s": 3600, "variable": "count"}},
              {"id": "second", "type": "model"}, {"id": "end", "type": "end"}],
    "edges": [{"source": "start", "target": "first"}, {"source": "first", "target": "ask"},
              {"source": "ask", "target": "second"}, {"source": "second", "target": "end"}],
}


def start(api, **extra) -> dict:
    response = api.post(URL, {"graph": ASKING, "input": {"message": "hello"}, **extra}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["execution"]


def reconcile() -> None:
    out = StringIO()
    call_command("reconcile_aggregates", stdout=out, stderr=out)  # exits 1 on any drift


def test_a_run_pauses_waiting_and_an_answer_completes_it(api):
    paused = start(api)

    assert paused["status"] == "waiting" and paused["llm_calls"] == 1
    question = paused["output_data"]["input_required"][0]
    assert (question["node_id"], question["prompt"]) == ("ask", "How many?")
    row = WorkflowExecution.objects.get(pk=paused["id"])
    events = list(row.events.order_by("seq").values_list("event", "data"))
    assert events[-1] == ("input_required", {"node_id": "ask", "interrupt_id": question["interrupt_id"],
                                              "prompt": "How many?", "schema": ASKING["nodes"][2]["config"]["schema"]})
    assert Checkpoint.objects.filter(execution=row, kind="write", channel="__interrupt__").exists()
    first_call = LLMCall.objects.get(execution=row)

    response = api.post(f"{URL}{paused['id']}/resume/", {"answer": 3}, format="json")

    assert response.status_code == 200, response.content
    done = response.json()["execution"]
    assert done["status"] == "completed" and done["llm_calls"] == 2
    assert done["output_data"]["variables"] == {"count": 3}
    row.refresh_from_db()
    assert LLMCall.objects.filter(execution=row).count() == 2 and LLMCall.objects.filter(pk=first_call.pk).exists()
    assert row.total_tokens == sum(LLMCall.objects.filter(execution=row).values_list("total_tokens", flat=True))
    nodes = list(NodeExecution.objects.filter(execution=row).order_by("index").values_list("node_id", "status"))
    assert nodes == [("start", "completed"), ("first", "completed"), ("ask", "completed"),
                     ("second", "completed"), ("end", "completed")]  # the node that waited kept its one row
    names = [name for name, _ in row.events.order_by("seq").values_list("event", "data")]
    assert names.count("workflow_started") == 1 and "workflow_resumed" in names
    assert_all(row)  # seq 1..n without a gap across the pause, node sums = the run's, aggregates exact
    reconcile()


def test_a_schema_violating_answer_is_a_400_that_writes_nothing(api):
    paused = start(api)
    before = (ExecutionEvent.objects.count(), Checkpoint.objects.count(), AuditEvent.objects.count(),
              list(WorkflowExecution.objects.values_list("status", "total_tokens")))

    for body, path in (({"answer": 11}, "answer"), ({"answer": "three"}, "answer"),
                       ({"answers": {"no-such-id": 3}}, "answers.no-such-id")):
        details = assert_error(api.post(f"{URL}{paused['id']}/resume/", body, format="json"), 400, "validation_error")
        assert details[0]["path"] == path, details
    assert_error(api.post(f"{URL}{paused['id']}/resume/", {"answer": 1, "answers": {}}, format="json"), 400,
                 "validation_error")

    assert (ExecutionEvent.objects.count(), Checkpoint.objects.count(), AuditEvent.objects.count(),
            list(WorkflowExecution.objects.values_list("status", "total_tokens"))) == before


def test_a_schema_ref_outside_itself_is_refused_and_never_fetched(api, schema_host):
    host, asked = schema_host
    graph = {**ASKING, "nodes": [dict(n) for n in ASKING["nodes"]]}
    graph["nodes"][2] = {**graph["nodes"][2], "config": {"prompt": "How many?", "schema": {
        "$defs": {"count": {"type": "integer"}}, "properties": {"n": {"$ref": f"{host}/internal-only/x.json"}}}}}

    details = assert_error(api.post(URL, {"graph": graph, "input": {"message": "hello"}}, format="json"), 400,
                           "invalid_graph")
    assert details[0]["path"] == "nodes[2].config.schema" and "$ref" in details[0]["message"], details
    assert WorkflowExecution.objects.count() == 0

    # A run asking with a schema stored before such refs were refused (or one whose pointer leads nowhere): its
    # answer is a 400 naming the question, nothing is fetched, the run still waits (cancel or timeout end it).
    for ref in (f"{host}/internal-only/x.json", "http://127.0.0.1:1/unreachable.json", "#/$defs/missing"):
        paused = start(api)
        row = WorkflowExecution.objects.get(pk=paused["id"])
        row.output_data["input_required"][0]["schema"] = {"$ref": ref}
        row.save(update_fields=["output_data"])

        details = assert_error(api.post(f"{URL}{row.pk}/resume/", {"answer": 3}, format="json"), 400,
                               "validation_error")

        assert (details[0]["path"], details[0]["code"]) == ("answer", "bad_schema"), details
        row.refresh_from_db()
        assert row.status == "waiting"
    assert asked == []


def test_answers_by_interrupt_id_and_a_second_answer_is_a_409(api):
    paused = start(api)
    interrupt_id = paused["output_data"]["input_required"][0]["interrupt_id"]

    response = api.post(f"{URL}{paused['id']}/resume/", {"answers": {interrupt_id: 7}}, format="json")
    assert response.json()["execution"]["output_data"]["variables"] == {"count": 7}

    assert_error(api.post(f"{URL}{paused['id']}/resume/", {"answer": 7}, format="json"), 409, "not_waiting")


def test_only_the_owner_may_answer(api, bob_api):
    paused = start(api)
    assert_error(bob_api.post(f"{URL}{paused['id']}/resume/", {"answer": 3}, format="json"), 404, "not_found")
    assert WorkflowExecution.objects.get(pk=paused["id"]).status == "waiting"


@pytest.mark.django_db(transaction=True)
async def test_a_streamed_run_ends_its_stream_at_the_question(async_client, alice):
    await async_client.aforce_login(alice)

    response = await async_client.post(URL, {"graph": ASKING, "input": {"message": "hello"}, "mode": "stream"},
                                       content_type="application/json")

    frames = parse_sse(b"".join([c async for c in response.streaming_content]).decode())
    persisted = [f for f in frames if f.id is not None]
    assert persisted[-1].event == frames[-1].event == "input_required"  # the stream ends: nobody waits on it
    execution = await WorkflowExecution.objects.aget(owner=alice)
    assert execution.status == "waiting"
    assert frames[-1].envelope["data"]["interrupt_id"] == execution.output_data["input_required"][0]["interrupt_id"]
    assert [f.envelope["seq"] for f in persisted] == list(range(1, await execution.events.acount() + 1))


@pytest.mark.django_db(transaction=True)
async def test_a_streamed_answer_streams_the_rest_of_the_run(async_client, alice):
    await async_client.aforce_login(alice)
    response = await async_client.post(URL, {"graph": ASKING, "input": {"message": "hello"}},
                                       content_type="application/json")
    paused = response.json()["execution"]
    seqs_before = await ExecutionEvent.objects.filter(execution_id=paused["id"]).acount()

    response = await async_client.post(f"{URL}{paused['id']}/resume/", {"answer": 2, "mode": "stream"},
                                       content_type="application/json")

    assert response["Content-Type"] == "text/event-stream"
    frames = parse_sse(b"".join([c async for c in response.streaming_content]).decode())
    persisted = [f for f in frames if f.id is not None]
    execution = await WorkflowExecution.objects.aget(pk=paused["id"])
    assert [f.envelope["seq"] for f in persisted] == list(range(seqs_before + 1, await execution.events.acount() + 1))
    assert persisted[0].event == "workflow_resumed" and persisted[-1].event == "workflow_completed"
    assert execution.status == "completed" and execution.llm_calls == 2


def test_a_waiting_run_holds_no_slot_and_can_be_cancelled(api):
    paused = start(api)
    response = api.post(f"{URL}{paused['id']}/cancel/")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    row = WorkflowExecution.objects.get(pk=paused["id"])
    assert NodeExecution.objects.get(execution=row, node_id="ask").status == "failed"
    assert_all(row)
    reconcile()


@pytest.mark.parametrize("on_timeout, status", [("fail", "failed"), ("cancel", "cancelled")])
def test_an_unanswered_question_ends_the_run_at_its_timeout(api, on_timeout, status):
    graph = {**ASKING, "nodes": [dict(n) for n in ASKING["nodes"]]}
    graph["nodes"][2] = {**graph["nodes"][2], "config": {**graph["nodes"][2]["config"], "on_timeout": on_timeout}}
    paused = api.post(URL, {"graph": graph, "input": {"message": "hello"}}, format="json").json()["execution"]

    assert execution_sweep(now=timezone.now() + timedelta(seconds=3000)) == []  # before its timeout: it waits
    ended = execution_sweep(now=timezone.now() + timedelta(seconds=3601))

    assert [(e.pk, e.status) for e in ended] == [(WorkflowExecution.objects.get(pk=paused["id"]).pk, status)]
    row = WorkflowExecution.objects.get(pk=paused["id"])
    if on_timeout == "fail":
        assert row.error_type == "input_timeout"
    assert row.llm_calls == 1
    assert_all(row)
    reconcile()


@pytest.mark.django_db(transaction=True)
def test_an_answer_sent_to_another_server_after_the_first_was_killed_completes_the_run(daphne_server, alice):
    key = ApiTokenFactory(user=alice).key
    headers = {"Authorization": f"Token {key}"}
    first = daphne_server()
    with httpx.Client(base_url=first.base_url, headers=headers, timeout=30) as client:
        conversation = client.post("/api/v1/conversations/", json={"title": "asking"}).json()["id"]
        response = client.post(URL, json={"graph": ASKING, "conversation_id": conversation,
                                          "input": {"message": "hello"}})
    assert response.status_code == 201, response.text
    paused = response.json()["execution"]
    assert paused["status"] == "waiting"
    first.process.kill()  # SIGKILL: nothing of the run lives on in a process
    first.process.wait(10)

    second = daphne_server()
    with httpx.Client(base_url=second.base_url, headers=headers, timeout=30) as client:
        response = client.post(f"{URL}{paused['id']}/resume/", json={"answer": 4})

    assert response.status_code == 200, response.text
    execution = WorkflowExecution.objects.get(pk=paused["id"])
    assert execution.status == "completed" and execution.llm_calls == 2
    assert execution.output_data["variables"] == {"count": 4}
    user, reply = Message.objects.filter(conversation=conversation).order_by("sequence")
    assert (user.role, user.content, reply.role) == ("user", "hello", "assistant")
    assert reply.total_tokens == execution.total_tokens > 0 and reply.cost == execution.cost
    assert_all(execution)
    reconcile()
    assert "Traceback" not in second.log.read_text()


@pytest.mark.django_db(transaction=True)
def test_a_background_answer_is_accepted_and_a_worker_goes_on_with_the_run(api):
    paused = start(api)

    response = api.post(f"{URL}{paused['id']}/resume/", {"answer": 5, "mode": "background"}, format="json")

    assert response.status_code == 202, response.content
    assert response["Location"] == response.json()["links"]["self"]
    execution = WorkflowExecution.objects.get(pk=paused["id"])  # the test queue runs the task at once
    assert execution.status == "completed" and execution.output_data["variables"] == {"count": 5}
    assert_all(execution)


def test_a_background_answer_waits_on_the_run_while_the_workers_are_busy_and_the_sweep_keeps_it(api):
    from tests.workflows.test_sweep import waiting_in_the_queue
    from workflows.tasks import execution_run_task

    paused = start(api)
    interrupt_id = paused["output_data"]["input_required"][0]["interrupt_id"]

    response = api.post(f"{URL}{paused['id']}/resume/", {"answer": 5, "mode": "background"}, format="json")

    assert response.status_code == 202, response.content
    assert response.json()["status"] == "pending"  # no process runs it until a worker takes it
    execution = waiting_in_the_queue(WorkflowExecution.objects.get(pk=paused["id"]))  # every worker is busy
    assert execution.output_data["answers"] == {interrupt_id: 5}
    # The sweep runs meanwhile: the run's task waits for a worker, and the answer with the run.
    assert execution_sweep(now=timezone.now() + timedelta(seconds=40)) == []
    execution.refresh_from_db()
    assert (execution.status, execution.resume_attempts) == ("pending", 0)

    assert execution_run_task(str(execution.pk)) == "completed"  # a worker is free: it takes the run's task

    execution.refresh_from_db()
    assert execution.output_data["variables"] == {"count": 5} and "answers" not in execution.output_data
    assert execution.events.get(event="workflow_resumed").data == {"answered": [interrupt_id]}
    assert execution.llm_calls == 2
    assert_all(execution)
    assert execution_run_task(str(execution.pk)) == "completed"  # a second delivery finds it claimed


def test_a_background_answer_whose_task_was_lost_is_queued_again_by_the_sweep(api):
    paused = start(api)  # a sync run, answered in background mode
    response = api.post(f"{URL}{paused['id']}/resume/", {"answer": 4, "mode": "background"}, format="json")
    assert response.status_code == 202, response.content
    # Its task never reached a worker (this test's transaction never commits, as a process that died before it sent it).

    assert execution_sweep(now=timezone.now() + timedelta(seconds=31)) == []  # queued again (run at once here)

    execution = WorkflowExecution.objects.get(pk=paused["id"])
    assert execution.status == "completed" and execution.output_data["variables"] == {"count": 4}
    assert_all(execution)


# Two questions at once: parallel branches (edges marked `parallel`) each reach a human_input node.
TWO_QUESTIONS = {
    "nodes": [{"id": "start", "type": "start"},
              {"id": "name", "type": "human_input", "config": {"prompt": "Your name?", "schema": {"type": "string"}}},
              {"id": "age", "type": "human_input", "config": {"prompt": "Your age?", "schema": {"type": "integer"}}},
              {"id": "reply", "type": "model"}, {"id": "end", "type": "end"}],
    "edges": [{"source": "start", "target": "name", "parallel": True},
              {"source": "start", "target": "age", "parallel": True},
              {"source": "name", "target": "reply"}, {"source": "age", "target": "reply"},
              {"source": "reply", "target": "end"}],
}


def asked(execution: dict) -> dict:
    return {q["node_id"]: q["interrupt_id"] for q in execution["output_data"]["input_required"]}


@pytest.mark.django_db(transaction=True)
def test_two_questions_of_parallel_branches_are_answered_by_interrupt_id(api):
    paused = api.post(URL, {"graph": TWO_QUESTIONS, "input": {"message": "hello"}}, format="json").json()["execution"]
    assert paused["status"] == "waiting"
    ids = asked(paused)
    assert set(ids) == {"name", "age"} and len(set(ids.values())) == 2
    events = ExecutionEvent.objects.filter(execution_id=paused["id"], event="input_required")
    assert {e.data["interrupt_id"] for e in events} == set(ids.values())
    details = assert_error(api.post(f"{URL}{paused['id']}/resume/", {"answer": "Ada"}, format="json"), 400,
                           "validation_error")
    assert details[0]["path"] == "answers"  # two wait: which one is meant must be said
    details = assert_error(api.post(f"{URL}{paused['id']}/resume/", {"answers": {
        ids["name"]: "Ada", ids["age"]: "old"}}, format="json"), 400, "validation_error")
    assert details[0]["path"] == f"answers.{ids['age']}"  # one bad answer: nothing of either is taken

    response = api.post(f"{URL}{paused['id']}/resume/", {"answers": {ids["name"]: "Ada", ids["age"]: 36}},
                        format="json")

    assert response.status_code == 200, response.content
    done = response.json()["execution"]
    assert done["status"] == "completed" and done["output_data"]["variables"] == {"name": "Ada", "age": 36}
    assert done["llm_calls"] == 1  # the branches join: the reply node runs once
    row = WorkflowExecution.objects.get(pk=paused["id"])
    nodes = sorted(NodeExecution.objects.filter(execution=row).values_list("node_id", "status"))
    assert nodes == [("age", "completed"), ("end", "completed"), ("name", "completed"), ("reply", "completed"),
                     ("start", "completed")]
    assert_all(row)
    reconcile()


@pytest.mark.django_db(transaction=True)
def test_answering_one_of_two_questions_leaves_the_run_waiting_on_the_other(api):
    paused = api.post(URL, {"graph": TWO_QUESTIONS, "input": {"message": "hello"}}, format="json").json()["execution"]
    ids = asked(paused)

    still = api.post(f"{URL}{paused['id']}/resume/", {"answers": {ids["age"]: 36}}, format="json").json()["execution"]

    assert still["status"] == "waiting" and list(asked(still)) == ["name"]
    assert still["llm_calls"] == 0
    done = api.post(f"{URL}{paused['id']}/resume/", {"answer": "Ada"}, format="json").json()["execution"]
    assert done["status"] == "completed" and done["output_data"]["variables"] == {"name": "Ada", "age": 36}
    assert done["llm_calls"] == 1
    assert_all(WorkflowExecution.objects.get(pk=paused["id"]))
    reconcile()


@pytest.mark.django_db(transaction=True)
def test_parallel_model_branches_are_each_recorded_once_and_add_up(api):
    graph = {"nodes": [{"id": "start", "type": "start"}, {"id": "a", "type": "model"}, {"id": "b", "type": "model"},
                       {"id": "end", "type": "end"}],
             "edges": [{"source": "start", "target": "a", "parallel": True},
                       {"source": "start", "target": "b", "parallel": True},
                       {"source": "a", "target": "end"}, {"source": "b", "target": "end"}]}

    done = api.post(URL, {"graph": graph, "input": {"message": "hello"}}, format="json").json()["execution"]

    assert done["status"] == "completed" and done["llm_calls"] == 2
    row = WorkflowExecution.objects.get(pk=done["id"])
    assert sorted(NodeExecution.objects.filter(execution=row).values_list("node_id", "llm_calls")) == [
        ("a", 1), ("b", 1), ("end", 0), ("start", 0)]
    assert_all(row)
