"""LangGraph's checkpoints on the project's database (SQLite and PostgreSQL alike): `DatabaseSaver`, a
BaseCheckpointSaver on the Django ORM (rows: workflows.models.Checkpoint), passing langgraph-checkpoint-conformance.

Used alone it writes at once, like any saver. A run's graph uses it *held*: what LangGraph saves stays in a
CheckpointHold that the run's recorder writes with a transaction it makes anyway (ExecutionRecorder.write_held).
A run's thread is its own (`thread_id` = the execution's id) except on a conversation that keeps its graph's state,
whose id is the thread of all its runs. When, and why: docs/operations/durable-runs.md#checkpoints-in-the-database.
"""
from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from channels.db import database_sync_to_async
from django.db import transaction
from django.db.models import Subquery
from django.utils import timezone
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.base import Checkpoint as CheckpointData

from workflows.models import Checkpoint
from workflows.statements import checkpoints_upsert

KIND_CHECKPOINT, KIND_WRITE = Checkpoint.Kind.CHECKPOINT.value, Checkpoint.Kind.WRITE.value
ROW_KEY = ("thread_id", "checkpoint_ns", "checkpoint_id", "kind", "task_id", "idx")
ROW_DATA = ("execution_id", "task_path", "channel", "parent_checkpoint_id", "type", "blob", "metadata")
_READ = (*ROW_KEY, *ROW_DATA)


class CheckpointHold:
    """What LangGraph saves for a run's thread between the run's writes: the saver adds to it (and reads it back),
    the run's recorder takes it into its next write, and gives it back if that write fails. Made by
    DatabaseSaver.hold for one run and handed to its recorder, so neither reaches into the other."""

    def __init__(self, *, thread_id: str, execution_id, fresh: bool):
        self.thread_id = thread_id
        self.execution_id = execution_id
        self.fresh = fresh  # a new run: nothing of its thread is on disk, so reads need not look
        self._rows: dict[tuple, dict] = {}  # by ROW_KEY, in the order saved
        self._lock = threading.Lock()

    def add(self, rows: list[dict]) -> None:
        with self._lock:
            for row in rows:
                row["execution_id"] = self.execution_id
            self._rows = _merged([*self._rows.values(), *rows])

    def rows(self) -> tuple[list[dict], bool]:
        """The rows held, and whether the thread's disk may hold more."""
        with self._lock:
            return list(self._rows.values()), not self.fresh

    def take(self) -> list[dict]:
        """The rows saved since the last write, for the caller to write (`statement`) and forgotten here."""
        with self._lock:
            if not self._rows:
                return []
            rows, self._rows = list(self._rows.values()), {}
            self.fresh = False
            return rows

    def give_back(self, rows: list[dict]) -> None:
        """The transaction that was to write `rows` failed: held again, before what came since."""
        with self._lock:
            if rows:
                self._rows = _merged([*rows, *self._rows.values()])

    @staticmethod
    def statement(rows: list[dict]) -> tuple[str, list]:
        """Taken rows as one upsert (SQL, params), for the caller to run in its transaction, on its own or along
        another (core.db.statements_run)."""
        return checkpoints_upsert.bound(rows)


def _key(row: dict) -> tuple:
    return tuple(row[name] for name in ROW_KEY)


def _merged(rows: list[dict]) -> dict[tuple, dict]:
    """Rows by key, later ones winning, except a write of idx ≥ 0 that is already there (LangGraph's writes are
    idempotent; its special writes, idx < 0, replace)."""
    merged: dict[tuple, dict] = {}
    for row in rows:
        key = _key(row)
        if key in merged and row["kind"] == KIND_WRITE and row["idx"] >= 0:
            continue
        merged[key] = row
    return merged


