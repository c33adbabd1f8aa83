"""B2: time to first token over SSE vs the model's own first token; target ≤ 5 ms added.

Side by side, interleaved in one run (rotating order each repetition):
- model:   in this process, the local model with universal_chat's tools bound, `.stream(messages)` to its first
           non-empty chunk (bench.chatter_calls.local_model_first_token);
- graph:   in this process, the same compiled graph run bare (bench.chatter_calls.BareChat, B1's bare side:
           LangGraph, the nodes and the model, nothing recorded) to its first token: what the graph itself adds;
- engine:  in this process, no HTTP: a streamed chat turn through the services the chat view calls
           (bench.chatter_calls.stream_turn) to the first token envelope, on the SQLite database the server uses
           (splits the added time into engine + database vs HTTP + daphne);
- sqlite:  client-side, sending `POST /api/v1/chat/` {"message", "stream": true} to the first `event: token`
           frame, against daphne on SQLite (the embedded default), one keep-alive connection (bench.sse_client: a
           socket, so that the figure is the server's time rather than an HTTP library's parsing);
- sqlite, uvicorn: the same against uvicorn (httptools, uvloop) on the same database (skip with --no-uvicorn);
- postgres: the same against a second daphne on PostgreSQL (skip with --no-postgres);
- floor:    the same stack around the model alone (bench/b2_floor.py): another daphne on the same database with
            Chatter's settings and ASGI application, `POST /floor/chat/` through Django's middleware and DRF with
            Chatter's authentication, permissions, throttle and parser, then the local model streamed on a thread
            of its own, no run and nothing written. Its added time is the stack's; Chatter's minus it is what the
            run path adds over HTTP (one on SQLite, one on PostgreSQL unless --no-postgres; skip with --no-floor);
- peer:     the fair peer (bench/README.md): the stock LangGraph Agent Server on PostgreSQL + Redis (bench.b5_servers,
            one process), serving the same compiled graph (bench/b5_langgraph_graph.py), sending
            `POST /runs/stream {"assistant_id": "chat", "input": {"message"}, "stream_mode": ["messages-tuple"],
            "stream_subgraphs": true, "on_completion": "keep"}` to the first `event: messages|…` frame with text
            (the served graph runs universal_chat as a subgraph, whose model's tokens the server streams only with
            stream_subgraphs; skip with --no-peer).
Every side uses the local model slowed by CHATTER_LOCAL_TOKEN_DELAY_MS, so "first token" is well defined.
The chat turn's message has no arithmetic and no time words, so no tool call precedes the answer.

    .venv/bin/python -m bench.b2_sse_first_token [--reps 50] [--delay-ms 20] [--no-postgres] [--no-peer]
        [--no-uvicorn] [--no-floor] [--profile]
"""
from __future__ import annotations

import argparse
import json
import os
import time

from bench import chatter_calls
from bench.b5_servers import peer_pair
from bench.chatter_servers import bench_token, chatter_database, daphne, uvicorn, uvicorn_env
from bench.machine import CpuMeter, format_cpu, machine_note
from bench.processes import HOST, BenchRun, log, run_main
from bench.pyspy import Profile
from bench.sse_client import SseClient
from bench.services import start_services
from bench.stats import median, ms, percentile, table

MESSAGE = "hello there"
WARMUP = 5
TERMINAL = ("workflow_completed", "workflow_failed", "workflow_cancelled")


def engine_first_token(user) -> dict:
    """A streamed chat turn through the services, in this process: seconds from creating it to each event up to
    the first token (the run is read to its end)."""
    marks: dict = {"steps": []}
    started = time.perf_counter()
    for kind, envelope in chatter_calls.stream_turn(user=user, message=MESSAGE):
        now = time.perf_counter() - started
        if kind == "created":
            marks["created"] = now
        elif "first_token" not in marks:
            node = envelope["data"].get("node_id")
            marks["steps"].append((f"{envelope['event']}:{node}" if node else envelope["event"], now))
            if envelope["event"] == "token":
                marks["first_token"] = now
    if "first_token" not in marks:
        raise RuntimeError(f"the in-process run streamed no token: {marks}")
    return marks


