"""B4: events delivered per second to websocket clients by one server process; target ≥ 5,000.

One daphne process; N real `websockets` clients on /ws/events/ for the same user (every event reaches all N),
for N in --clients, each case repeated --reps times with the N interleaved. Delivered/s = messages received
by all clients together inside a steady-state window (from 1 s after publishing starts to 0.5 s before it
stops); the median over repetitions is reported.

Load: a fixed offered rate of --offered deliveries/s in total (events/s = that / N), above the target, so
the steady-state figure is the server's capacity when it is below the offer. A server that falls behind builds
a backlog. A Redis publisher process that cannot keep its own schedule falls behind it rather than queueing
(`bounded`): the events/s column shows what was published.
- redis:     PostgreSQL + Redis; --publishers separate publisher processes (bench/event_publisher.py, Django
             set up, publishing as a run does) share the offered rate.
- in-memory: no Redis (the embedded default); events are published inside the server process
             (bench/inprocess_publisher_asgi.py), the same way.

Loss: after publishing stops the clients keep reading until they have everything, nothing came for 2 s, or
--drain seconds passed; what has not arrived by then is reported as undelivered.

    .venv/bin/python -m bench.b4_ws_throughput [--clients 1,4,16] [--reps 2] [--duration 4] [--publishers 2]
                                               [--offered 12000] [--drain 3] [--no-inmemory] [--profile]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import time

from bench.chatter_servers import bench_token, chatter_database, daphne, ws_connect
from bench.event_publisher import Publisher
from bench.machine import CpuMeter, format_cpu, machine_note
from bench.processes import BenchRun, log, run_main
from bench.pyspy import Profile
from bench.redis_stats import RedisCommands, format_commands
from bench.services import start_services
from bench.stats import median, table

WINDOW_START = 1.0
WINDOW_END_MARGIN = 0.5
PROBE_MARKS = ('"n": -1', '"n":-1')
FOCUS = ("channels_redis", "redis/", "workflows", "channels/", "daphne", "autobahn", "inprocess_publisher")


class Client:
    """Counts measured messages (and when they arrived) without decoding them."""

    def __init__(self, socket):
        self.socket = socket
        self.probed = asyncio.Event()
        self.arrivals: list[float] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        arrivals = self.arrivals
        async for message in self.socket:
            if PROBE_MARKS[0] in message or PROBE_MARKS[1] in message:
                self.probed.set()
            else:
                arrivals.append(time.monotonic())

    async def close(self) -> None:
        await self.socket.close()
        self.task.cancel()


async def one_case(*, server, token: str, clients_n: int, args, start_publishing, probe, pids: dict,
                   profile: tuple | None, redis: RedisCommands | None) -> dict:
    duration = args.duration
    clients = [Client(await ws_connect(server, token)) for _ in range(clients_n)]
    deadline = time.monotonic() + 15
    while not all(c.probed.is_set() for c in clients):
        if time.monotonic() > deadline:
            raise RuntimeError("clients were not subscribed after 15 s")
        await probe()
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)  # let probes in flight arrive before counting starts
    for c in clients:
        c.arrivals.clear()
    meter = CpuMeter(pids)
    if redis is not None:
        redis.start()
    go = time.monotonic()
    meter.start()
    profiler = Profile(args.run, server.pid, profile[0], duration - 1) if profile else None
    sent_future = asyncio.ensure_future(start_publishing())
    await asyncio.sleep(duration)
    cpu = meter.stop()
    publishers = await sent_future
    sent = sum(p["sent"] for p in publishers)
    stopped = time.monotonic()
    while time.monotonic() < stopped + args.drain:
        if all(len(c.arrivals) >= sent for c in clients):
            break
        latest = max((c.arrivals[-1] for c in clients if c.arrivals), default=go)
        if time.monotonic() - max(latest, stopped) > 2:
            break
        await asyncio.sleep(0.1)
    last_arrival = max((c.arrivals[-1] for c in clients if c.arrivals), default=go)
    window = (go + WINDOW_START, go + duration - WINDOW_END_MARGIN)
    in_window = sum(1 for c in clients for t in c.arrivals if window[0] <= t < window[1])
    received = sum(len(c.arrivals) for c in clients)
    for c in clients:
        await c.close()
    return {
        "clients": clients_n, "sent": sent, "publish_s": max(p["flushed_s"] for p in publishers),
        "delivered_per_s": in_window / (window[1] - window[0]),
        "undelivered": clients_n * sent - received,
        "last_arrival_s": last_arrival - go,
        "still_arriving": clients_n * sent > received and time.monotonic() - last_arrival < 1,
        "cpu": cpu, "commands": redis.stop() if redis is not None else None, "profile": profiler,
    }


def redis_cases(run, services, database, counts, args) -> list[dict]:
    server = daphne(run, database, label="redis")
    token = bench_token(server, database)
    redis = RedisCommands(services.redis_url)
    log(f"{args.redis_label}: {args.publishers} publisher process(es), {args.offered:.0f} deliveries/s offered, "
        f"{args.duration:.0f} s per case")
    results = []
    publishers = [Publisher(run, database.env, owner_id=database.user_id, tag=f"p{i}") for i in range(args.publishers)]
    for rep in range(args.reps):
        for n in counts:
            for p in publishers:
                p.wait_ready()

            async def probe():
                pass  # the publishers probe on their own until told to go

            async def start_publishing(n=n):
                for p in publishers:
                    p.go(rate=args.offered / n / len(publishers), duration=args.duration, bounded=True)
                loop = asyncio.get_running_loop()
                return list(await asyncio.gather(*(loop.run_in_executor(None, p.result, args.duration + 90)
                                                   for p in publishers)))

            pids = {"daphne": server.pid, "redis": services.redis_pid,
                    **{f"publisher {p.tag}": p.process.pid for p in publishers},
                    "clients (this process)": os.getpid()}
            profile = ("daphne-redis",) if args.profile and rep == 0 and n == max(counts) else None
            result = asyncio.run(one_case(server=server, token=token, clients_n=n, args=args, probe=probe,
                                          start_publishing=start_publishing, pids=pids, profile=profile, redis=redis))
            results.append({"layer": args.redis_label, **result})
            log(f"{args.redis_label}, {n} client(s): {result['delivered_per_s']:.0f} delivered/s")
    for p in publishers:
        p.close()
    run.stop(server.process)
    return results


def inmemory_cases(run, database, counts, args) -> list[dict]:
    import httpx

    server = daphne(run, database, app="bench.inprocess_publisher_asgi:application", label="inmemory", REDIS_URL=None,
                    DJANGO_SETTINGS_MODULE="chatter_project.settings")
    token = bench_token(server, database)
    log(f"in-memory layer: publishing inside the server, {args.offered:.0f} deliveries/s offered")
    results = []
    for rep in range(args.reps):
        for n in counts:
            async def case(n=n, rep=rep):
                async with httpx.AsyncClient(base_url=server.base_url, timeout=args.duration + 60) as client:
                    async def probe():
                        (await client.post(f"/bench/probe/?owner={database.user_id}")).raise_for_status()

                    async def start_publishing():
                        response = await client.post(f"/bench/publish/?owner={database.user_id}"
                                                     f"&rate={args.offered / n}&duration={args.duration}")
                        response.raise_for_status()
                        return [response.json()]

                    profile = ("daphne-inmemory",) if args.profile and rep == 0 and n == max(counts) else None
                    return await one_case(
                        server=server, token=token, clients_n=n, args=args, probe=probe,
                        start_publishing=start_publishing, profile=profile, redis=None,
                        pids={"daphne (publishing too)": server.pid, "clients (this process)": os.getpid()})

            result = asyncio.run(case())
            results.append({"layer": "in-memory", **result})
            log(f"in-memory, {n} client(s): {result['delivered_per_s']:.0f} delivered/s")
    run.stop(server.process)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1,4,16", help="client counts to try (default 1,4,16)")
    parser.add_argument("--reps", type=int, default=2, help="repetitions of each case, interleaved (default 2)")
    parser.add_argument("--duration", type=float, default=4, help="seconds of publishing per case (default 4)")
    parser.add_argument("--publishers", type=int, default=2, help="publisher processes for Redis (default 2)")
    parser.add_argument("--offered", type=float, default=12000,
                        help="offered deliveries/s in total, all clients together (default 12000)")
    parser.add_argument("--drain", type=float, default=3, help="seconds to wait for stragglers (default 3)")
    parser.add_argument("--no-inmemory", action="store_true")
    parser.add_argument("--profile", action="store_true", help="py-spy daphne in the largest case of each kind")
    args = parser.parse_args()
    counts = [int(n) for n in args.clients.split(",")]
    args.redis_label = "redis"

    with BenchRun("b4") as run:
        args.run = run
        services = start_services(run)
        database = chatter_database(run, "postgres", DATABASE_URL=services.database_url, REDIS_URL=services.redis_url)
        results = redis_cases(run, services, database, counts, args)
        if not args.no_inmemory:
            results += inmemory_cases(run, database, counts, args)
        report(results, counts, args)
        for r in results:
            if r["profile"] is not None:
                print()
                print(r["profile"].summary(focus=FOCUS))
    return 0


def report(results: list[dict], counts: list[int], args) -> None:
    print(f"\nB4: events delivered per second to websocket clients, one daphne process; {args.duration:.0f} s of "
          f"publishing per case, steady window {WINDOW_START:.1f}..{args.duration - WINDOW_END_MARGIN:.1f} s, "
          f"{args.reps} repetition(s) each (median; all runs in brackets)")
    print(f"offered: {args.offered:.0f} deliveries/s in total (events/s = offered / clients)")
    rows = []
    for layer in (args.redis_label, "in-memory"):
        for n in counts:
            runs = [r for r in results if r["layer"] == layer and r["clients"] == n]
            if not runs:
                continue
            delivered = [r["delivered_per_s"] for r in runs]
            published = [r["sent"] / r["publish_s"] for r in runs]
            sent_total = sum(r["sent"] * n for r in runs)
            undelivered = sum(r["undelivered"] for r in runs)
            rows.append([
                f"{layer}, {n} client(s)", f"{median(published):.0f}",
                f"{median(delivered):.0f} [{', '.join(f'{d:.0f}' for d in delivered)}]",
                f"{undelivered} of {sent_total}" + (" (backlog: still arriving)"
                                                    if any(r["still_arriving"] for r in runs) else ""),
                f"{median([r['last_arrival_s'] - args.duration for r in runs]):+.1f}",
            ])
    print(table(rows, ["layer, clients", "events/s published", "delivered/s, all clients",
                       f"undelivered {args.drain:.0f} s after",
                       "last arrival after publishing (s)"]))
    print("target: >= 5000 delivered/s")
    print(machine_note())
    for layer in (args.redis_label, "in-memory"):
        for n in counts:
            runs = [r for r in results if r["layer"] == layer and r["clients"] == n]
            if not runs:
                continue
            cpu = {name: median([r["cpu"][name] for r in runs]) for name in runs[0]["cpu"]}
            print(f"CPU, {layer}, {n} client(s): {format_cpu(cpu)}")
            if runs[0]["commands"]:
                print("    " + format_commands(runs[0]["commands"], max(1, runs[0]["sent"]), "event published"))


if __name__ == "__main__":
    run_main(main)
