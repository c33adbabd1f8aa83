"""B7: 200 concurrent chat turns on 10 conversations across 2 server processes; I1-I3 hold exactly.

PostgreSQL + Redis from scripts/services.sh, a fresh migrated database, two daphne processes (A and B) and one
django-q2 worker (`manage.py qcluster`), all on loopback. Two users own 5 conversations each (made by one sync
turn each, which also warms both servers and the worker). Then all turns are sent at once from this process
(httpx, asyncio): turn i goes to server A or B by i % 2, is sync / stream / background by i % 3, goes to
conversation i % 10, and asks either for arithmetic (a tool call) or for nothing special. When every run has
ended, the checks read the database directly:

- I1: every conversation's stored aggregates equal the sums over its messages (tests/invariants.py);
- I2: TemplateAnalytics equals the sums over its terminal executions;
- I3: every execution's totals equal the sums over its nodes and equal its assistant message;
- and the drift check `reconcile_aggregates` runs finds nothing; every turn completed; each conversation's
  messages have sequences 1..n, two per turn; every run's events have seq 1..n ending with its terminal event
  (I6). (bench/b7_checks.py.)

Also reported, separately from the B7 verdict: whether real websocket clients on /ws/events/ of both servers,
one per user and server, received every persisted event of their user's runs (no gaps, no duplicates) and
none of the other user's. Before the burst, one probe turn per user (more if needed) shows every client is
subscribed: each must receive its user's probe run's terminal event.

    .venv/bin/python -m bench.b7_concurrent_turns [--turns 200] [--conversations 10] [--profile]

Settings it sets: CHATTER_LOCAL_TOKEN_DELAY_MS=0 (the model answers at once), CHATTER_RUN_THROTTLE=100000/min,
and CHATTER_MAX_CONCURRENT_RUNS=1000 (the default 10 per user would answer most of a 200-turn burst with 429).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

from bench import chatter_calls
from bench.b7_checks import delivery_checks, invariant_checks, wait_all_finished
from bench.chatter_servers import add_user, bench_token, chatter_database, daphne, qcluster, ws_connect
from bench.machine import CpuMeter, format_cpu, machine_note, process_tree
from bench.pg_stats import PgActivity, format_pg_activity
from bench.processes import BenchRun, log, run_main
from bench.pyspy import Profile
from bench.services import start_services
from bench.stats import median, percentile, table

MODES = ("sync", "stream", "background")
MESSAGES = ("What is {a}*{b}?", "hello number {i}, tell me something", "What is {a}+{b}?", "thanks, go on")
TERMINAL = ("workflow_completed", "workflow_failed", "workflow_cancelled")
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
            if envelope["seq"] is not None:
                found.setdefault(envelope["execution_id"], []).append((envelope["seq"], envelope["event"]))
        return found


async def probe_until_subscribed(servers: dict, tokens: dict[str, str], feeds: list[Feed],
                                 timeout: float = 60) -> list[str]:
    """Probe turns (sync, on server A) until every feed has received its user's probe run's terminal event;
    returns the probe runs' ids."""
    import httpx

    deadline = time.monotonic() + timeout
    probes: dict[str, set[str]] = {user: set() for user in tokens}

    def subscribed(feed: Feed) -> bool:
        return any(e["execution_id"] in probes[feed.username] and e["event"] in TERMINAL for e in feed.received)

    async with httpx.AsyncClient(base_url=servers["A"].base_url, timeout=60) as client:
        while not all(subscribed(feed) for feed in feeds):
            if time.monotonic() > deadline:
                raise RuntimeError("a /ws/events/ feed never received its user's probe turn")
            for user in {feed.username for feed in feeds if not subscribed(feed)}:
                response = await client.post("/api/v1/chat/", json={"message": "b7 probe"},
                                             headers={"Authorization": f"Token {tokens[user]}"})
                response.raise_for_status()
                probes[user].add(response.json()["execution"]["id"])
            waited = time.monotonic()
            while not all(subscribed(feed) for feed in feeds) and time.monotonic() - waited < 3:
                await asyncio.sleep(0.05)
    return [pk for ids in probes.values() for pk in ids]


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


async def measured(run: BenchRun, servers: dict, tokens: dict, conversations: list, args, extra_pids):
    feeds = []
    tasks = []
    for name, server in servers.items():
        for username, token in tokens.items():
            socket = await ws_connect(server, token)
            feed = Feed(name, username)
            feeds.append(feed)
            tasks.append(asyncio.create_task(feed.run(socket)))
            feed.socket = socket
    args.probes = await probe_until_subscribed(servers, tokens, feeds)

    meter = CpuMeter({**{f"daphne {name}": server.pid for name, server in servers.items()},
                      **extra_pids, "this process (clients)": os.getpid()})
    profile = None
    if args.profile:
        profile = Profile(run, servers["A"].pid, "daphne-A", 8)
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
        services = start_services(run)
        if args.pg_max_connections:
            services.restart_postgres(max_connections=args.pg_max_connections)
        database = chatter_database(run, "postgres", DATABASE_URL=services.database_url, REDIS_URL=services.redis_url,
                                    CHATTER_LOCAL_TOKEN_DELAY_MS=0, CHATTER_MAX_CONCURRENT_RUNS=1000)
        servers = {"A": daphne(run, database, label="A"), "B": daphne(run, database, label="B")}
        worker = qcluster(run, database)
        tokens = {USERNAMES[0]: bench_token(servers["A"], database)}
        tokens[USERNAMES[1]] = add_user(servers["A"], database, USERNAMES[1])
        chatter_calls.django_setup(database.env)
        args.database_url = services.database_url

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

        extra = {"qcluster (all its processes)": process_tree(worker.pid), "redis": services.redis_pid}
        turns, rows, feeds, started, answered, done, cpu, profile = asyncio.run(
            measured(run, servers, tokens, conversations, args, extra))

        from django.apps import apps

        WorkflowExecution = apps.get_model("workflows", "WorkflowExecution")

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
    run_main(main)
