"""The run path's SQL statements that the ORM cannot say, or says measurably slower (bench/RESULTS.md, "Named
statements"): fixed text with placeholders, the same on PostgreSQL and SQLite, as LangGraph's PostgreSQL
checkpointer keeps its own. A multi-row INSERT's rows go in at `VALUES {values}` (core.db.Insert: on PostgreSQL
as one JSON parameter, so its text does not change with its rows).

Values go in as the ORM sends them (`Field.get_db_prep_save`'s result: core.db.value_converter) and are read
back through the ORM, so money, datetimes, JSON and bytes are stored as the ORM stores them.
tests/workflows/test_statements.py runs each statement on both databases and checks its columns are the model's.
"""
from __future__ import annotations

import functools
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections

from core.db import Insert, prepared_values

from workflows.models import (
    Checkpoint,
    ExecutionEvent,
    LLMCall,
    NodeExecution,
    ProviderAttempt,
    ToolCall,
    WorkflowExecution,
)


NODE_COLUMNS = ("prompt_tokens", "completion_tokens", "total_tokens", "execution_id", "index", "node_id",
                "node_type", "status", "started_at", "completed_at", "duration_ms", "cost", "llm_calls", "tool_calls",
                "error_message", "output")
# A node's row is inserted as it starts and rewritten whole as it ends; the ids come back for its LLM calls.
NODES_UPSERT = (
    'INSERT INTO "workflows_nodeexecution" ("prompt_tokens", "completion_tokens", "total_tokens", "execution_id", '
    '"index", "node_id", "node_type", "status", "started_at", "completed_at", "duration_ms", "cost", "llm_calls", '
    '"tool_calls", "error_message", "output") VALUES {values} '
    'ON CONFLICT ("execution_id", "index") DO UPDATE SET "node_id" = excluded."node_id", '
    '"node_type" = excluded."node_type", "status" = excluded."status", "started_at" = excluded."started_at", '
    '"completed_at" = excluded."completed_at", "duration_ms" = excluded."duration_ms", "output" = excluded."output", '
    '"error_message" = excluded."error_message", "prompt_tokens" = excluded."prompt_tokens", '
    '"completion_tokens" = excluded."completion_tokens", "total_tokens" = excluded."total_tokens", '
    '"cost" = excluded."cost", "llm_calls" = excluded."llm_calls", "tool_calls" = excluded."tool_calls" '
    'RETURNING "id", "index"')

LLM_CALL_COLUMNS = ("prompt_tokens", "completion_tokens", "total_tokens", "execution_id", "node_execution_id",
                    "provider", "model", "requested_model", "cached_prompt_tokens", "reasoning_tokens", "cost",
                    "provider_cost", "estimated", "unpriced", "usage_raw", "duration_ms", "deployment",
                    "prompt_version_id", "created_at", "kind")
LLM_CALLS_INSERT = (
    'INSERT INTO "workflows_llmcall" ("prompt_tokens", "completion_tokens", "total_tokens", "execution_id", '
    '"node_execution_id", "provider", "model", "requested_model", "cached_prompt_tokens", "reasoning_tokens", '
    '"cost", "provider_cost", "estimated", "unpriced", "usage_raw", "duration_ms", "deployment", '
    '"prompt_version_id", "created_at", "kind") VALUES {values}')

PROVIDER_ATTEMPT_COLUMNS = ("execution_id", "node_execution_id", "deployment", "model", "provider", "ok",
                            "error_type", "error", "status_code", "cooldown_s", "duration_ms", "created_at")
PROVIDER_ATTEMPTS_INSERT = (
    'INSERT INTO "workflows_providerattempt" ("execution_id", "node_execution_id", "deployment", "model", '
    '"provider", "ok", "error_type", "error", "status_code", "cooldown_s", "duration_ms", "created_at") '
    'VALUES {values}')

TOOL_CALL_COLUMNS = ("execution_id", "node_id", "tool", "server_id", "server_ref", "arguments", "result", "ok",
                     "error", "duration_ms", "cost", "created_at")
TOOL_CALLS_INSERT = (
    'INSERT INTO "workflows_toolcall" ("execution_id", "node_id", "tool", "server_id", "server_ref", "arguments", '
    '"result", "ok", "error", "duration_ms", "cost", "created_at") VALUES {values}')

