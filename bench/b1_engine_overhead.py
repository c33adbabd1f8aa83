"""B1 (SPEC §13): engine overhead per sync chat turn vs invoking the same compiled graph with the same model bare,
in one process, SQLite; target ≤ 5 ms median.

Side by side, interleaved in one process (a new random order every repetition), on a fresh migrated and seeded
SQLite database with the project's own settings (WAL, synchronous=NORMAL, BEGIN IMMEDIATE, DEBUG off), the
`local` model with CHATTER_LOCAL_TOKEN_DELAY_MS=0, for two messages: "What is 12*7?" (model -> tools ->
model: one tool call) and "hello there" (no tool call):
- bare:        the compiled universal_chat graph (`graph_compile(parse_graph(<the built-in template's graph>))`,
               the very object the engine's cache hands out) `.invoke()`d with a `RunContext(config, NullHooks())`,
               the run config the engine resolves for a chat turn and the same user message: LangGraph + the
               model + the node behaviours, no database;
- bare+hist:   the same, with hooks that hand the memory node the 10 messages the continuing conversation's
               memory reads (what the longer prompt alone costs the model);
- new:         a sync chat turn through the services, as POST /api/v1/chat/ runs it without HTTP:
               `execution_create(owner=..., chat=True, mode="sync", message=..., config={})` then
               `execution_run(execution_id=...)`, on a new conversation each time;
- continuing:  the same with `conversation_id=` one conversation per message kind that keeps growing (memory
               reads its last 10 messages);
- new, no broadcast (diagnostic, not a B1 figure): `new` with `workflows.realtime.broadcast` and
               `broadcast_many` replaced by no-ops for the turn, to show what handing events to the broadcaster's
               thread costs the turn.
The B1 figure is median(new or continuing) - median(bare), per kind. Between two sides (untimed) the broadcaster's
thread is left to finish the previous turn's sends, so they do not slow whatever side comes next.

After the timed loop, outside it (instrumented passes perturb timing, so they are kept apart):
- where the time of a turn goes, by phase (create / run set-up / each node / LangGraph between nodes / finish)
  and by recorder hook, next to the same nodes run bare (phase marks taken by wrapping the services' and the
  recorder's functions at run time; nothing in the application is changed);
- SQL statements and transactions per turn by phase (CaptureQueriesContext on the default connection: BEGIN,
  COMMIT, SAVEPOINT and RELEASE as Django's SQLite backend logs them, and writes outside any BEGIN, which SQLite
  autocommits as transactions of their own), with the statement sequence of one turn;
- unit costs of the primitives a turn is made of (an atomic block, an event insert, a price lookup, ...);
- cProfile of engine turns and of bare runs: self time by area and the extra per turn, and our functions by
  cumulative time (cProfile inflates Python-heavy code more than C: read it for proportions).

    .venv/bin/python bench/b1_engine_overhead.py [--reps 200] [--phase-reps 40] [--profile-turns 40] [--no-profile]
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import random
import re
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from harness import (
    ROOT,
    BenchRun,
    CpuMeter,
    format_cpu,
    log,
    machine_note,
    median,
    percentile,
    table,
)

KINDS = {"tool": "What is 12*7?", "plain": "hello there"}
VARIANTS = ("bare", "bare+hist", "new", "continuing", "new, no broadcast")
ENGINE = ("new", "continuing")
NO_BROADCAST = "new, no broadcast"  # diagnostic: realtime.broadcast replaced by a no-op for the turn
WARMUP = 10
TARGET_MS = 5.0


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


# --- Django on the throwaway database ---------------------------------------------------------------------
def django_on(database) -> None:
    """Django in this process on `database`, with exactly the environment its servers would get."""
    os.environ.update({k: v for k, v in database.env.items() if k != "PYTHONPATH"})
    import django

    django.setup()


# --- garbage collection pauses, charged to the side that was running -------------------------------------
class GcPauses:
    def __init__(self) -> None:
        self.side = None
        self.total: dict = defaultdict(float)
        self._started = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self.side is not None:
            self.total[self.side] += time.perf_counter() - self._started


GC = GcPauses()


# --- the compared sides ---------------------------------------------------------------------------------
class Bench:
    """Everything the turns need, set up once (imports after django.setup())."""

    def __init__(self) -> None:
        from django.contrib.auth import get_user_model
        from langchain_core.messages import HumanMessage

        from workflows.engine.compile import MAX_STEPS, graph_compile
        from workflows.engine.config import config_resolve
        from workflows.engine.graph import parse_graph
        from workflows.engine.runtime import NullHooks, RunContext
        from workflows.models import WorkflowExecution, WorkflowTemplate
        from workflows.services import execution_create, execution_run

        self.HumanMessage, self.RunContext, self.NullHooks = HumanMessage, RunContext, NullHooks
        self.MAX_STEPS = MAX_STEPS
        self.execution_create, self.execution_run = execution_create, execution_run
        self.Execution = WorkflowExecution
        self.user = get_user_model().objects.get(username="bench")
        template = WorkflowTemplate.objects.get(key="universal_chat")
        # What execution_create resolves for POST /chat/ {"message": ...}: the template's params under config {}.
        self.config = config_resolve(template.params, {})
        self.graph = parse_graph(template.graph)
        self.compiled = graph_compile(self.graph)
        self.conversations: dict[str, object] = {}  # kind -> the continuing conversation's id
        self.history: dict[str, list] = {}  # kind -> what that conversation's memory reads (for bare+hist)
        self._history_hooks: dict[str, type] = {}

    # bare ---------------------------------------------------------------------------------------------------
    def bare(self, message: str, hooks=None) -> tuple[float, float, dict]:
        """(wall s, this thread's CPU s, final state) of one invoke of the compiled graph with NullHooks."""
        c0, t0 = time.thread_time(), time.perf_counter()
        ctx = self.RunContext(config=self.config, hooks=hooks if hooks is not None else self.NullHooks())
        state = {"messages": [self.HumanMessage(message)], "variables": {}, "errors": []}
        result = self.compiled.invoke(state, config={"configurable": {"chatter": ctx}, "recursion_limit": self.MAX_STEPS})
        return time.perf_counter() - t0, time.thread_time() - c0, result

    def history_hooks(self, kind: str):
        """NullHooks whose history() hands the memory node the continuing conversation's last messages."""
        if kind not in self._history_hooks:
            history = self.history[kind]

            class HistoryHooks(self.NullHooks):
                def history(self, limit):
                    return list(history[-limit:])

            self._history_hooks[kind] = HistoryHooks
        return self._history_hooks[kind]()

    # engine -------------------------------------------------------------------------------------------------
    def engine(self, message: str, conversation_id=None) -> tuple[float, float, float, object]:
        """(wall s, CPU s, execution_create's share s, finished execution) of one sync chat turn."""
        c0, t0 = time.thread_time(), time.perf_counter()
        execution = self.execution_create(owner=self.user, chat=True, mode=self.Execution.Mode.SYNC, message=message,
                                          conversation_id=conversation_id, config={})
        t1 = time.perf_counter()
        execution = self.execution_run(execution_id=execution.pk)
        return time.perf_counter() - t0, time.thread_time() - c0, t1 - t0, execution

    def side(self, kind: str, variant: str) -> dict:
        message = KINDS[kind]
        if variant == "bare":
            wall, cpu, _ = self.bare(message)
            return {"wall": wall, "cpu": cpu}
        if variant == "bare+hist":
            wall, cpu, _ = self.bare(message, self.history_hooks(kind))
            return {"wall": wall, "cpu": cpu}
        conversation_id = self.conversations[kind] if variant == "continuing" else None
        if variant == NO_BROADCAST:
            from workflows import realtime

            saved = realtime.broadcast, realtime.broadcast_many
            realtime.broadcast = lambda envelope, *, owner_id: None
            realtime.broadcast_many = lambda envelopes, *, owner_id: None
            try:
                wall, cpu, created, execution = self.engine(message, conversation_id)
            finally:
                realtime.broadcast, realtime.broadcast_many = saved
        else:
            wall, cpu, created, execution = self.engine(message, conversation_id)
        if execution.status != "completed":
            raise RuntimeError(f"{kind}/{variant}: the turn ended {execution.status}: {execution.error_message}")
        return {"wall": wall, "cpu": cpu, "create": created}

    def prepare(self) -> None:
        """Warm every path (compile cache, imports, statement caches), start one continuing conversation per kind,
        and check that both sides do the same work."""
        from langchain_core.messages import AIMessage

        from conversations.selectors import conversation_history
        from workflows.engine.compile import graph_compile
        from workflows.engine.graph import parse_graph

        for kind, message in KINDS.items():
            _, _, _, first = self.engine(message)
            self.conversations[kind] = first.conversation_id
            if graph_compile(parse_graph(first.graph)) is not self.compiled:
                raise RuntimeError("the engine did not run the compiled graph the bare side invokes")
            _, _, state = self.bare(message)
            bare_text = state["messages"][-1].content
            engine_text = first.output_data["content"]
            if bare_text != engine_text:
                raise RuntimeError(f"bare and engine answered differently: {bare_text!r} vs {engine_text!r}")
            expected_tools = 1 if kind == "tool" else 0
            if first.tool_calls != expected_tools or first.llm_calls != 1 + expected_tools:
                raise RuntimeError(f"{kind}: {first.tool_calls} tool calls, {first.llm_calls} LLM calls")
            log(f"{kind}: {message!r} -> {engine_text!r} ({first.llm_calls} LLM calls, {first.tool_calls} tool calls)")
        for rep in range(WARMUP):
            for kind in KINDS:
                for variant in VARIANTS:
                    if variant == "bare+hist" and kind not in self.history:
                        continue
                    self.side(kind, variant)
                if kind not in self.history and rep >= 5:
                    # The continuing conversation has > 10 messages by now: memory reads a full window from here on.
                    rows = conversation_history(conversation_id=self.conversations[kind], before_sequence=None,
                                                limit=self.config["memory_window"])
                    self.history[kind] = [(self.HumanMessage if r.role == "user" else AIMessage)(r.content)
                                          for r in rows]


# --- phase marks (instrumented passes only) --------------------------------------------------------------
class Phases:
    """Where a turn is: (phase, node, hook), with perf_counter and the number of logged queries at each change."""

    def __init__(self) -> None:
        self.marks: list[tuple] = []
        self.phase, self.node, self.hook = "-", "-", "-"
        self.node_seen: dict[str, int] = {}
        self.queries_log = None  # the connection's queries_log while queries are captured

    def _mark(self) -> None:
        count = len(self.queries_log) if self.queries_log is not None else 0
        self.marks.append((self.phase, self.node, self.hook, time.perf_counter(), count))

    def start_turn(self) -> None:
        self.marks, self.node_seen = [], {}
        self.phase, self.node, self.hook = "-", "-", "-"

    def set_phase(self, phase: str, node: str = "-") -> None:
        self.phase, self.node, self.hook = phase, node, "-"
        self._mark()

    def node_enter(self, node_id: str) -> None:
        n = self.node_seen[node_id] = self.node_seen.get(node_id, 0) + 1
        self.node = f"{node_id} #{n}" if n > 1 or node_id == "model" else node_id
        self._mark()

    def node_leave(self) -> None:
        self.node = "between nodes"
        self._mark()

    def hook_enter(self, name: str) -> str:
        previous, self.hook = self.hook, name
        self._mark()
        return previous

    def hook_leave(self, previous: str) -> None:
        self.hook = previous
        self._mark()

    def spans(self) -> list[tuple]:
        """(phase, node, hook, seconds, first query index, end query index) for each stretch between marks."""
        return [(p, n, h, t1 - t0, q0, q1) for (p, n, h, t0, q0), (_, _, _, t1, q1) in zip(self.marks, self.marks[1:])]


PH = Phases()
HOOKS = ("node_started", "node_finished", "llm_called", "tool_called", "token", "limit_exceeded", "cancel_requested",
         "history", "documents", "price")


class Instrumented:
    """Context manager: wraps the services' and the recorder's functions with phase marks, and restores them."""

    def __enter__(self):
        from workflows import recorder, services
        from workflows.recorder import ExecutionRecorder

        self.saved = []

        def patch(owner, name, make):
            original = getattr(owner, name)
            self.saved.append((owner, name, original))
            setattr(owner, name, make(original))

        def graph_run(original):
            def wrapper(*args, **kwargs):
                PH.set_phase("graph", "between nodes")
                return original(*args, **kwargs)
            return wrapper

        def execution_finish(original):
            def wrapper(*args, **kwargs):
                PH.set_phase("finish")
                return original(*args, **kwargs)
            return wrapper

        def function_marked(name):
            def make(original):
                def wrapper(*args, **kwargs):
                    previous = PH.hook_enter(name)
                    try:
                        return original(*args, **kwargs)
                    finally:
                        PH.hook_leave(previous)
                return wrapper
            return make

        patch(services, "graph_run", graph_run)
        patch(services, "execution_finish", execution_finish)
        for name in HOOKS:
            patch(ExecutionRecorder, name, _hook_wrapper(name))
        # Recorder steps outside the engine's hooks, where the code under test has them (it is being changed).
        for name in ("started",):
            if hasattr(ExecutionRecorder, name):
                patch(ExecutionRecorder, name, _hook_wrapper(name))
        for module in (services, recorder):
            if hasattr(module, "audit_record"):
                patch(module, "audit_record", function_marked("audit_record"))
        return self

    def __exit__(self, *exc):
        for owner, name, original in reversed(self.saved):
            setattr(owner, name, original)


def _hook_wrapper(name: str):
    def make(original):
        def wrapper(self, *args, **kwargs):
            if name == "node_started":
                PH.node_enter(args[0].id)
            previous = PH.hook_enter(name)
            try:
                return original(self, *args, **kwargs)
            finally:
                PH.hook_leave(previous)
                if name == "node_finished":
                    PH.node_leave()
        return wrapper
    return make


def marking_hooks(base):
    """NullHooks (or a subclass) whose node boundaries and hook calls are marked like the recorder's."""
    hooks = base

    class Marking:
        def __getattr__(self, name):
            target = getattr(hooks, name)
            if name not in HOOKS:
                return target
            return _hook_wrapper(name)(lambda _self, *a, **k: target(*a, **k)).__get__(self)

    return Marking()


# --- SQL accounting ---------------------------------------------------------------------------------------
def sql_kind(sql: str) -> str:
    s = sql.lstrip().upper()
    for prefix, kind in (("BEGIN", "begin"), ("COMMIT", "commit"), ("ROLLBACK TO SAVEPOINT", "rollback_sp"),
                         ("ROLLBACK", "rollback"), ("SAVEPOINT", "savepoint"), ("RELEASE SAVEPOINT", "release"),
                         ("SELECT", "select"), ("INSERT", "insert"), ("UPDATE", "update"), ("DELETE", "delete")):
        if s.startswith(prefix):
            return kind
    return "other"


_TABLE = re.compile(r'(?:FROM|INTO|UPDATE)\s+"([a-z0-9_]+)"', re.IGNORECASE)


def sql_short(sql: str) -> str:
    kind = sql_kind(sql)
    if kind in ("begin", "commit", "rollback", "savepoint", "release", "rollback_sp"):
        return sql.strip() if kind == "begin" else kind.upper().replace("_SP", " TO SAVEPOINT")
    found = _TABLE.search(sql)
    table_name = found.group(1) if found else "?"
    for prefix in ("workflows_", "conversations_", "analytics_", "audit_"):
        table_name = table_name.removeprefix(prefix)
    extra = ""
    if kind == "select" and re.search(r"\bCOUNT\(|\bMAX\(|\bSUM\(", sql, re.IGNORECASE):
        extra = " (aggregate)"
    if kind == "insert" and "ON CONFLICT" in sql.upper():
        extra = " (upsert)"
    return f"{kind.upper()} {table_name}{extra}"


def sql_tally(statements: list[str], in_tx: bool) -> tuple[dict, bool]:
    """Counts for a run of statements; `in_tx` is whether a BEGIN is open before the first one."""
    counts = defaultdict(int)
    for sql in statements:
        kind = sql_kind(sql)
        if kind == "begin":
            in_tx = True
        elif kind in ("commit", "rollback"):
            in_tx = False
        if kind in ("select", "insert", "update", "delete", "other"):
            counts["statements"] += 1
            counts["reads" if kind == "select" else "writes"] += 1
            if not in_tx and kind != "select":
                counts["autocommit writes"] += 1
        counts[kind] += 1
    return counts, in_tx


# --- passes after the timed loop -------------------------------------------------------------------------
def phase_pass(bench: Bench, reps: int, capture: bool) -> dict:
    """Instrumented turns: {(kind, variant): [spans of each turn]}, and the captured SQL of each when `capture`."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from workflows.api.serializers import RunResultSerializer
    from workflows.realtime import broadcaster

    out: dict = defaultdict(list)
    sql: dict = defaultdict(list)
    with Instrumented():
        for rep in range(reps):
            for kind, message in KINDS.items():
                for variant in ("bare", "new", "continuing"):
                    PH.start_turn()
                    capture_ctx = CaptureQueriesContext(connection) if capture else None
                    if capture_ctx is not None:
                        capture_ctx.__enter__()
                        PH.queries_log = connection.queries_log
                        connection.queries_log.clear()
                    try:
                        if variant == "bare":
                            PH.set_phase("graph", "between nodes")
                            bench.bare(message, marking_hooks(bench.NullHooks()))
                        else:
                            PH.set_phase("create")
                            execution = bench.execution_create(
                                owner=bench.user, chat=True, mode=bench.Execution.Mode.SYNC, message=message,
                                conversation_id=bench.conversations[kind] if variant == "continuing" else None,
                                config={})
                            PH.set_phase("run set-up")
                            execution = bench.execution_run(execution_id=execution.pk)
                            PH.set_phase("view: RunResultSerializer (not in B1)")
                            RunResultSerializer(execution).data  # noqa: B018 - what the view renders next
                        PH.set_phase("end")
                    finally:
                        if capture_ctx is not None:
                            statements = [q["sql"] for q in connection.queries_log]
                            capture_ctx.__exit__(None, None, None)
                            PH.queries_log = None
                    out[(kind, variant)].append(PH.spans())
                    broadcaster.flush()
                    if capture:
                        sql[(kind, variant)].append(statements)
    return {"spans": out, "sql": sql}


def phase_label(phase: str, node: str) -> str:
    if phase == "graph":
        return f"node {node}" if node != "between nodes" else "LangGraph + routing between nodes"
    return phase


def phase_times(turns: list[list[tuple]], by_hook: bool = False) -> dict[str, float]:
    """Median over turns of the time each label took in a turn (summed within the turn)."""
    per_turn = []
    for spans in turns:
        acc: dict[str, float] = defaultdict(float)
        for phase, node, hook, seconds, _, _ in spans:
            if phase == "end":
                continue
            if by_hook:
                acc[hook if hook != "-" else "(not in a hook)"] += seconds
            else:
                acc[phase_label(phase, node)] += seconds
        per_turn.append(acc)
    labels = []
    for acc in per_turn:
        labels += [label for label in acc if label not in labels]
    return {label: median([acc.get(label, 0.0) for acc in per_turn]) for label in labels}


def report_phases(result: dict) -> None:
    spans = result["spans"]
    for kind, message in KINDS.items():
        bare = phase_times(spans[(kind, "bare")])
        new = phase_times(spans[(kind, "new")])
        cont = phase_times(spans[(kind, "continuing")])
        labels = []
        for times in (new, cont, bare):
            labels += [label for label in times if label not in labels]
        rows = []
        for label in labels:
            cells = [bare.get(label), new.get(label), cont.get(label)]
            rows.append([label, *("" if c is None else ms(c) for c in cells),
                         "" if cells[1] is None else ms(cells[1] - (cells[0] or 0))])
        totals = [sum(t.values()) for t in (bare, new, cont)]
        rows.append(["sum of the medians", *(ms(t) for t in totals), ms(totals[1] - totals[0])])
        print(f"\nWhere a turn's time goes, {kind} ({message!r}), median ms per turn over {len(spans[(kind, 'new')])} "
              f"instrumented turns (phase marks add a little; a node includes the recorder hooks it calls):")
        print(table(rows, ["phase", "bare", "new", "continuing", "new - bare"]))
        hooks_new = phase_times(spans[(kind, "new")], by_hook=True)
        hooks_cont = phase_times(spans[(kind, "continuing")], by_hook=True)
        rows = [[hook, ms(hooks_new.get(hook, 0)), ms(hooks_cont.get(hook, 0))]
                for hook in sorted(set(hooks_new) | set(hooks_cont), key=lambda h: -hooks_cont.get(h, 0))
                if hook != "(not in a hook)"]
        print(f"  recorder hooks, {kind}: median ms per turn, all calls summed")
        print(table(rows, ["hook", "new", "continuing"]))


def report_sql(result: dict) -> dict:
    """Per engine case: statements and transactions by phase (they are the same every turn; the first captured
    turn is shown, and any turn that differs is reported)."""
    summary = {}
    for kind in KINDS:
        for variant in ENGINE:
            turns_sql = result["sql"][(kind, variant)]
            turns_spans = result["spans"][(kind, variant)]
            differing = sum(1 for s in turns_sql[1:] if [sql_short(q) for q in s] != [sql_short(q) for q in turns_sql[0]])
            statements, spans = turns_sql[0], turns_spans[0]
            by_label: dict[str, list[str]] = {}
            by_hook: dict[str, list[str]] = defaultdict(list)
            for phase, node, hook, _, q0, q1 in spans:
                label = phase_label(phase, node)
                by_label.setdefault(label, []).extend(statements[q0:q1])
                by_hook[hook if hook != "-" else f"(services: {phase})"].extend(statements[q0:q1])
            rows, in_tx, total = [], False, defaultdict(int)
            b1_total = defaultdict(int)
            for label, items in by_label.items():
                counts, in_tx = sql_tally(items, in_tx)
                for key, value in counts.items():
                    total[key] += value
                    if not label.startswith("view"):
                        b1_total[key] += value
                rows.append([label, counts["statements"], counts["reads"], counts["writes"], counts["begin"],
                             counts["commit"], counts["savepoint"], counts["autocommit writes"]])
            rows.append(["turn (B1: create + run + finish)", b1_total["statements"], b1_total["reads"],
                         b1_total["writes"], b1_total["begin"], b1_total["commit"], b1_total["savepoint"],
                         b1_total["autocommit writes"]])
            print(f"\nSQL per turn, {kind} / {variant} (captured {len(turns_sql)} turns; "
                  f"{'all identical' if not differing else f'{differing} differ from the first'}): statements "
                  f"(excluding transaction control), BEGIN...COMMIT transactions, SAVEPOINTs (nested atomic "
                  f"blocks), writes outside BEGIN (each its own autocommitted transaction)")
            print(table(rows, ["phase", "statements", "reads", "writes", "BEGIN", "COMMIT", "SAVEPOINT",
                               "autocommit writes"]))
            hook_rows = []
            in_tx = False
            for hook, items in by_hook.items():
                counts, in_tx = sql_tally(items, in_tx)
                hook_rows.append([hook, counts["statements"], counts["commit"], counts["savepoint"]])
            print(table(hook_rows, ["by recorder hook / service", "statements", "COMMIT", "SAVEPOINT"]))
            summary[(kind, variant)] = {"by_label": by_label, "total": b1_total}
    # One full statement sequence: the largest case.
    kind, variant = "tool", "continuing"
    print(f"\nStatement sequence of one turn, {kind} / {variant} (table names without the app prefix):")
    for label, items in summary[(kind, variant)]["by_label"].items():
        print(f"  [{label}] " + "; ".join(sql_short(q) for q in items))
    return summary


def micro_pass(bench: Bench, n: int = 300) -> list[list]:
    """Unit costs of the primitives a turn is made of, median of `n` (or per row for batches)."""
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction
    from django.utils import timezone

    from analytics.selectors import price_for_call
    from conversations.services import message_save
    from workflows.engine.compile import graph_compile
    from workflows.engine.config import config_resolve
    from workflows.engine.graph import parse_graph
    from workflows.events import event_publish, event_record
    from workflows.models import (
        ExecutionEvent,
        NodeExecution,
        WorkflowExecution,
        WorkflowTemplate,
    )
    from workflows.recorder import ExecutionRecorder

    other, _ = get_user_model().objects.get_or_create(username="b1-micro")
    execution = bench.execution_create(owner=other, chat=True, mode="sync", message="micro", config={})
    template = WorkflowTemplate.objects.get(key="universal_chat")
    seq = [100_000]

    def timed(fn, reps=n, per=1):
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            took = getattr(fn, "took", None)  # a function that times only part of itself says so
            times.append((took if took is not None else time.perf_counter() - t0) / per)
        return median(times)

    def next_seq():
        seq[0] += 1
        return seq[0]

    def empty_atomic():
        with transaction.atomic():
            pass

    def atomic_select():
        with transaction.atomic():
            WorkflowExecution.objects.filter(pk=execution.pk).values_list("status").first()

    def event_in_own_tx():
        with transaction.atomic():
            event_record(execution_id=execution.pk, seq=next_seq(), event="node_started", data={"node_id": "x"},
                         sink=None, owner_id=other.pk)

    def events_10_one_tx():
        with transaction.atomic():
            for _ in range(10):
                event_record(execution_id=execution.pk, seq=next_seq(), event="node_started", data={"node_id": "x"},
                             sink=None, owner_id=other.pk)

    def events_10_bulk():
        now = timezone.now()
        with transaction.atomic():
            ExecutionEvent.objects.bulk_create([ExecutionEvent(execution_id=execution.pk, seq=next_seq(), event="x",
                                                               data={"node_id": "x"}, created_at=now)
                                                for _ in range(10)])

    index = [0]

    def node_row_pair():
        index[0] += 1
        with transaction.atomic():
            row = NodeExecution.objects.create(execution=execution, index=10_000 + index[0], node_id="x",
                                               node_type="start", started_at=timezone.now())
        with transaction.atomic():
            NodeExecution.objects.filter(pk=row.pk).update(status="completed", completed_at=timezone.now(),
                                                           duration_ms=0, output={}, error_message="")

    recorder = ExecutionRecorder(execution)
    recorder.seq, recorder.index = 500_000, 50_000  # ranges of their own: (execution, seq) and (execution, index)
    node = bench.graph.node("start")

    def recorder_node_pair():
        recorder.node_started(node)
        recorder.node_finished(node, status="completed", output={})
        recorder.flush()  # a node that does not wait is held until the run's next write; write it now

    def node_merged():
        # One node's trace in one transaction: the row written once, completed, and its two events in one INSERT.
        index[0] += 1
        now = timezone.now()
        with transaction.atomic():
            NodeExecution.objects.create(execution=execution, index=10_000 + index[0], node_id="x", node_type="start",
                                         status="completed", started_at=now, completed_at=now, duration_ms=0)
            ExecutionEvent.objects.bulk_create([ExecutionEvent(execution_id=execution.pk, seq=next_seq(), event=e,
                                                               data={"node_id": "x"}, created_at=now)
                                                for e in ("node_started", "node_completed")])

    def three_nodes_bulk():
        # The pre-model nodes (start, memory, retrieval) in one transaction: 2 bulk INSERTs.
        now = timezone.now()
        with transaction.atomic():
            rows = []
            for _ in range(3):
                index[0] += 1
                rows.append(NodeExecution(execution=execution, index=10_000 + index[0], node_id="x", node_type="start",
                                          status="completed", started_at=now, completed_at=now, duration_ms=0))
            NodeExecution.objects.bulk_create(rows)
            ExecutionEvent.objects.bulk_create([ExecutionEvent(execution_id=execution.pk, seq=next_seq(), event="x",
                                                               data={"node_id": "x"}, created_at=now)
                                                for _ in range(6)])

    def raw_event_insert():
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute('INSERT INTO "workflows_executionevent" ("execution_id", "seq", "event", "data", '
                           '"created_at") VALUES (%s, %s, %s, %s, %s)',
                           [execution.pk.hex, next_seq(), "node_started", '{"node_id": "x"}',
                            connection.ops.adapt_datetimefield_value(timezone.now())])

    def publish_idle():
        time.sleep(0.002)  # the broadcaster's loop has drained and sleeps in epoll, as between a turn's events
        t0 = time.perf_counter()
        event_publish({"event": "x", "execution_id": str(execution.pk), "seq": None, "ts": "", "data": {}},
                      sink=None, owner_id=other.pk)
        publish_idle.took = time.perf_counter() - t0

    def raw_begin_commit():
        with connection.cursor() as cursor:
            cursor.execute("BEGIN IMMEDIATE")
            cursor.execute("COMMIT")

    rows = [
        ["graph_compile(graph), cache hit (json.dumps of the graph as key)", timed(lambda: graph_compile(bench.graph))],
        ["parse_graph(universal_chat)", timed(lambda: parse_graph(template.graph))],
        ["config_resolve(params, {})", timed(lambda: config_resolve(template.params, {}))],
        ["raw BEGIN IMMEDIATE + COMMIT (cursor, no ORM)", timed(raw_begin_commit)],
        ["transaction.atomic(), empty (BEGIN IMMEDIATE + COMMIT)", timed(empty_atomic)],
        ["atomic + SELECT of one column by pk", timed(atomic_select)],
        ["SELECT WorkflowExecution full row by pk (.first(): graph/config JSON decoded)",
         timed(lambda: WorkflowExecution.objects.filter(pk=execution.pk).first())],
        ["execution.events.count() (ExecutionRecorder.__init__)", timed(lambda: execution.events.count())],
        ["price_for_call(local, local-echo-1)", timed(lambda: price_for_call(provider="local", model="local-echo-1"))],
        ["one event: atomic + event_record (INSERT + on_commit publish)", timed(event_in_own_tx)],
        ["10 events in one atomic, event_record each (per event)", timed(events_10_one_tx, reps=n // 5, per=10)],
        ["10 events bulk_create in one atomic (per event)", timed(events_10_bulk, reps=n // 5, per=10)],
        ["NodeExecution INSERT + UPDATE, each in its own atomic", timed(node_row_pair)],
        ["recorder: a node that does not wait, node_started + node_finished + flush (1 tx: its row, 2 events)",
         timed(recorder_node_pair)],
        ["one node's trace merged: atomic + INSERT completed row + bulk INSERT of its 2 events", timed(node_merged)],
        ["3 nodes' trace in one atomic: bulk INSERT 3 rows + bulk INSERT 6 events", timed(three_nodes_bulk)],
        ["one event, raw INSERT through the cursor in its own atomic (no ORM)", timed(raw_event_insert)],
        ["event_publish to an idle broadcaster loop (the call only; its thread then runs the sends)",
         timed(publish_idle, reps=100)],
        ["message_save (lock, MAX(sequence), INSERT, 2 receivers)", timed(lambda: message_save(
            conversation_id=execution.conversation_id, role="user", content="x", execution=execution,
            provider_used="local", model_used="local-echo-1", actor=other), reps=n // 3)],
    ]
    return rows


# --- profile ---------------------------------------------------------------------------------------------
def area_of(filename: str, funcname: str) -> str:
    if filename == "~":
        if "sqlite" in funcname.lower():
            return "sqlite3 C calls (execute, commit, fetch; the GIL is released in them)"
        if "_socket.socket" in funcname:
            return "socket.send: waking the broadcaster's loop (call_soon_threadsafe), GIL hand-off included"
        return "C builtins (isinstance, getattr, dict, re, ...)"
    path = filename
    for marker in ("site-packages/",):
        if marker in path:
            rest = path.split(marker, 1)[1]
            pkg = rest.split("/", 1)[0]
            if pkg == "django":
                sub = rest.split("/")
                if sub[1] == "db":
                    if len(sub) > 2 and sub[2] == "models":
                        return "Django ORM (django/db/models: querysets, compiler, model init)"
                    return "Django db backend + transaction (django/db/backends, transaction.py, utils.py)"
                if sub[1] == "dispatch":
                    return "Django signals (django/dispatch)"
                return f"Django other (django/{sub[1]})"
            return pkg.removesuffix(".py")
    if path.startswith(str(ROOT)) and "/.venv/" not in path:
        rel = path[len(str(ROOT)) + 1:]
        return f"ours: {rel}"
    name = Path(path).name
    if path.startswith("<"):
        return "other (<frozen>, <string>)"
    return f"stdlib: {name}"


def profile_turns(bench: Bench, variants: tuple[str, ...], turns: int) -> tuple[pstats.Stats, int]:
    profiler = cProfile.Profile()
    count = 0
    for _ in range(turns):
        for kind in KINDS:
            for variant in variants:
                profiler.enable()
                bench.side(kind, variant)
                profiler.disable()
                count += 1
    return pstats.Stats(profiler), count


def profile_report(bench: Bench, turns: int) -> None:
    engine_stats, engine_n = profile_turns(bench, ENGINE, turns)
    bare_stats, bare_n = profile_turns(bench, ("bare", "bare+hist", "bare", "bare+hist"), turns // 2 or 1)

    def by_area(stats, n):
        acc: dict[str, float] = defaultdict(float)
        total = 0.0
        for (filename, _, funcname), (_, _, tottime, _, _) in stats.stats.items():
            acc[area_of(filename, funcname)] += tottime
            total += tottime
        return {k: v / n for k, v in acc.items()}, total / n

    engine_area, engine_total = by_area(engine_stats, engine_n)
    bare_area, bare_total = by_area(bare_stats, bare_n)
    print(f"\ncProfile: {engine_n} engine turns (new and continuing, both kinds) vs {bare_n} bare runs (the same "
          f"mix of kinds); self time by area, ms per turn. Profiled totals: engine {ms(engine_total)}, bare "
          f"{ms(bare_total)}, extra {ms(engine_total - bare_total)} (cProfile inflates Python-heavy code: read it "
          f"for proportions, the timed loop for figures)")
    areas = sorted(set(engine_area) | set(bare_area), key=lambda a: -(engine_area.get(a, 0) - bare_area.get(a, 0)))
    rows = []
    for area in areas:
        extra = engine_area.get(area, 0) - bare_area.get(area, 0)
        if abs(extra) < 0.00002 and engine_area.get(area, 0) < 0.00005:
            continue
        rows.append([area, ms(bare_area.get(area, 0)), ms(engine_area.get(area, 0)), ms(extra),
                     f"{extra / (engine_total - bare_total) * 100:.0f}%"])
    print(table(rows[:28], ["area (self time)", "bare", "engine", "extra", "share of extra"]))

    def ours(stats, n):
        found = []
        for (filename, line, funcname), (cc, nc, tottime, cumtime, _) in stats.stats.items():
            if filename.startswith(str(ROOT)) and "/.venv/" not in filename:
                rel = filename[len(str(ROOT)) + 1:]
                found.append((f"{rel}:{line} {funcname}", nc / n, tottime / n, cumtime / n))
        return sorted(found, key=lambda r: -r[3])

    rows = [[name, f"{calls:.1f}", ms(cum), ms(tot)] for name, calls, tot, cum in ours(engine_stats, engine_n)
            if not name.startswith("workflows/engine/") or "runtime.py" in name or "compile.py" in name][:34]
    print("\ncProfile, engine turns: our functions by cumulative time (ms per turn; the engine package's node "
          "behaviours left out except runtime/compile, they run bare too)")
    print(table(rows, ["function", "calls/turn", "cumulative", "self"]))

    library = []
    for (filename, line, funcname), (cc, nc, tottime, cumtime, _) in engine_stats.stats.items():
        if "django/" in filename or filename == "~":
            label = funcname if filename == "~" else f"{filename.split('site-packages/')[-1]}:{line} {funcname}"
            library.append((label, nc / engine_n, tottime / engine_n, cumtime / engine_n))
    rows = [[label, f"{calls:.1f}", ms(tot), ms(cum)] for label, calls, tot, cum in
            sorted(library, key=lambda r: -r[2])[:16]]
    print("\ncProfile, engine turns: Django and C functions by self time (ms per turn)")
    print(table(rows, ["function", "calls/turn", "self", "cumulative"]))
    picks = ("atomic", "__enter__", "__exit__", "execute_sql", "as_sql", "send", "_commit", "save", "update",
             "create", "__init__")
    rows = [[label, f"{calls:.1f}", ms(cum)] for label, calls, tot, cum in sorted(library, key=lambda r: -r[3])
            if "django/" in label and any(p in label.rsplit(" ", 1)[-1] for p in picks)][:14]
    print("\ncProfile, engine turns: Django entry points by cumulative time (ms per turn)")
    print(table(rows, ["function", "calls/turn", "cumulative"]))


# --- threads' CPU ------------------------------------------------------------------------------------------
_TICKS = os.sysconf("SC_CLK_TCK")


def threads_cpu() -> dict[str, float]:
    """CPU seconds so far of this process's threads, by name (the broadcaster's loop, the heartbeat, ...)."""
    found: dict[str, float] = defaultdict(float)
    by_id = {t.native_id: t.name for t in threading.enumerate()}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = by_id.get(int(task.name), "other")
        found[name if name.startswith(("chatter-", "MainThread")) else "other"] += (int(fields[11]) + int(fields[12])) / _TICKS
    return found


# --- what code was measured -------------------------------------------------------------------------------
MEASURED = ("workflows/services.py", "workflows/recorder.py", "workflows/events.py", "workflows/realtime.py",
            "workflows/engine/compile.py", "workflows/engine/runtime.py", "workflows/engine/nodes.py",
            "conversations/services.py", "conversations/signals.py", "analytics/services.py",
            "analytics/receivers.py", "analytics/selectors.py", "audit/services.py")


def code_note() -> str:
    """The commit, and the files on the turn's path that differ from it (others edit them while we measure)."""
    import hashlib
    import subprocess

    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=False).stdout.strip()
    changed = subprocess.run(["git", "diff", "--name-only", "HEAD", "--", *MEASURED], cwd=ROOT, capture_output=True,
                             text=True, check=False).stdout.split()
    digests = [f"{name} {hashlib.sha1((ROOT / name).read_bytes()).hexdigest()[:8]}" for name in changed]
    return f"code: HEAD {head}; working-tree changes on the turn's path: {', '.join(digests) or 'none'}"


