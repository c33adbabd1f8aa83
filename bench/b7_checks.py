"""B7's checks, read from the database directly once every run has ended: I1-I3 exactly (the project's own
independent checks, through bench.chatter_calls), the drift check `reconcile_aggregates` runs, message
sequences, I6, and what the websocket clients received. Models are reached by name (django.apps)."""
from __future__ import annotations

import time

from bench import chatter_calls
from bench.processes import log


def wait_all_finished(execution_ids: list[str], stall: float) -> dict[str, dict]:
    """Until every run is terminal, or none has ended for `stall` seconds (a run that never started)."""
    from django.apps import apps
    from django.db import OperationalError, connection

    WorkflowExecution = apps.get_model("workflows", "WorkflowExecution")

    progress, last_change = -1, time.monotonic()
    try:
        while True:
            try:
                rows = {str(r["id"]): r for r in WorkflowExecution.objects.filter(pk__in=execution_ids).values(
                    "id", "status", "created_at", "started_at", "completed_at", "mode", "error_type",
                    "error_message")}
            except OperationalError:  # no connection slot left (the servers hold them all): try again
                connection.close()
                if time.monotonic() - last_change > stall:
                    log(f"no database connection for {stall:.0f} s (the servers hold every slot): giving up")
                    return {}
                time.sleep(0.5)
                continue
            ended = sum(r["status"] in WorkflowExecution.TERMINAL for r in rows.values())
            if ended == len(execution_ids):
                return rows
            if ended != progress:
                progress, last_change = ended, time.monotonic()
            elif time.monotonic() - last_change > stall:
                log(f"{len(execution_ids) - ended} runs have not ended and none ended for {stall:.0f} s: giving up")
                return rows
            time.sleep(0.2)
    finally:
        connection.close()


def invariant_checks(turns: list, setup_turns: dict[str, int]) -> list[tuple[str, bool, str]]:
    """(check, passed, detail): I1-I3 exactly, two independent ways, plus the rows around them."""
    from django.apps import apps
    from django.db.models import Count

    Message = apps.get_model("conversations", "Message")
    WorkflowExecution = apps.get_model("workflows", "WorkflowExecution")

    results = []
    conversation_ids = list(setup_turns)

    def check(name: str, function) -> None:
        try:
            detail = function() or ""
            results.append((name, True, detail))
        except Exception as exc:  # noqa: BLE001 - an assertion or a surprise in the data: both are a FAIL
            results.append((name, False, f"{type(exc).__name__}: {exc}"[:800]))

    def i1() -> str:
        for pk in conversation_ids:
            chatter_calls.invariant_i1(pk)
        return f"{len(conversation_ids)} conversations"

    def i2() -> str:
        chatter_calls.invariant_i2()
        return "every template"

    executions = list(WorkflowExecution.objects.all())

    def i3() -> str:
        for execution in executions:
            chatter_calls.invariant_i3(execution)
        return f"{len(executions)} executions"

    def i6() -> str:
        empty = [(str(e.pk), e.status, e.mode, e.error_type, e.error_message[:200]) for e in executions
                 if not e.events.exists()]
        assert not empty, f"executions without any event: {empty[:5]}"
        for execution in executions:
            chatter_calls.invariant_i6(execution)
        return f"{len(executions)} executions"

    def drift() -> str:
        found = chatter_calls.aggregates_drift()
        assert not found, found[:5]
        return "reconcile_aggregates' own check: no drift"

    def sequences() -> str:
        per_turns = dict(setup_turns)
        for t in turns:
            per_turns[t.conversation] = per_turns.get(t.conversation, 0) + 1
        for pk in conversation_ids:
            seqs = list(Message.objects.filter(conversation_id=pk).order_by("sequence").values_list("sequence",
                                                                                                  flat=True))
            assert seqs == list(range(1, len(seqs) + 1)), (pk, seqs)
            assert len(seqs) == 2 * per_turns[pk], (pk, len(seqs), per_turns[pk])
        pairs = Message.objects.values("execution_id").annotate(n=Count("id")).filter(n__gt=0)
        assert all(p["n"] == 2 for p in pairs), [p for p in pairs if p["n"] != 2][:5]
        return "messages 1..n per conversation, a user and an assistant message per turn"

    def completed() -> str:
        failed = [t for t in turns if t.error or t.execution_id is None]
        assert not failed, [(t.i, t.mode, t.status_code, t.error) for t in failed[:5]]
        statuses = dict(WorkflowExecution.objects.values_list("status").annotate(n=Count("id")))
        others = list(WorkflowExecution.objects.exclude(status="completed").values_list(
            "id", "mode", "status", "error_type", "error_message")[:5])
        assert set(statuses) == {"completed"}, (statuses, others)
        return f"{sum(statuses.values())} executions completed"

    check("every turn answered and completed", completed)
    check("I1 conversation aggregates = sums over messages", i1)
    check("I2 template analytics = sums over terminal executions", i2)
    check("I3 execution totals = sums over nodes = assistant message", i3)
    check("the aggregates drift check (I1-I3 as reconcile_aggregates sees them)", drift)
    check("message sequences", sequences)
    check("I6 event seq 1..n, terminal last", i6)
    return results


def delivery_checks(feeds: list, owners: dict[str, str], turns: list) -> list[tuple[str, bool, str]]:
    """The burst's runs only: the set-up turns ran before the feeds connected (/ws/events/ has no replay)."""
    from django.apps import apps

    ExecutionEvent = apps.get_model("workflows", "ExecutionEvent")

    persisted: dict[str, list] = {}
    burst_ids = [t.execution_id for t in turns if t.execution_id]
    for execution_id, seq, event in ExecutionEvent.objects.filter(execution_id__in=burst_ids).order_by(
            "execution_id", "seq").values_list("execution_id", "seq", "event"):
        persisted.setdefault(str(execution_id), []).append((seq, event))
    results = []
    for feed in feeds:
        mine = {pk: events for pk, events in persisted.items() if owners.get(pk) == feed.username}
        got = feed.persisted()
        missing = sum(max(0, len(events) - len(got.get(pk, []))) for pk, events in mine.items())
        wrong = [pk for pk, events in mine.items() if got.get(pk, []) != events]
        foreign = [pk for pk in got if pk in owners and owners[pk] != feed.username]
        tokens = sum(1 for e in feed.received if e["event"] == "token")
        ok = not wrong and not foreign
        received = sum(len(got.get(pk, [])) for pk in mine)
        detail = (f"{received} of {sum(len(v) for v in mine.values())} persisted events of "
                  f"{len(mine)} runs, {tokens} token deltas; runs not exactly matched: {len(wrong)} "
                  f"(events missing: {missing}); other users' runs seen: {len(foreign)}")
        results.append((f"/ws/events/ on server {feed.server_name} as {feed.username}", ok, detail))
    return results
