"""B7 (SPEC §13): 200 concurrent chat turns on 10 conversations across 2 server processes; I1-I3 hold exactly.

PostgreSQL + Redis from scripts/services.sh, a fresh migrated database, two daphne processes (A and B) and one
django-q2 worker (`manage.py qcluster`), all on loopback. Two users own 5 conversations each (made by one sync
turn each, which also warms both servers and the worker). Then all turns are sent at once from this process
(httpx, asyncio): turn i goes to server A or B by i % 2, is sync / stream / background by i % 3, goes to
conversation i % 10, and asks either for arithmetic (a tool call) or for nothing special. When every run has
ended, the checks read the database directly:

- I1: every conversation's stored aggregates equal the sums over its messages (tests/invariants.py);
- I2: TemplateAnalytics equals the sums over its terminal executions;
- I3: every execution's totals equal the sums over its nodes and equal its assistant message;
- and `analytics.services.aggregates_drift()` (what `reconcile_aggregates` checks) finds nothing; every turn
  completed; each conversation's messages have sequences 1..n, two per turn; every run's events have seq
  1..n ending with its terminal event (I6).

Also reported, separately from the B7 verdict: whether real websocket clients on /ws/events/ of both servers,
one per user and server, received every persisted event of their user's runs (no gaps, no duplicates) and
none of the other user's.

    .venv/bin/python bench/b7_concurrent_turns.py [--turns 200] [--conversations 10] [--profile]

Settings it sets: CHATTER_LOCAL_TOKEN_DELAY_MS=0 (the model answers at once), CHATTER_RUN_THROTTLE=100000/min,
and CHATTER_MAX_CONCURRENT_RUNS=1000 (the default 10 per user would answer most of a 200-turn burst with 429).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    BenchRun,
    CpuMeter,
    PgActivity,
    Profile,
    api_token,
    django_setup,
    format_cpu,
    format_pg_activity,
    log,
    machine_note,
    median,
    percentile,
    process_tree,
    table,
    ws_connect,
)

MODES = ("sync", "stream", "background")
MESSAGES = ("What is {a}*{b}?", "hello number {i}, tell me something", "What is {a}+{b}?", "thanks, go on")
TERMINAL = ("workflow_completed", "workflow_failed", "workflow_cancelled")
PROBE = "b7_probe"
USERNAMES = ("bench", "bench2")


def message_for(i: int) -> str:
    return MESSAGES[i % len(MESSAGES)].format(i=i, a=i % 17 + 2, b=i % 7 + 3)


class Turn:
    def __init__(self, i: int, server: str, mode: str, conversation: str, user: str):
        self.i, self.server, self.mode, self.conversation, self.user = i, server, mode, conversation, user
        self.status_code: int | None = None
        self.execution_id: str | None = None
        self.sent_wall = 0.0
        self.started = self.ended = 0.0
        self.terminal: str | None = None
        self.error = ""

    @property
    def latency(self) -> float:
        return self.ended - self.started


async def send_turn(client, turn: Turn) -> None:
    body = {"message": message_for(turn.i), "conversation_id": turn.conversation}
    if turn.mode == "stream":
        body["stream"] = True
    elif turn.mode == "background":
        body["background"] = True
    turn.sent_wall = time.time()
    turn.started = time.perf_counter()
    try:
        if turn.mode == "stream":
            async with client.stream("POST", "/api/v1/chat/", json=body,
                                     headers={"Accept": "text/event-stream"}) as response:
                turn.status_code = response.status_code
                if response.status_code != 200:
                    turn.error = (await response.aread()).decode()[:300]
                    return
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        envelope = json.loads(line[5:])
                        turn.execution_id = envelope["execution_id"]
                        if envelope["event"] in TERMINAL:
                            turn.terminal = envelope["event"]
        else:
            response = await client.post("/api/v1/chat/", json=body)
            turn.status_code = response.status_code
            if response.status_code not in (201, 202):
                turn.error = response.text[:300]
                return
            data = response.json()
            if turn.mode == "sync":
                turn.execution_id = data["execution"]["id"]
                turn.terminal = f"workflow_{data['execution']['status']}"
            else:
                turn.execution_id = data["id"]
    except Exception as exc:  # noqa: BLE001 - reported as a failed turn
        turn.error = f"{type(exc).__name__}: {exc}"
    finally:
        turn.ended = time.perf_counter()


class Feed:
    """A real websocket client on /ws/events/ of one server for one user, collecting what it receives."""

    def __init__(self, server_name: str, username: str):
        self.server_name, self.username = server_name, username
        self.received: list[dict] = []
        self.last_arrival = time.monotonic()

    async def run(self, socket) -> None:
        try:
            async for raw in socket:
                self.received.append(json.loads(raw))
                self.last_arrival = time.monotonic()
        except Exception:  # noqa: BLE001 - closed at the end
            pass

    def persisted(self) -> dict[str, list[tuple[int, str]]]:
        found: dict[str, list] = {}
        for envelope in self.received:
            if envelope["event"] != PROBE and envelope["seq"] is not None:
                found.setdefault(envelope["execution_id"], []).append((envelope["seq"], envelope["event"]))
        return found


async def probe_until_subscribed(feeds: list[Feed], user_ids: dict[str, int], timeout: float = 30) -> None:
    from workflows.realtime import broadcast

    deadline = time.monotonic() + timeout
    n = 0
    while not all(any(e["event"] == PROBE for e in feed.received) for feed in feeds):
        if time.monotonic() > deadline:
            raise RuntimeError("a /ws/events/ feed never subscribed")
        n += 1
        for user_id in user_ids.values():
            broadcast({"event": PROBE, "execution_id": f"probe-{n}", "seq": None, "ts": "", "data": {}},
                      owner_id=user_id)
        await asyncio.sleep(0.2)


async def burst(servers: dict, tokens: dict[str, str], conversations: list[tuple[str, str]], args,
                feeds: list[Feed]) -> tuple[list[Turn], float]:
    import httpx

    limits = httpx.Limits(max_connections=args.turns + 10, max_keepalive_connections=args.turns + 10)
    clients = {(name, user): httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=600,
                                               headers={"Authorization": f"Token {tokens[user]}"})
               for name, server in servers.items() for user in tokens}
    names = list(servers)
    turns = []
    for i in range(args.turns):
        conversation, user = conversations[i % len(conversations)]
        turns.append(Turn(i, names[i % 2], MODES[i % 3], conversation, user))
    started = time.perf_counter()
    try:
        await asyncio.gather(*(send_turn(clients[(t.server, t.user)], t) for t in turns))
    finally:
        for client in clients.values():
            await client.aclose()
    return turns, started


def wait_all_finished(execution_ids: list[str], stall: float) -> dict[str, dict]:
    """Until every run is terminal, or none has ended for `stall` seconds (a run that never started)."""
    from django.db import OperationalError, connection

    from workflows.models import WorkflowExecution

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


def invariant_checks(turns: list[Turn], setup_turns: dict[str, int]) -> list[tuple[str, bool, str]]:
    """(check, passed, detail): I1-I3 exactly, two independent ways, plus the rows around them."""
    from django.db.models import Count

    from analytics.services import aggregates_drift
    from conversations.models import Conversation, Message
    from tests import invariants
    from workflows.models import WorkflowExecution

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
            invariants.assert_i1(Conversation.objects.get(pk=pk))
        return f"{len(conversation_ids)} conversations"

    def i2() -> str:
        invariants.assert_i2()
        return "every template"

    executions = list(WorkflowExecution.objects.all())

    def i3() -> str:
        for execution in executions:
            invariants.assert_i3(execution)
        return f"{len(executions)} executions"

    def i6() -> str:
        empty = [(str(e.pk), e.status, e.mode, e.error_type, e.error_message[:200]) for e in executions
                 if not e.events.exists()]
        assert not empty, f"executions without any event: {empty[:5]}"
        for execution in executions:
            invariants.assert_seq_gapless(execution)
        return f"{len(executions)} executions"

    def drift() -> str:
        found = aggregates_drift()
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
    check("aggregates_drift() (I1-I3 as reconcile_aggregates sees them)", drift)
    check("message sequences", sequences)
    check("I6 event seq 1..n, terminal last", i6)
    return results


def delivery_checks(feeds: list[Feed], owners: dict[str, str], turns: list[Turn]) -> list[tuple[str, bool, str]]:
    """The burst's runs only: the set-up turns ran before the feeds connected (/ws/events/ has no replay)."""
    from workflows.models import ExecutionEvent

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
        detail = (f"{sum(len(v) for v in got.values())} of {sum(len(v) for v in mine.values())} persisted events of "
                  f"{len(mine)} runs, {tokens} token deltas; runs not exactly matched: {len(wrong)} "
                  f"(events missing: {missing}); other users' runs seen: {len(foreign)}")
        results.append((f"/ws/events/ on server {feed.server_name} as {feed.username}", ok, detail))
    return results


