"""B1's instrumented pass (after the timed loop, since marks perturb timing): where a turn's time goes, by phase
(create / run set-up / each node / LangGraph between nodes / finish) and by recorder hook, next to the same
nodes run bare; with the SQL each stretch issued when asked to capture it.

Marks are taken by wrapping, for the pass only, the functions and hook methods that bench.chatter_calls names
(B1_PHASE_MARKS, B1_HOOKS_CLASS, B1_HOOKS, B1_MARKED_FUNCTIONS); nothing in the application is changed, and a
name that no longer exists is skipped and reported."""
from __future__ import annotations

import importlib
import time
from collections import defaultdict

from bench import chatter_calls
from bench.b1_sides import KINDS, Sides
from bench.processes import log
from bench.stats import median, ms, table


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


def _phase_wrapper(phase: str):
    def make(original):
        def wrapper(*args, **kwargs):
            PH.set_phase(phase, "between nodes" if phase == "graph" else "-")
            return original(*args, **kwargs)
        return wrapper
    return make


def _function_marked(label: str):
    def make(original):
        def wrapper(*args, **kwargs):
            previous = PH.hook_enter(label)
            try:
                return original(*args, **kwargs)
            finally:
                PH.hook_leave(previous)
        return wrapper
    return make


class Instrumented:
    """Context manager: the named functions and hook methods wrapped with phase marks, restored on exit."""

    def __enter__(self):
        self.saved, missing = [], []

        def patch(module_name: str, owner_name: str | None, name: str, make) -> None:
            owner = importlib.import_module(module_name)
            if owner_name is not None:
                owner = getattr(owner, owner_name, None)
            if owner is None or not hasattr(owner, name):
                missing.append(f"{module_name}.{owner_name + '.' if owner_name else ''}{name}")
                return
            original = getattr(owner, name)
            self.saved.append((owner, name, original))
            setattr(owner, name, make(original))

        for phase, (module_name, name) in chatter_calls.B1_PHASE_MARKS.items():
            patch(module_name, None, name, _phase_wrapper(phase))
        module_name, class_name = chatter_calls.B1_HOOKS_CLASS
        for name in chatter_calls.B1_HOOKS:
            patch(module_name, class_name, name, _hook_wrapper(name))
        for label, targets in chatter_calls.B1_MARKED_FUNCTIONS.items():
            for module_name, name in targets:
                patch(module_name, None, name, _function_marked(label))
        if missing:
            log(f"phase marks: not found, skipped: {', '.join(missing)}")
        return self

    def __exit__(self, *exc):
        for owner, name, original in reversed(self.saved):
            setattr(owner, name, original)


class MarkingHooks:
    """Hooks for the bare side whose node boundaries and hook calls are marked like the recorder's."""

    def __init__(self, hooks) -> None:
        self._hooks = hooks

    def __getattr__(self, name):
        target = getattr(self._hooks, name)
        if name not in chatter_calls.B1_HOOKS:
            return target
        return _hook_wrapper(name)(lambda _self, *a, **k: target(*a, **k)).__get__(self)


def phase_pass(sides: Sides, reps: int, capture: bool) -> dict:
    """Instrumented turns: {"spans": {(kind, variant): [spans of each turn]}, "sql": {…: [statements of each]}}."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    out: dict = defaultdict(list)
    sql: dict = defaultdict(list)
    with Instrumented():
        for _ in range(reps):
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
                            sides.chat.invoke(message, hooks=MarkingHooks(sides.chat.hooks()))
                        else:
                            PH.set_phase("request")
                            execution = chatter_calls.sync_turn(
                                user=sides.user, message=message,
                                conversation_id=sides.conversations[kind] if variant == "continuing" else None)
                            PH.set_phase("view: rendering the result (not in B1)")
                            chatter_calls.turn_render(execution)
                        PH.set_phase("end")
                    finally:
                        if capture_ctx is not None:
                            statements = [q["sql"] for q in connection.queries_log]
                            capture_ctx.__exit__(None, None, None)
                            PH.queries_log = None
                    out[(kind, variant)].append(PH.spans())
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