# --- main --------------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=200, help="timed repetitions of every side (default 200)")
    parser.add_argument("--phase-reps", type=int, default=40, help="instrumented turns per case for the phase "
                        "breakdown (default 40)")
    parser.add_argument("--profile-turns", type=int, default=40, help="cProfiled turns per engine case (default 40)")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile pass")
    args = parser.parse_args()

    with BenchRun("b1") as run:
        database = run.database("sqlite", CHATTER_LOCAL_TOKEN_DELAY_MS=0)
        django_on(database)
        from django.conf import settings
        from django.db import connection

        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode")
            journal = cursor.fetchone()[0]
            cursor.execute("PRAGMA synchronous")
            synchronous = cursor.fetchone()[0]
        log(f"SQLite {database.env['CHATTER_VAR_DIR']}: journal_mode={journal}, synchronous={synchronous}, "
            f"transaction_mode={settings.DATABASES['default']['OPTIONS'].get('transaction_mode')}, "
            f"DEBUG={settings.DEBUG}, token delay {settings.CHATTER_LOCAL_TOKEN_DELAY_MS} ms")

        print(code_note())
        bench = Bench()
        log("warming up (compile cache, imports) and checking both sides give the same answers")
        bench.prepare()

        from workflows.realtime import broadcaster

        sides = [(kind, variant) for kind in KINDS for variant in VARIANTS]
        results: dict[tuple, list[dict]] = {side: [] for side in sides}
        # A new random order every repetition: a rotation keeps each side behind the same neighbour, and what ran
        # just before (the engine's code paths, its cache footprint) measurably changes the next side's time.
        shuffle = random.Random(1)
        log(f"{args.reps} timed repetitions of {len(sides)} sides, interleaved")
        meter = CpuMeter({"this process": os.getpid()})
        meter.start()
        threads_before = threads_cpu()
        started = time.monotonic()
        gc.callbacks.append(GC)
        for rep in range(args.reps):
            order = sides[:]
            shuffle.shuffle(order)
            for side in order:
                GC.side = side
                results[side].append(bench.side(*side))
                GC.side = None
                # Untimed: let the broadcaster's thread finish this turn's sends, so they do not run into (and
                # slow) the next side, whichever it is.
                broadcaster.flush()
        elapsed = time.monotonic() - started
        gc.callbacks.remove(GC)
        threads_after = threads_cpu()
        cpu = meter.stop()

        report(results, args)
        engine_turns = args.reps * len(KINDS) * len(ENGINE)
        thread_rows = [[name, f"{(threads_after[name] - threads_before.get(name, 0)):.2f}",
                        ms((threads_after[name] - threads_before.get(name, 0)) / engine_turns)]
                       for name in sorted(threads_after)]
        print(f"\nCPU while timing ({elapsed:.1f} s): {format_cpu(cpu)}")
        print(table(thread_rows, ["thread of this process", "CPU s", "ms per engine turn"]))
        print(machine_note())

        log(f"instrumented pass: {args.phase_reps} turns per case with phase marks")
        phases = phase_pass(bench, args.phase_reps, capture=False)
        report_phases(phases)

        log("SQL pass: 3 turns per case with CaptureQueriesContext")
        captured = phase_pass(bench, 3, capture=True)
        report_sql(captured)

        log("unit costs")
        rows = [[label, ms(seconds)] for label, seconds in micro_pass(bench)]
        print("\nUnit costs on this database (median ms per operation):")
        print(table(rows, ["operation", "ms"]))

        if not args.no_profile:
            log(f"cProfile: {args.profile_turns} turns per engine case, and bare runs")
            profile_report(bench, args.profile_turns)
        print()
        print(machine_note())
    return 0