EVENT_COLUMNS = ("execution_id", "seq", "event", "data", "created_at")
# (execution, seq) is unique: a second writer's events collide here and roll its write back.
EVENTS_INSERT = ('INSERT INTO "workflows_executionevent" ("execution_id", "seq", "event", "data", "created_at") '
                 'VALUES {values}')

CHECKPOINT_COLUMNS = ("execution_id", "thread_id", "checkpoint_ns", "checkpoint_id", "kind", "task_id", "idx",
                      "task_path", "channel", "parent_checkpoint_id", "type", "blob", "metadata", "created_at")
# A graph's checkpoints and writes held by its run (workflows.checkpointer): the newest of a key wins.
CHECKPOINTS_UPSERT = (
    'INSERT INTO "workflows_checkpoint" ("execution_id", "thread_id", "checkpoint_ns", "checkpoint_id", "kind", '
    '"task_id", "idx", "task_path", "channel", "parent_checkpoint_id", "type", "blob", "metadata", "created_at") '
    'VALUES {values} ON CONFLICT ("thread_id", "checkpoint_ns", "checkpoint_id", "kind", "task_id", "idx") '
    'DO UPDATE SET "execution_id" = excluded."execution_id", "task_path" = excluded."task_path", '
    '"channel" = excluded."channel", "parent_checkpoint_id" = excluded."parent_checkpoint_id", '
    '"type" = excluded."type", "blob" = excluded."blob", "metadata" = excluded."metadata", '
    '"created_at" = excluded."created_at"')

EXECUTION_COLUMNS = ("prompt_tokens", "completion_tokens", "total_tokens", "id", "owner_id", "workflow_type",
                     "template_id", "definition_id", "definition_version", "conversation_id", "schedule_id",
                     "api_key_id", "status", "mode", "provider", "model", "config", "graph", "input_data",
                     "output_data", "error_type", "error_message", "started_at", "completed_at", "execution_time_ms",
                     "cost", "llm_calls", "tool_calls", "correlation_id", "trace_id", "trace_context",
                     "cancel_requested", "heartbeat_at", "silent_since", "stream_progress", "budget_holds",
                     "waiting_until", "resume_attempts", "forked_from_id", "forked_from_checkpoint", "webhook",
                     "run_after", "prompt_version_id", "created_at")
_EXECUTION_INSERT = (
    'INSERT INTO "workflows_workflowexecution" ("prompt_tokens", "completion_tokens", "total_tokens", "id", '
    '"owner_id", "workflow_type", "template_id", "definition_id", "definition_version", "conversation_id", '
    '"schedule_id", "api_key_id", "status", "mode", "provider", "model", "config", "graph", "input_data", '
    '"output_data", "error_type", "error_message", "started_at", "completed_at", "execution_time_ms", "cost", '
    '"llm_calls", "tool_calls", "correlation_id", "trace_id", "trace_context", "cancel_requested", "heartbeat_at", '
    '"silent_since", "stream_progress", "budget_holds", "waiting_until", "resume_attempts", "forked_from_id", '
    '"forked_from_checkpoint", "webhook", "run_after", "prompt_version_id", "created_at") '
    'SELECT * FROM (VALUES {values}) AS "new" ')
# The runs a user has in progress, which CHATTER_MAX_CONCURRENT_RUNS bounds. The statuses are in the text, as the
# partial index of runs in progress names them, so that the database can tell the index covers the count.
RUNS_IN_PROGRESS = '"owner_id" = %s AND "status" IN (\'pending\', \'running\')'
# SQLite: a run, written only while its owner has fewer than the limit in progress (the last two parameters: the
# owner, the limit). Its write transaction is the database's one writer: simultaneous creations take turns.
EXECUTION_INSERT_WITHIN_LIMIT = (
    _EXECUTION_INSERT + f'WHERE (SELECT COUNT(*) FROM "workflows_workflowexecution" WHERE {RUNS_IN_PROGRESS}) < %s')
# PostgreSQL: the run, written as it is; the limit (the last parameter) goes into a setting of the transaction,
# which the constraint trigger RUNS_WITHIN_LIMIT (migration 0019) reads when the transaction commits: it locks the
# owner's row, counts their runs in progress with their creations committed before it, and refuses the commit if
# there are more than the limit. Simultaneous creations of one user take turns only inside their commits, not
# from a statement to the commit: one user's concurrent turns do not queue at creation (bench/RESULTS.md, B9).
EXECUTION_INSERT_LIMITED_AT_COMMIT = (
    _EXECUTION_INSERT + "WHERE set_config('chatter.max_concurrent_runs', %s, true) <> ''")