class ChatStream:
    """One keep-alive client for streaming chat turns against one server (bench.sse_client), and an httpx client
    for reading the run back afterwards (not timed)."""

    def __init__(self, base_url: str, token: str):
        import httpx

        host, port = base_url.split("//", 1)[1].rsplit(":", 1)
        self.stream = SseClient(host, int(port), {"Authorization": f"Token {token}"})
        self.client = httpx.Client(base_url=base_url, timeout=30, headers={"Authorization": f"Token {token}"})

    def turn(self) -> dict:
        """Seconds from sending the request to each frame up to the first token, and to the first token; reads
        the stream to its end so the next turn starts on an idle server and connection."""
        marks: dict = {"steps": [], "sent_wall": time.time()}
        for now, event, data in self.stream.post("/api/v1/chat/", {"message": MESSAGE, "stream": True}):
            if event is None:
                continue
            if "first_token" not in marks:
                envelope = json.loads(data)
                node = envelope["data"].get("node_id")
                marks["steps"].append((f"{event}:{node}" if node else event, now))
                marks.setdefault("execution_id", envelope["execution_id"])
                marks.setdefault("first_frame", now)
                if event == "token":
                    marks["first_token"] = now
            if event in TERMINAL:
                marks["terminal"] = event
        marks["headers"] = self.stream.headers_at
        if marks.get("terminal") != "workflow_completed" or "first_token" not in marks:
            raise RuntimeError(f"the streamed turn did not complete with tokens: {marks}")
        return marks

    def server_marks(self, marks: dict) -> None:
        """Add the server's own timestamps of the run (created in the view, started in the run's thread), as
        seconds from sending the request (one machine, one clock)."""
        from datetime import datetime

        response = self.client.get(f"/api/v1/executions/{marks['execution_id']}/",
                                   headers={"Accept": "application/json"})
        response.raise_for_status()
        row = response.json()
        for field in ("created_at", "started_at"):
            at = datetime.fromisoformat(row[field]).timestamp()
            marks[field] = at - marks["sent_wall"]

    def close(self) -> None:
        self.stream.close()
        self.client.close()


class FloorStream:
    """One keep-alive client for the floor (bench/b2_floor.py): the model's tokens through Chatter's stack."""

    def __init__(self, base_url: str, token: str):
        host, port = base_url.split("//", 1)[1].rsplit(":", 1)
        self.stream = SseClient(host, int(port), {"Authorization": f"Token {token}"})

    def turn(self) -> dict:
        marks: dict = {"steps": []}
        for now, event, _ in self.stream.post("/floor/chat/", {"message": MESSAGE}):
            if event == "token":
                marks.setdefault("first_token", now)
        if "first_token" not in marks:
            raise RuntimeError("the floor streamed no token")
        return marks

    def close(self) -> None:
        self.stream.close()


class PeerStream:
    """One keep-alive client streaming runs from the stock Agent Server (a new thread, kept, per run)."""

    def __init__(self, host: str, port: int):
        self.stream = SseClient(host, port)

    def turn(self) -> dict:
        """Seconds from sending the request to the first `messages` frame with text; reads the run to its end."""
        marks: dict = {"steps": []}
        body = {"assistant_id": "chat", "input": {"message": MESSAGE}, "stream_mode": ["messages-tuple"],
                "stream_subgraphs": True, "on_completion": "keep"}
        for now, event, data in self.stream.post("/runs/stream", body):
            if event == "error":
                raise RuntimeError(f"the peer's run failed: {data[:500]}")
            if (event or "").startswith("messages") and "first_token" not in marks and json.loads(data)[0].get(
                    "content"):
                marks["first_token"] = now
        if "first_token" not in marks:
            raise RuntimeError("the peer's run streamed no token")
        return marks

    def close(self) -> None:
        self.stream.close()


