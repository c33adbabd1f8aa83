"""workflows/statements.py's named statements, run on the database the suite runs on (SQLite, and PostgreSQL with
DATABASE_URL): each writes the model's every column, and what it stores reads back exactly as the same values
saved by the ORM (money, datetimes, JSON, bytes, a UUID foreign key); a write whose statement fails leaves nothing
of itself."""
import re
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from django.db import IntegrityError, models, transaction

from core.db import statements_run, write_atomic
from tests.factories import WorkflowExecutionFactory
from tools.models import McpServer
from workflows import statements
from workflows.models import (
    Checkpoint,
    ExecutionEvent,
    LLMCall,
    NodeExecution,
    ProviderAttempt,
    ToolCall,
    WorkflowExecution,
)

pytestmark = pytest.mark.django_db
WHEN = datetime(2026, 11, 23, 22, 5, 7, 123456, tzinfo=timezone.utc)
JSON = {"text": "naïve ✓ \"quoted\"", "nested": [1, 2.5, None, True, {"k": "v"}]}
NAMED = [statements.nodes_upsert, statements.llm_calls_insert, statements.provider_attempts_insert,
         statements.tool_calls_insert, statements.events_insert, statements.checkpoints_upsert]


def _attnames(model) -> set[str]:
    return {f.attname for f in model._meta.concrete_fields if not isinstance(f, models.AutoField)}


def _sql_columns(sql: str) -> tuple[str, ...]:
    return tuple(re.findall(r'"(\w+)"', sql.split(")")[0])[1:])  # after the table's name, up to ")"


@pytest.mark.parametrize("statement", NAMED, ids=lambda s: s.model.__name__)
def test_each_statement_writes_every_column_of_its_model_in_the_order_it_names_them(statement):
    assert set(statement.columns) == _attnames(statement.model)
    assert _sql_columns(statement.sql) == statement.columns
    assert f'INSERT INTO "{statement.model._meta.db_table}"' in statement.sql


def test_the_run_insert_names_every_column_and_the_statuses_in_progress():
    assert set(statements.EXECUTION_COLUMNS) == _attnames(WorkflowExecution)
    assert _sql_columns(statements.EXECUTION_INSERT_WITHIN_LIMIT) == statements.EXECUTION_COLUMNS
    in_progress = {WorkflowExecution.Status.PENDING.value, WorkflowExecution.Status.RUNNING.value}
    assert set(re.findall(r"IN \('(\w+)', '(\w+)'\)", statements.EXECUTION_INSERT_WITHIN_LIMIT)[0]) == in_progress


def _stored(model, **lookup) -> dict:
    """Every column of the one row `lookup` finds, as the ORM reads it."""
    return model.objects.filter(**lookup).values(*sorted(_attnames(model))).get()


def _same_as_orm(model, row: dict, **lookup) -> None:
    """`row`, written by its named statement, reads back as the same values saved by the ORM in another row."""
    mine = _stored(model, **lookup)
    twin = WorkflowExecutionFactory(owner=WorkflowExecution.objects.get(pk=row["execution_id"]).owner)
    saved = model.objects.create(**{**row, "execution_id": twin.pk})
    orm = _stored(model, pk=saved.pk)
    # the ORM sets a creation time of its own (auto_now_add); the run passes the one it held
    own = {f.attname: None for f in model._meta.concrete_fields if getattr(f, "auto_now_add", False)}
    assert {**mine, "execution_id": None, **own} == {**orm, "execution_id": None, **own}
    assert mine["execution_id"] == row["execution_id"] and all(mine[name] == row[name] for name in own)


def _node(execution, index: int, **fields) -> dict:
    return {"execution_id": execution.pk, "index": index, "node_id": f"n{index}", "node_type": "model",
            "status": "running", "started_at": WHEN, "completed_at": None, "duration_ms": None, "output": JSON,
            "error_message": "", "prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12,
            "cost": Decimal("0.00012345"), "llm_calls": 1, "tool_calls": 0, **fields}


def test_nodes_upsert_returns_each_rows_id_and_rewrites_a_row_whole(alice):
    execution = WorkflowExecutionFactory(owner=alice)
    first = dict(statements_run(statements.nodes_upsert.bound(
        [_node(execution, 1), _node(execution, 2)]), fetch=True))
    assert set(first.values()) == {1, 2}

    again = statements_run(statements.nodes_upsert.bound(
        [_node(execution, 2, status="completed", completed_at=WHEN, duration_ms=40, cost=Decimal("1.5"))]),
        fetch=True)

    assert again == [(next(pk for pk, index in first.items() if index == 2), 2)]
    stored = _stored(NodeExecution, execution=execution, index=2)
    assert (stored["status"], stored["cost"], stored["completed_at"]) == ("completed", Decimal("1.5"), WHEN)
    _same_as_orm(NodeExecution, _node(execution, 1), execution=execution, index=1)