RUNS_WITHIN_LIMIT = "workflows_runs_within_limit"
# In a transaction the run's creation did not open (its caller's), the check is made at once (a refusal is this
# statement's error), and the owner's row stays locked to that transaction's commit; the limit is taken back, so
# that what the caller inserts next is limited only if it says so.
RUNS_WITHIN_LIMIT_NOW = (f'SET CONSTRAINTS "{RUNS_WITHIN_LIMIT}" IMMEDIATE; '
                         "SELECT set_config('chatter.max_concurrent_runs', '', true)")


nodes_upsert = Insert(NodeExecution, NODE_COLUMNS, NODES_UPSERT)
llm_calls_insert = Insert(LLMCall, LLM_CALL_COLUMNS, LLM_CALLS_INSERT)
provider_attempts_insert = Insert(ProviderAttempt, PROVIDER_ATTEMPT_COLUMNS, PROVIDER_ATTEMPTS_INSERT)
tool_calls_insert = Insert(ToolCall, TOOL_CALL_COLUMNS, TOOL_CALLS_INSERT)
events_insert = Insert(ExecutionEvent, EVENT_COLUMNS, EVENTS_INSERT)
checkpoints_upsert = Insert(Checkpoint, CHECKPOINT_COLUMNS, CHECKPOINTS_UPSERT)
_execution_insert_within_limit = Insert(WorkflowExecution, EXECUTION_COLUMNS, EXECUTION_INSERT_WITHIN_LIMIT)
_execution_insert_limited_at_commit = Insert(WorkflowExecution, EXECUTION_COLUMNS, EXECUTION_INSERT_LIMITED_AT_COMMIT)
_execution_insert = Insert(WorkflowExecution, EXECUTION_COLUMNS, _EXECUTION_INSERT)


def execution_insert_within_limit(execution: WorkflowExecution, *, limit: int | None, check_now: bool = False) -> bool:
    """INSERT the new `execution` as save(force_insert=True) would store it, within its owner's `limit` of runs
    pending or running. Whether it was written. On PostgreSQL it is always written, and the limit is checked when
    the transaction commits (a refusal: an IntegrityError that `runs_limit_refused` tells), or at once with
    `check_now` (the transaction is a caller's, which commits later). `limit=None`: a run never seen in progress
    (ended in the transaction that writes it), which the limit does not count."""
    connection = connections[DEFAULT_DB_ALIAS]
    with connection.cursor() as cursor:
        if limit is None:
            cursor.execute(*_execution_insert.bound([_execution_values(execution)]))
            return True
        if connection.vendor != "postgresql":
            sql, params = _execution_insert_within_limit.bound([_execution_values(execution)])
            cursor.execute(sql, [*params, execution.owner_id, limit])
            return cursor.rowcount == 1
        cursor.execute(*execution_insert_limited_at_commit(execution, limit=limit))
        if check_now:
            cursor.execute(RUNS_WITHIN_LIMIT_NOW)
    return True


def execution_insert_limited_at_commit(execution: WorkflowExecution, *, limit: int) -> tuple[str, list]:
    """PostgreSQL: the INSERT of the new `execution` within its owner's `limit` of runs in progress, checked when
    its transaction commits (EXECUTION_INSERT_LIMITED_AT_COMMIT), for a caller that runs it with others
    (core.db.statements_run): outside any transaction, as one statement that commits by itself."""
    sql, params = _execution_insert_limited_at_commit.bound([_execution_values(execution)])
    return sql, [*params, str(limit)]


def runs_limit_refused(exc: BaseException) -> bool:
    """Whether `exc` (a commit's, or RUNS_WITHIN_LIMIT_NOW's IntegrityError) is the limit's refusal."""
    return getattr(getattr(exc.__cause__, "diag", None), "constraint_name", None) == RUNS_WITHIN_LIMIT


# What a run adds to its row's counters before it ends (a turn with a tool call: the write before the second model
# call); the run writes tool_calls whole (only it counts them).
EXECUTION_COUNTERS_ADD = (
    'UPDATE "workflows_workflowexecution" SET "tool_calls" = %s, "prompt_tokens" = "prompt_tokens" + %s, '
    '"completion_tokens" = "completion_tokens" + %s, "total_tokens" = "total_tokens" + %s, "cost" = "cost" + %s, '
    '"llm_calls" = "llm_calls" + %s WHERE "id" = %s')