def timeline_rows(items: list[dict], previous: list[float]) -> list[list]:
    """One row per event up to the first token: when it arrived and the step from the previous mark."""
    names: list[str] = []
    for r in items:
        for name, _ in r["steps"]:
            if name not in names:
                names.append(name)
    rows = []
    for name in names:
        at = [dict(r["steps"]).get(name) for r in items]
        pairs = [(a, p) for a, p in zip(at, previous) if a is not None]
        if not pairs:
            continue
        rows.append([f"event {name}", ms(median([a for a, _ in pairs])), "+" + ms(median([a - p for a, p in pairs]))])
        previous = [a if a is not None else p for a, p in zip(at, previous)]
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=50, help="measured repetitions of each side (default 50)")
    parser.add_argument("--delay-ms", type=int, default=20, help="CHATTER_LOCAL_TOKEN_DELAY_MS (default 20)")
    parser.add_argument("--no-postgres", action="store_true", help="no Chatter on PostgreSQL")
    parser.add_argument("--no-peer", action="store_true", help="no stock Agent Server (the fair peer)")
    parser.add_argument("--no-uvicorn", action="store_true", help="no uvicorn beside daphne on SQLite")
    parser.add_argument("--no-floor", action="store_true", help="no floor (bench/b2_floor.py) beside Chatter")
    parser.add_argument("--profile", action="store_true", help="py-spy the SQLite daphne while it serves turns")
    args = parser.parse_args()

    with BenchRun("b2") as run:
        clients: dict[str, ChatStream] = {}
        servers = {}
        sqlite = chatter_database(run, "sqlite", CHATTER_LOCAL_TOKEN_DELAY_MS=args.delay_ms)
        servers["sqlite"] = daphne(run, sqlite)
        clients["sqlite"] = ChatStream(servers["sqlite"].base_url, bench_token(servers["sqlite"], sqlite))
        if not args.no_uvicorn and uvicorn_env(sqlite) is not None:
            servers["sqlite, uvicorn"] = uvicorn(run, sqlite, label="sqlite")
            clients["sqlite, uvicorn"] = ChatStream(servers["sqlite, uvicorn"].base_url,
                                                    bench_token(servers["sqlite, uvicorn"], sqlite))
        elif not args.no_uvicorn:
            log("uvicorn is not available (bench/requirements.txt, var/bench/tools): no uvicorn side")
        if not args.no_floor:
            floor = daphne(run, sqlite, label="floor", DJANGO_SETTINGS_MODULE="bench.b2_floor_settings")
            servers["floor"] = floor
            clients["floor"] = FloorStream(floor.base_url, bench_token(floor, sqlite))
        services = start_services(run) if not (args.no_postgres and args.no_peer) else None
        if not args.no_postgres:
            postgres = chatter_database(run, "postgres", CHATTER_LOCAL_TOKEN_DELAY_MS=args.delay_ms,
                                        DATABASE_URL=services.database_url)
            servers["postgres"] = daphne(run, postgres)
            clients["postgres"] = ChatStream(servers["postgres"].base_url, bench_token(servers["postgres"], postgres))
            if not args.no_floor:
                floor = daphne(run, postgres, label="floor-postgres", DJANGO_SETTINGS_MODULE="bench.b2_floor_settings")
                servers["floor, postgres"] = floor
                clients["floor, postgres"] = FloorStream(floor.base_url, bench_token(floor, postgres))
        peer_pids = []
        if not args.no_peer:
            peer = peer_pair(run, services, processes=1, token_delay_ms=args.delay_ms)
            clients["peer"] = PeerStream(HOST, peer.ports[0])
            peer_pids = peer.pids

        # The in-process sides read the same settings the servers do (the delay is passed explicitly too).
        chatter_calls.django_setup(sqlite.env)
        user = chatter_calls.bench_user()

        bare = chatter_calls.BareChat()
        sides = ["model", "graph", "engine", *clients]
        results: dict[str, list] = {side: [] for side in sides}
        profile = None
        meter = CpuMeter({**{f"server {name}": server.pid for name, server in servers.items()},
                          **({"peer (langhost)": peer_pids} if peer_pids else {}),
                          "this process (client, model, engine)": os.getpid()})
        log(f"{WARMUP} warm-up + {args.reps} measured repetitions of {', '.join(sides)} (interleaved)")
        try:
            for rep in range(WARMUP + args.reps):
                if rep == WARMUP:
                    meter.start()
                if rep == WARMUP and args.profile:
                    seconds = args.reps * len(sides) * (0.3 + 0.02 * 12)
                    profile = Profile(run, servers["sqlite"].pid, "daphne-sqlite", seconds)
                order = sides[rep % len(sides):] + sides[:rep % len(sides)]
                for side in order:
                    if side == "model":
                        result = {"first_token": chatter_calls.local_model_first_token(MESSAGE, args.delay_ms)}
                    elif side == "graph":
                        result = {"first_token": bare.first_token(MESSAGE)}
                    elif side == "engine":
                        result = engine_first_token(user)
                    else:
                        result = clients[side].turn()
                    if rep >= WARMUP:
                        results[side].append(result)
            cpu = meter.stop()
            for side, client in clients.items():
                if isinstance(client, ChatStream):
                    for result in results[side]:
                        client.server_marks(result)
        finally:
            for client in clients.values():
                client.close()

        report(results, args)
        print(f"\nCPU while measuring: {format_cpu(cpu)}")
        print(machine_note())
        if profile is not None:
            print()
            print(profile.summary(focus=("workflows/", "conversations/", "chatter_project/", "analytics/", "audit/",
                                         "rest_framework/", "django/db/", "django/core/handlers")))
    return 0