def report(results: dict, args) -> None:
    print(f"\nB1: one sync chat turn through the engine vs the same compiled graph invoked bare, local model, no token "
          f"delay, SQLite; {args.reps} interleaved repetitions of each side (ms)")
    for kind, message in KINDS.items():
        base = [r["wall"] for r in results[(kind, "bare")]]
        base_hist = [r["wall"] for r in results[(kind, "bare+hist")]]
        base_cpu = [r["cpu"] for r in results[(kind, "bare")]]
        rows = []
        for variant in VARIANTS:
            items = results[(kind, variant)]
            wall = [r["wall"] for r in items]
            cpu = [r["cpu"] for r in items]
            overhead = "" if variant.startswith("bare") else ms(median(wall) - median(base))
            cpu_overhead = "" if variant.startswith("bare") else ms(median(cpu) - median(base_cpu))
            paired = "" if variant.startswith("bare") else ms(median([a - b for a, b in zip(wall, base)]))
            vs_hist = "" if variant != "continuing" else ms(median(wall) - median(base_hist))
            create = ms(median([r["create"] for r in items])) if "create" in items[0] else ""
            gc_ms = ms(GC.total.get((kind, variant), 0.0) / len(items))
            rows.append([variant, ms(median(wall)), ms(percentile(wall, 95)), ms(min(wall)), ms(median(cpu)),
                         gc_ms, create, overhead, paired, vs_hist, cpu_overhead])
        print(f"\n{kind}: {message!r}")
        print(table(rows, ["side", "median", "p95", "min", "CPU median", "GC mean", "create", "overhead (median diff)",
                           "median of paired diffs", "vs bare+hist", "CPU overhead"]))
    print(f"target: overhead <= {TARGET_MS:.0f} ms median. 'create' is execution_create's share of the turn; "
          f"'CPU' is this thread's CPU time (the broadcaster's thread runs besides), less sensitive than wall time "
          f"to other processes on the machine; 'CPU overhead' is its median minus bare's; 'GC mean' the garbage "
          f"collector's pauses per turn.")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped")
        sys.exit(130)