async def measured(run: BenchRun, servers: dict, tokens: dict, user_ids: dict, conversations: list, args,
                   extra_pids):
    feeds = []
    tasks = []
    for name, server in servers.items():
        for username, token in tokens.items():
            socket = await ws_connect(server, token)
            feed = Feed(name, username)
            feeds.append(feed)
            tasks.append(asyncio.create_task(feed.run(socket)))
            feed.socket = socket
    await probe_until_subscribed(feeds, user_ids)

    meter = CpuMeter({**{f"daphne {name}": server.process.pid for name, server in servers.items()},
                      **extra_pids, "this process (clients)": os.getpid()})
    profile = None
    if args.profile:
        profile = Profile(run, servers["A"].process.pid, "daphne-A", 8)
    activity = PgActivity(args.database_url).start()
    meter.start()
    log(f"sending {args.turns} turns at once")
    turns, started = await burst(servers, tokens, conversations, args, feeds)
    answered = time.perf_counter()
    log(f"all {args.turns} answered after {answered - started:.2f} s; waiting for background runs")
    ids = [t.execution_id for t in turns if t.execution_id]
    rows = await asyncio.to_thread(wait_all_finished, ids, 30)
    done = max([answered] + [(r["completed_at"].timestamp() - time.time()) + time.perf_counter()
                             for r in rows.values() if r["completed_at"]])
    cpu = meter.stop()
    args.pg_activity = activity.stop()
    # Websocket deliveries still in flight: wait until the feeds are quiet.
    while any(time.monotonic() - feed.last_arrival < 2 for feed in feeds):
        await asyncio.sleep(0.2)
    for feed, task in zip(feeds, tasks):
        await feed.socket.close()
        task.cancel()
    return turns, rows, feeds, started, answered, done, cpu, profile


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--conversations", type=int, default=10)
    parser.add_argument("--profile", action="store_true", help="py-spy daphne A during the burst")
    parser.add_argument("--pg-max-connections", type=int, default=0,
                        help="restart PostgreSQL with this max_connections (scripts/services.sh starts it with 200)")
    args = parser.parse_args()

    with BenchRun("b7") as run:
        services = run.services()
        if args.pg_max_connections:
            run.postgres_max_connections(args.pg_max_connections)
        database = run.database("postgres", DATABASE_URL=services["DATABASE_URL"], REDIS_URL=services["REDIS_URL"],
                                CHATTER_LOCAL_TOKEN_DELAY_MS=0, CHATTER_MAX_CONCURRENT_RUNS=1000)
        servers = {"A": run.daphne(database, label="A"), "B": run.daphne(database, label="B")}
        worker = run.qcluster(database)
        tokens = {USERNAMES[0]: api_token(servers["A"], database)}
        tokens[USERNAMES[1]] = run.user(servers["A"], database, USERNAMES[1])
        django_setup(database)
        args.database_url = services["DATABASE_URL"]

        import httpx

        # Set-up: one sync turn per conversation (alternating servers and users) makes the conversations and
        # warms both servers; one background turn proves the worker is up.
        conversations: list[tuple[str, str]] = []
        for c in range(args.conversations):
            user = USERNAMES[c % len(USERNAMES)]
            server = servers["AB"[c % 2]]
            response = httpx.post(f"{server.base_url}/api/v1/chat/", timeout=60,
                                  headers={"Authorization": f"Token {tokens[user]}"},
                                  json={"message": f"conversation {c}: hello"})
            response.raise_for_status()
            conversations.append((response.json()["conversation"]["id"], user))
        response = httpx.post(f"{servers['B'].base_url}/api/v1/chat/", timeout=60,
                              headers={"Authorization": f"Token {tokens[conversations[0][1]]}"},
                              json={"message": "warm-up", "conversation_id": conversations[0][0], "background": True})
        response.raise_for_status()
        warmup = wait_all_finished([response.json()["id"]], 60)
        if any(r["status"] != "completed" for r in warmup.values()):
            raise RuntimeError(f"the worker did not run the warm-up turn: {warmup}")
        log("conversations made, servers and worker warm")

        from django.contrib.auth import get_user_model

        user_ids = dict(get_user_model().objects.filter(username__in=USERNAMES).values_list("username", "pk"))
        extra = {"qcluster (all its processes)": process_tree(worker.pid), "redis": services["redis_pid"]}
        turns, rows, feeds, started, answered, done, cpu, profile = asyncio.run(
            measured(run, servers, tokens, user_ids, conversations, args, extra))

        from workflows.models import WorkflowExecution

        owners = {str(pk): username for pk, username in
                  WorkflowExecution.objects.values_list("pk", "owner__username")}
        setup_turns = {c: 1 for c, _ in conversations}
        setup_turns[conversations[0][0]] += 1  # the worker's warm-up turn
        checks = invariant_checks(turns, setup_turns)
        delivery = delivery_checks(feeds, owners, turns)
        report(turns, rows, checks, delivery, started, answered, done, cpu, args)
        if profile is not None:
            print()
            print(profile.summary(focus=("workflows/", "conversations/", "analytics/", "django/db/",
                                         "rest_framework/", "asgiref/", "daphne/")))
        passed = all(ok for _, ok, _ in checks)
    return 0 if passed else 1