def report(results: dict[str, list], args) -> None:
    base = [r["first_token"] for r in results["model"]]
    base_med = median(base)
    print(f"\nB2: time to first token, local model with a {args.delay_ms} ms token delay, message {MESSAGE!r}, "
          f"{args.reps} interleaved repetitions each (ms)")
    rows = []
    for side, items in results.items():
        first = [r["first_token"] for r in items]
        label = {"model": "model in-process (baseline)", "graph": "the graph run bare in-process (no recording)",
                 "engine": "engine in-process, no HTTP (sqlite)",
                 "floor": "floor: the same stack around the model alone, SSE POST /floor/chat/ (sqlite)",
                 "floor, postgres": "floor: the same stack around the model alone, SSE POST /floor/chat/ (postgres)",
                 "peer": "the fair peer: stock Agent Server, SSE POST /runs/stream (PostgreSQL + Redis)"}.get(
            side, f"SSE POST /api/v1/chat/ ({side})")
        added = "" if side == "model" else ms(median(first) - base_med)
        paired = "" if side == "model" else ms(median([a - b for a, b in zip(first, base)]))
        rows.append([label, ms(median(first)), ms(percentile(first, 90)), ms(min(first)), added, paired])
    print(table(rows, ["side", "median", "p90", "min", "added (median diff)", "added (median of paired diffs)"]))
    print("target: <= 5 ms added")
    if "peer" in results:
        peer = median([r["first_token"] for r in results["peer"]])
        for side in ("sqlite", "sqlite, uvicorn", "postgres"):
            if side in results:
                mine = median([r["first_token"] for r in results[side]])
                print(f"Chatter ({side}) vs the fair peer: first token at {ms(mine)} vs {ms(peer)} ms "
                      f"(added {ms(mine - base_med)} vs {ms(peer - base_med)} ms)")

    for side, floor_side in (("sqlite", "floor"), ("postgres", "floor, postgres")):
        if side in results and floor_side in results:
            mine = [r["first_token"] for r in results[side]]
            floor = [r["first_token"] for r in results[floor_side]]
            print(f"Chatter ({side}) over the floor ({floor_side}; both daphne on the same database): what the run "
                  f"path adds over HTTP: {ms(median(mine) - median(floor))} ms (median of paired diffs "
                  f"{ms(median([a - b for a, b in zip(mine, floor)]))})")

    engine = results["engine"]
    print("\nWhere the time goes, engine in-process (median ms from starting the turn; '+' is the median "
          "step from the previous mark):")
    rows = [["the execution written (rows committed)", ms(median([r["created"] for r in engine])),
             "+" + ms(median([r["created"] for r in engine]))]]
    rows += timeline_rows(engine, [r["created"] for r in engine])
    print(table(rows, ["mark", "at", "step"]))

    for side, items in results.items():
        if side in ("model", "graph", "engine", "peer", "floor", "floor, postgres"):
            continue
        print(f"\nWhere the time goes, {side} (client-side, median ms from sending the request; "
              f"'+' is the median step from the previous mark):")
        created = [r["created_at"] for r in items]
        started = [r["started_at"] for r in items]
        rows = [
            ["execution row created (server clock; in the view)", ms(median(created)), "+" + ms(median(created))],
            ["run claimed in its thread (server clock)", ms(median(started)),
             "+" + ms(median([s - c for s, c in zip(started, created)]))],
            ["response headers (sent with the first frame)", ms(median([r["headers"] for r in items])),
             "+" + ms(median([r["headers"] - s for r, s in zip(items, started)]))],
        ]
        rows += timeline_rows(items, [r["headers"] for r in items])
        print(table(rows, ["mark", "at", "step"]))
        node_started = [dict(r["steps"]).get("node_started:model") for r in items]
        first = [r["first_token"] for r in items]
        gaps = [f - n for f, n in zip(first, node_started) if n is not None]
        print(f"before the model node starts: {ms(median(node_started))} ms (request, run set-up, the start/memory/"
              f"retrieval nodes and their persisted events); model node start -> first token: {ms(median(gaps))} ms "
              f"(model {ms(base_med)} ms in-process)")


if __name__ == "__main__":
    run_main(main)