@pytest.mark.postgres
def test_calls_whose_nodes_the_same_statement_writes_take_their_ids_from_it_and_one_of_no_node_is_kept(alice):
    """A gateway call written whole: its nodes' upsert is the statement's first part, and its LLM calls' rows name
    their node by index (Insert.bound_joined); a row naming no node is written with none, not dropped."""
    from workflows.trace_rows import node_rows_bound

    execution = WorkflowExecutionFactory(owner=alice)
    call = {"provider": "openai", "model": "gpt-x", "requested_model": "gpt", "prompt_tokens": 10,
            "completion_tokens": 3, "total_tokens": 13, "cached_prompt_tokens": 0, "reasoning_tokens": 0,
            "cost": Decimal("0.0000123456"), "provider_cost": False, "estimated": False, "unpriced": False,
            "usage_raw": JSON, "duration_ms": 8, "deployment": "", "prompt_version_id": None, "created_at": WHEN,
            "kind": "chat"}
    along = [statements.nodes_upsert.bound([_node(execution, 1), _node(execution, 2)]),
             node_rows_bound(statements.llm_calls_insert, [(2, {**call, "duration_ms": 2}),
                                                           (None, {**call, "duration_ms": 0})],
                             execution_id=execution.pk, node_pks=None)]

    written = dict(statements_run(('SELECT "id", "index" FROM "along_0"', []), along, fetch=True))

    stored = dict(LLMCall.objects.filter(execution=execution).values_list("duration_ms", "node_execution_id"))
    assert stored == {2: next(pk for pk, index in written.items() if index == 2), 0: None}
    assert NodeExecution.objects.get(pk=stored[2]).node_id == "n2"


def test_a_runs_trace_rows_store_what_the_orm_stores(alice):
    execution = WorkflowExecutionFactory(owner=alice)
    [(node_pk, _)] = statements_run(statements.nodes_upsert.bound([_node(execution, 1)]), fetch=True)
    rows = {
        LLMCall: {"execution_id": execution.pk, "node_execution_id": node_pk, "provider": "openai",
                  "model": "gpt-x", "requested_model": "gpt", "prompt_tokens": 10, "completion_tokens": 3,
                  "total_tokens": 13, "cached_prompt_tokens": 2, "reasoning_tokens": 1,
                  "cost": Decimal("0.0000123456"), "provider_cost": True, "estimated": False, "unpriced": False,
                  "usage_raw": JSON, "duration_ms": 812, "deployment": "d1", "prompt_version_id": None,
                  "created_at": WHEN, "kind": "embedding"},
        ProviderAttempt: {"execution_id": execution.pk, "node_execution_id": None, "deployment": "d1",
                          "model": "gpt-x", "provider": "openai", "ok": False, "error_type": "rate_limited",
                          "error": "429", "status_code": 429, "cooldown_s": 1.25, "duration_ms": 3,
                          "created_at": WHEN},
        ToolCall: {"execution_id": execution.pk, "node_id": "tools", "tool": "tracker__add", "arguments": JSON,
                   "server_id": (server := str(McpServer.objects.create(owner=alice, name="tracker",
                                                                        url="http://t/mcp").pk)),
                   "server_ref": server, "result": "84", "ok": True, "error": "", "duration_ms": 1,
                   "cost": Decimal("0.002"),
                   "created_at": WHEN},
        ExecutionEvent: {"execution_id": execution.pk, "seq": 1, "event": "node_started", "data": JSON,
                         "created_at": WHEN},
    }
    named = {statement.model: statement for statement in NAMED}
    main, *along = [named[model].bound([row]) for model, row in rows.items()]

    statements_run(main, along)

    for model, row in rows.items():
        _same_as_orm(model, row, execution=execution)


def test_checkpoints_upsert_keeps_bytes_and_the_newest_row_of_a_key(alice):
    execution = WorkflowExecutionFactory(owner=alice)
    row = {"execution_id": execution.pk, "thread_id": str(execution.pk), "checkpoint_ns": "", "checkpoint_id": "c1",
           "kind": Checkpoint.Kind.CHECKPOINT.value, "task_id": "", "idx": 0, "task_path": "", "channel": "",
           "parent_checkpoint_id": "", "type": "msgpack", "blob": bytes(range(256)), "metadata": JSON,
           "created_at": WHEN}
    statements_run(statements.checkpoints_upsert.bound([row]))
    statements_run(statements.checkpoints_upsert.bound([{**row, "blob": b"\x00newer\xff"}]))

    stored = Checkpoint.objects.get(thread_id=str(execution.pk))
    assert bytes(stored.blob) == b"\x00newer\xff" and stored.metadata == JSON and stored.created_at == WHEN