def report(turns, rows, checks, delivery, started, answered, done, cpu, args) -> None:
    total = done - started
    print(f"\nB7: {args.turns} chat turns sent at once to 2 daphne processes (+1 qcluster worker), "
          f"{args.conversations} conversations of {len(USERNAMES)} users, PostgreSQL + Redis")
    print(f"all answered over HTTP after {answered - started:.2f} s; the last run ended after {total:.2f} s; "
          f"throughput {len(turns) / total:.1f} turns/s")
    lines = []
    for mode in MODES:
        items = [t for t in turns if t.mode == mode and not t.error]
        if mode == "background":
            # Request sent -> run completed by the worker (server clock; one machine, one clock).
            values = []
            for t in items:
                row = rows.get(t.execution_id)
                if row and row["completed_at"]:
                    values.append(row["completed_at"].timestamp() - t.sent_wall)
            what = "sent -> completed (worker)"
        else:
            values = [t.latency for t in items]
            what = "sent -> 201" if mode == "sync" else "sent -> terminal SSE frame"
        lines.append([mode, what, len(items), ms(median(values)), ms(percentile(values, 95)), ms(max(values or [0]))])
    print(table(lines, ["mode", "latency", "turns", "median ms", "p95 ms", "max ms"]))
    by_server = {}
    for t in turns:
        by_server.setdefault(t.server, 0)
        by_server[t.server] += 1
    statuses: dict = {}
    for t in turns:
        statuses[t.status_code or 0] = statuses.get(t.status_code or 0, 0) + 1
    print(f"turns per server: {by_server}; HTTP statuses: {dict(sorted(statuses.items()))}")
    if rows:
        unfinished = [r for r in rows.values() if r["status"] not in ("completed", "failed", "cancelled")]
        ended = f"{len(unfinished)} {sorted({(r['mode'], r['status']) for r in unfinished})}"
    else:
        ended = "unknown (no database connection could be had while waiting; see the checks below)"
    print(f"runs not ended: {ended}; turns without a run id: {sum(1 for t in turns if not t.execution_id)}")
    print(format_pg_activity(args.pg_activity))
    print("\nChecks (database read directly once every run had finished):")
    for name, ok, detail in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {name}: {detail}")
    print("\nAlso measured (not part of B7's target): websocket delivery under the burst")
    for name, ok, detail in delivery:
        print(f"  {'PASS' if ok else 'FAIL'}  {name}: {detail}")
    verdict = all(ok for _, ok, _ in checks)
    print(f"\nB7 {'PASS' if verdict else 'FAIL'}: I1-I3 {'hold exactly' if verdict else 'do NOT hold'} after "
          f"{len(turns)} concurrent turns")
    print(f"\nCPU while the burst ran: {format_cpu(cpu)}")
    print(machine_note())


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped")
        sys.exit(130)