# A run's end, only from the status it is in (the recovery sweep or a claiming worker may have moved it): its
# outcome, its counters added, the flag of a cancel kept, the answering model when a registered graph names it.
EXECUTION_FINISH = (
    'UPDATE "workflows_workflowexecution" SET "status" = %s, "completed_at" = %s, "execution_time_ms" = %s, '
    '"output_data" = %s, "error_type" = %s, "error_message" = %s, "stream_progress" = %s, '
    '"cancel_requested" = ("cancel_requested" OR %s), "provider" = COALESCE(%s, "provider"), '
    '"model" = COALESCE(%s, "model"), "tool_calls" = %s, "prompt_tokens" = "prompt_tokens" + %s, '
    '"completion_tokens" = "completion_tokens" + %s, "total_tokens" = "total_tokens" + %s, "cost" = "cost" + %s, '
    '"llm_calls" = "llm_calls" + %s WHERE "id" = %s AND "status" = %s')
ADDED_COUNTERS = ("prompt_tokens", "completion_tokens", "total_tokens", "cost", "llm_calls")


def _execution_value(name: str, value: Any, connection) -> Any:
    return prepared_values(WorkflowExecution, (name,), (value,), connection)[0]


def _counters(added: dict, connection) -> list:
    return prepared_values(WorkflowExecution, ADDED_COUNTERS, [added.get(name, 0) for name in ADDED_COUNTERS],
                           connection)


def execution_counters_add(execution_id, *, tool_calls: int, added: dict) -> int:
    """Add `added` (counters by name; those left out add nothing) to the run's row. Rows changed."""
    connection = connections[DEFAULT_DB_ALIAS]
    with connection.cursor() as cursor:
        cursor.execute(EXECUTION_COUNTERS_ADD, [tool_calls, *_counters(added, connection),
                                                _execution_value("id", execution_id, connection)])
        return cursor.rowcount


def execution_insert_ended(execution: WorkflowExecution, *, ended: dict, tool_calls: int, added: dict) -> int:
    """INSERT a run not written yet as execution_finish would leave it: `ended` set, its counters `added`. One
    statement where its INSERT then its UPDATE were two, and PostgreSQL indexes its row once: the UPDATE of a status
    moved it in all eleven of the table's indexes (bench/RESULTS.md, B8: a gateway call written whole). Rows
    written (1)."""
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute(*execution_ended_insert(execution, ended=ended, tool_calls=tool_calls, added=added))
    return 1


def execution_ended_insert(execution: WorkflowExecution, *, ended: dict, tool_calls: int, added: dict
                           ) -> tuple[str, list]:
    """The statement of execution_insert_ended, to run now or to ride on the run's last write (a gateway call
    written whole in one statement). `execution` is left as it was given but for its created_at, set as save()
    sets it."""
    values = _execution_values(execution)
    if unknown := ended.keys() - values.keys():
        raise ValueError(f"not columns of a run's row: {sorted(unknown)}")
    values.update(ended)
    for name in ADDED_COUNTERS:
        values[name] += added.get(name, 0)
    values["tool_calls"] = tool_calls
    return _execution_insert.bound([values])


_EXECUTION_FIELDS = tuple((name, WorkflowExecution._meta.get_field(name)) for name in EXECUTION_COLUMNS)


def _execution_values(execution: WorkflowExecution) -> dict:
    """The new run's row as save(force_insert=True) would store it (its created_at set now)."""
    return {name: field.pre_save(execution, add=True) for name, field in _EXECUTION_FIELDS}


def execution_finish(execution_id, *, from_status: str, ended: dict, tool_calls: int, added: dict) -> int:
    """End the run whose status is still `from_status` with `ended` (status, completed_at, execution_time_ms,
    output_data, error_type, error_message, stream_progress; cancel_requested, provider and model when they
    change) and its counters added. Rows changed: 0 when another writer ended or moved it first."""
    connection = connections[DEFAULT_DB_ALIAS]
    value = functools.partial(_execution_value, connection=connection)
    params = [ended["status"], value("completed_at", ended["completed_at"]), ended["execution_time_ms"],
              value("output_data", ended["output_data"]), ended["error_type"], ended["error_message"],
              value("stream_progress", ended["stream_progress"]), bool(ended.get("cancel_requested")),
              ended.get("provider"), ended.get("model"), tool_calls, *_counters(added, connection),
              value("id", execution_id), from_status]
    with connection.cursor() as cursor:
        cursor.execute(EXECUTION_FINISH, params)
        return cursor.rowcount
