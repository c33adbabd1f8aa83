"""The checkpointer (workflows.checkpointer.DatabaseSaver) is a LangGraph saver on the project's database: it
passes LangGraph's own conformance suite (langgraph-checkpoint-conformance) on SQLite and on PostgreSQL."""
import pytest
from asgiref.sync import async_to_sync
from langgraph.checkpoint.conformance import checkpointer_test, validate

from workflows.checkpointer import DatabaseSaver
from workflows.models import Checkpoint
from workflows.services.run_requests import ChatRequest

pytestmark = pytest.mark.django_db(transaction=True)


@checkpointer_test(name="DatabaseSaver")
async def database_saver():
    yield DatabaseSaver()


def test_it_passes_langgraph_checkpoint_conformance():
    report = async_to_sync(validate)(database_saver)

    failures = {name: result.failures for name, result in report.results.items() if result.failures}
    assert report.passed_all_base() and report.passed_all(), failures
    assert {"put", "put_writes", "get_tuple", "list", "delete_thread", "copy_thread"} <= {
        name for name, result in report.results.items() if result.passed}


def test_a_saver_used_alone_writes_at_once():
    from langgraph.checkpoint.conformance.test_utils import generate_checkpoint, generate_config, generate_metadata

    saver = DatabaseSaver()
    config = saver.put(generate_config("t-1"), generate_checkpoint(), generate_metadata(), {})
    saver.put_writes(config, [("a", 1), ("b", 2)], "task-1")

    assert Checkpoint.objects.filter(thread_id="t-1", kind="checkpoint").count() == 1
    assert Checkpoint.objects.filter(thread_id="t-1", kind="write").count() == 2
    assert [w[1:] for w in DatabaseSaver().get_tuple(generate_config("t-1")).pending_writes] == [("a", 1), ("b", 2)]


def test_a_run_leaves_its_graphs_checkpoints_on_its_own_thread(alice):
    from langchain_core.messages import AIMessage

    from workflows.services.runs import execution_run_now

    execution = execution_run_now(ChatRequest(owner=alice, message="hello", config={"checkpoints": "every_step"}))

    latest = DatabaseSaver().get_tuple({"configurable": {"thread_id": str(execution.pk)}})
    assert latest is not None and latest.metadata["step"] > 0
    reply = latest.checkpoint["channel_values"]["messages"][-1]
    assert isinstance(reply, AIMessage) and reply.content == execution.output_data["content"]
    steps = [t.metadata["step"] for t in DatabaseSaver().list({"configurable": {"thread_id": str(execution.pk)}})]
    assert steps == sorted(steps, reverse=True) and steps[-1] == -1  # every step, from the input on
    assert set(Checkpoint.objects.values_list("execution_id", flat=True)) == {execution.pk}