def _rows_write(rows: list[dict], *, replace: bool) -> None:
    """Rows of a thread no run holds, written at once: a row whose key is taken replaces it, or (`replace` off)
    is dropped."""
    if not rows:
        return
    if replace:
        Checkpoint.objects.bulk_create([Checkpoint(**row) for row in rows], update_conflicts=True,
                                       unique_fields=ROW_KEY, update_fields=(*ROW_DATA, "created_at"))
    else:
        Checkpoint.objects.bulk_create([Checkpoint(**row) for row in rows], ignore_conflicts=True)


class DatabaseSaver(BaseCheckpointSaver[int]):
    def __init__(self, *, serde=None):
        super().__init__(serde=serde)
        self._held: dict[str, CheckpointHold] = {}
        self._lock = threading.Lock()

    # --- a run's thread, held in memory between its writes ----------------------------------------------
    def hold(self, thread_id: str, *, execution_id, fresh: bool) -> CheckpointHold:
        """Hold what is saved for the thread in memory until the run's recorder writes it (`release` ends it)."""
        held = CheckpointHold(thread_id=thread_id, execution_id=execution_id, fresh=fresh)
        with self._lock:
            self._held[thread_id] = held
        return held

    def release(self, thread_id: str) -> None:
        with self._lock:
            self._held.pop(thread_id, None)

    def _hold_rows(self, thread_id: str, rows: list[dict]) -> bool:
        with self._lock:
            held = self._held.get(thread_id)
        if held is None:
            return False
        held.add(rows)
        return True

    def _held_rows(self, thread_id: str) -> tuple[list[dict], bool]:
        """A held thread's rows in memory, and whether its disk may hold more."""
        with self._lock:
            held = self._held.get(thread_id)
        return held.rows() if held is not None else ([], True)

    # --- reading ----------------------------------------------------------------------------------------
    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        configurable = config["configurable"]
        thread_id, ns = configurable["thread_id"], configurable.get("checkpoint_ns", "")
        checkpoint_id = get_checkpoint_id(config)
        held, on_disk = self._held_rows(thread_id)
        rows = []
        if on_disk:
            found = Checkpoint.objects.filter(thread_id=thread_id, checkpoint_ns=ns)
            if checkpoint_id:
                found = found.filter(checkpoint_id=checkpoint_id)
            else:
                found = found.filter(checkpoint_id=Subquery(Checkpoint.objects.filter(
                    thread_id=thread_id, checkpoint_ns=ns, kind=KIND_CHECKPOINT,
                ).order_by("-checkpoint_id").values("checkpoint_id")[:1]))
            rows = list(found.values(*_READ))
        held = [row for row in held if row["checkpoint_ns"] == ns]
        if held and not checkpoint_id:
            latest = max((row["checkpoint_id"] for row in [*rows, *held] if row["kind"] == KIND_CHECKPOINT),
                         default=None)
            rows = [row for row in rows if row["checkpoint_id"] == latest]
            checkpoint_id = latest
        rows += [row for row in held if row["checkpoint_id"] == checkpoint_id] if checkpoint_id else []
        tuples = self._tuples(rows)
        return tuples[0] if tuples else None

    def list(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
             before: RunnableConfig | None = None, limit: int | None = None) -> Iterator[CheckpointTuple]:
        found = Checkpoint.objects.filter(kind=KIND_CHECKPOINT)
        held: list[dict] = []
        if config is not None:
            configurable = config["configurable"]
            found = found.filter(thread_id=configurable["thread_id"])
            held, _ = self._held_rows(configurable["thread_id"])
            if (ns := configurable.get("checkpoint_ns")) is not None:
                found = found.filter(checkpoint_ns=ns)
                held = [row for row in held if row["checkpoint_ns"] == ns]
            if checkpoint_id := get_checkpoint_id(config):
                found = found.filter(checkpoint_id=checkpoint_id)
                held = [row for row in held if row["checkpoint_id"] == checkpoint_id]
        before_id = get_checkpoint_id(before) if before else None
        if before_id:
            found = found.filter(checkpoint_id__lt=before_id)
            held = [row for row in held if row["checkpoint_id"] < before_id]
        checkpoints = [row for row in [*found.values(*_READ), *held] if row["kind"] == KIND_CHECKPOINT]
        checkpoints = list(_merged(checkpoints).values())
        checkpoints.sort(key=lambda row: (row["checkpoint_id"], row["thread_id"], row["checkpoint_ns"]), reverse=True)
        if filter:
            checkpoints = [row for row in checkpoints
                           if all(row["metadata"].get(key) == value for key, value in filter.items())]
        if limit is not None:
            checkpoints = checkpoints[:max(limit, 0)]
        if not checkpoints:
            return
        writes = Checkpoint.objects.filter(
            kind=KIND_WRITE, checkpoint_id__in={row["checkpoint_id"] for row in checkpoints},
            thread_id__in={row["thread_id"] for row in checkpoints})
        rows = [*checkpoints, *writes.values(*_READ), *(row for row in held if row["kind"] == KIND_WRITE)]
        yield from self._tuples(rows, order=[_key(row)[:3] for row in checkpoints])

    def _tuples(self, rows: list[dict], order: list[tuple] | None = None) -> list[CheckpointTuple]:
        """CheckpointTuples from checkpoint rows and their writes (in `order` of (thread, ns, id), else any)."""
        checkpoints: dict[tuple, dict] = {}
        writes: dict[tuple, list[dict]] = {}
        for row in _merged(rows).values():
            where = _key(row)[:3]
            if row["kind"] == KIND_CHECKPOINT:
                checkpoints[where] = row
            else:
                writes.setdefault(where, []).append(row)
        tuples = []
        for where in order if order is not None else list(checkpoints):
            row = checkpoints[where]
            thread_id, ns, checkpoint_id = where
            pending = sorted(writes.get(where, []), key=lambda w: writes_sort_key(w["task_path"], w["task_id"],
                                                                                    w["idx"]))
            parent = row["parent_checkpoint_id"]
            tuples.append(CheckpointTuple(
                config={"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}},
                checkpoint=self.serde.loads_typed((row["type"], bytes(row["blob"]))),
                metadata=row["metadata"],
                parent_config={"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                                                "checkpoint_id": parent}} if parent else None,
                pending_writes=[(w["task_id"], w["channel"], self.serde.loads_typed((w["type"], bytes(w["blob"]))))
                                for w in pending],
            ))
        return tuples

    # --- saving -----------------------------------------------------------------------------------------
    def put(self, config: RunnableConfig, checkpoint: CheckpointData, metadata: CheckpointMetadata,
            new_versions: ChannelVersions) -> RunnableConfig:
        configurable = config["configurable"]
        thread_id, ns = configurable["thread_id"], configurable.get("checkpoint_ns", "")
        kind, blob = self.serde.dumps_typed(checkpoint)
        row = {"execution_id": None, "thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint["id"],
               "kind": KIND_CHECKPOINT, "task_id": "", "idx": 0, "task_path": "", "channel": "",
               "parent_checkpoint_id": configurable.get("checkpoint_id") or "", "type": kind, "blob": blob,
               "metadata": get_checkpoint_metadata(config, metadata), "created_at": timezone.now()}
        if not self._hold_rows(thread_id, [row]):
            _rows_write([row], replace=True)
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint["id"]}}

    def put_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str,
                   task_path: str = "") -> None:
        configurable = config["configurable"]
        thread_id = configurable["thread_id"]
        now = timezone.now()
        rows = []
        for idx, (channel, value) in enumerate(writes):
            kind, blob = self.serde.dumps_typed(value)
            rows.append({"execution_id": None, "thread_id": thread_id,
                         "checkpoint_ns": configurable.get("checkpoint_ns", ""),
                         "checkpoint_id": configurable["checkpoint_id"], "kind": KIND_WRITE, "task_id": task_id,
                         "idx": WRITES_IDX_MAP.get(channel, idx), "task_path": task_path, "channel": channel,
                         "parent_checkpoint_id": "", "type": kind, "blob": blob, "metadata": {}, "created_at": now})
        if not rows or self._hold_rows(thread_id, rows):
            return
        with transaction.atomic():  # special writes (idx < 0) replace; the others are written once
            _rows_write([row for row in rows if row["idx"] < 0], replace=True)
            _rows_write([row for row in rows if row["idx"] >= 0], replace=False)

    def delete_thread(self, thread_id: str) -> None:
        self.release(thread_id)
        Checkpoint.objects.filter(thread_id=thread_id).delete()

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Every checkpoint and pending write of one thread (each namespace, the whole parent chain) under another
        thread id, with the same ids, parents and metadata, as LangGraph's savers copy a thread; the copies are of
        no run (a run of the source's deleted later takes its own rows only)."""
        now = timezone.now()
        _rows_write([{**row, "thread_id": target_thread_id, "execution_id": None, "created_at": now}
                     for row in Checkpoint.objects.filter(thread_id=source_thread_id).values(*_READ)], replace=True)

    # --- the async twins: the same work, off the event loop ---------------------------------------------
    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await database_sync_to_async(self.get_tuple)(config)

    async def alist(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
                    before: RunnableConfig | None = None, limit: int | None = None) -> AsyncIterator[CheckpointTuple]:
        found = await database_sync_to_async(lambda: list(self.list(config, filter=filter, before=before,
                                                                    limit=limit)))()
        for item in found:
            yield item

    async def aput(self, config: RunnableConfig, checkpoint: CheckpointData, metadata: CheckpointMetadata,
                   new_versions: ChannelVersions) -> RunnableConfig:
        return await database_sync_to_async(self.put)(config, checkpoint, metadata, new_versions)

    async def aput_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str,
                          task_path: str = "") -> None:
        await database_sync_to_async(self.put_writes)(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await database_sync_to_async(self.delete_thread)(thread_id)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await database_sync_to_async(self.copy_thread)(source_thread_id, target_thread_id)


checkpointer = DatabaseSaver()  # the one saver of every run in this process


def checkpoint_summaries(*, execution_ids: list) -> list[dict]:
    """The checkpoints of these runs' graphs (their own threads), oldest first, each with the node(s) whose step
    made it, its time and a summary of the state it holds: what a person picks a fork from (time travel)."""
    rows = list(Checkpoint.objects.filter(execution_id__in=execution_ids).order_by("checkpoint_id", "kind", "idx")
                .values("execution_id", "thread_id", "checkpoint_id", "parent_checkpoint_id", "kind", "task_path",
                        "type", "blob", "metadata", "created_at"))
    ran_from: dict[tuple, set[str]] = {}  # (thread, checkpoint) → the nodes that ran from it (its writes' tasks)
    for row in rows:
        if row["kind"] == KIND_WRITE:
            node = row["task_path"].rsplit(", ", 1)[-1].strip("()' ")
            if node and not node.startswith("__"):
                ran_from.setdefault((row["thread_id"], row["checkpoint_id"]), set()).add(node)
    summaries = []
    for row in rows:
        if row["kind"] != KIND_CHECKPOINT:
            continue
        values = checkpointer.serde.loads_typed((row["type"], bytes(row["blob"])))["channel_values"]
        messages = values.get("messages") or []
        last = messages[-1].content if messages else ""
        summaries.append({
            "execution_id": row["execution_id"], "checkpoint_id": row["checkpoint_id"],
            "parent_checkpoint_id": row["parent_checkpoint_id"] or None,
            "step": row["metadata"].get("step"), "source": row["metadata"].get("source"),
            "nodes": sorted(ran_from.get((row["thread_id"], row["parent_checkpoint_id"]), ())),
            "created_at": row["created_at"],
            "state": {"messages": len(messages), "last_message": (last if isinstance(last, str) else str(last))[:200],
                      "variables": values.get("variables") or {}},
            "next": sorted(ran_from.get((row["thread_id"], row["checkpoint_id"]), ())),  # what ran from it
        })
    return summaries