def test_a_write_whose_event_collides_leaves_nothing_of_itself(alice):
    """The recovery sweep's events take the run's next seq: the run's own write then fails whole (I6)."""
    execution = WorkflowExecutionFactory(owner=alice)
    event = {"execution_id": execution.pk, "seq": 1, "event": "workflow_requeued", "data": {}, "created_at": WHEN}
    statements_run(statements.events_insert.bound([event]))

    # In a caller's transaction (here one in the test's), the one statement takes no savepoint of its own: the
    # caller's transaction is rolled back with it.
    with pytest.raises(IntegrityError), transaction.atomic(), write_atomic(one_statement=True):
        statements_run(statements.nodes_upsert.bound([_node(execution, 1)]),
                                  [statements.events_insert.bound([{**event, "event": "node_started"}])], fetch=True)

    assert not NodeExecution.objects.filter(execution=execution).exists()
    assert list(ExecutionEvent.objects.filter(execution=execution).values_list("event", flat=True)) == [
        "workflow_requeued"]


def _inserted_within_limit(execution, *, limit: int) -> bool:
    """As run_write inserts a run in a caller's transaction (here the test's): checked at once on PostgreSQL, where
    a refusal is the limit's IntegrityError and leaves nothing (the savepoint)."""
    try:
        with transaction.atomic():
            return statements.execution_insert_within_limit(execution, limit=limit, check_now=True)
    except IntegrityError as exc:
        assert statements.runs_limit_refused(exc), exc
        return False


def test_a_run_is_inserted_only_under_its_owners_limit_and_as_the_orm_stores_it(alice):
    running = WorkflowExecutionFactory(owner=alice)
    new = WorkflowExecution(owner=alice, workflow_type="chat", status="running", config=JSON,
                            cost=Decimal("0.5"), started_at=WHEN, budget_holds=[{"budget": "b", "hard": True}])

    assert not _inserted_within_limit(new, limit=1)  # `running` is pending: 1 in progress
    assert not WorkflowExecution.objects.filter(pk=new.pk).exists()

    assert _inserted_within_limit(new, limit=2)

    mine = _stored(WorkflowExecution, pk=new.pk)
    twin = WorkflowExecution.objects.create(**{name: getattr(new, name) for name in _attnames(WorkflowExecution)
                                               if name not in ("id", "created_at")})
    orm = _stored(WorkflowExecution, pk=twin.pk)
    assert {**mine, "id": None, "created_at": None} == {**orm, "id": None, "created_at": None}
    assert running.status == "pending" and mine["created_at"] is not None


def test_a_runs_counters_are_added_to_what_is_stored_and_its_end_lands_only_from_its_status(alice):
    execution = WorkflowExecutionFactory(owner=alice)
    WorkflowExecution.objects.filter(pk=execution.pk).update(status="running", cost=Decimal("0.1"), llm_calls=1,
                                                             provider="openai", model="gpt-x")
    added = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12, "cost": Decimal("0.000001"),
             "llm_calls": 1}
    assert statements.execution_counters_add(execution.pk, tool_calls=3, added=added) == 1
    ended = {"status": "completed", "completed_at": WHEN, "execution_time_ms": 120, "output_data": JSON,
             "error_type": "", "error_message": "", "stream_progress": {}}

    assert statements.execution_finish(execution.pk, from_status="pending", ended=ended, tool_calls=4,
                                       added=added) == 0  # not in that status: nothing changes
    assert statements.execution_finish(execution.pk, from_status="running", ended=ended, tool_calls=4,
                                       added={"cost": Decimal("0.02")}) == 1

    stored = WorkflowExecution.objects.get(pk=execution.pk)
    assert (stored.status, stored.completed_at, stored.output_data, stored.tool_calls) == (
        "completed", WHEN, JSON, 4)
    assert (stored.prompt_tokens, stored.total_tokens, stored.llm_calls, stored.cost) == (
        10, 12, 2, Decimal("0.120001"))
    assert (stored.provider, stored.model, stored.cancel_requested) == ("openai", "gpt-x", False)


def test_a_cancelled_run_keeps_its_flag_and_a_registered_graph_names_its_model(alice):
    execution = WorkflowExecutionFactory(owner=alice)
    ended = {"status": "cancelled", "completed_at": WHEN, "execution_time_ms": 5, "output_data": {},
             "error_type": "cancelled", "error_message": "cancelled", "stream_progress": {},
             "cancel_requested": True, "provider": "anthropic", "model": "claude-x"}

    assert statements.execution_finish(execution.pk, from_status="pending", ended=ended, tool_calls=0, added={}) == 1

    stored = WorkflowExecution.objects.get(pk=execution.pk)
    assert (stored.cancel_requested, stored.provider, stored.model, stored.cost) == (
        True, "anthropic", "claude-x", Decimal("0"))
