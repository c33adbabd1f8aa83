"""B3: event emit → websocket client latency across processes over Redis at 1,000 events/s;
target p99 ≤ 50 ms.

One daphne process (PostgreSQL + Redis from scripts/services.sh), one real `websockets` client on
/ws/events/?token=…, and a separate publisher process (bench/event_publisher.py: Django set up, publishing
envelopes as a run does) at a steady rate with token envelopes carrying `sent_at`.
Latency = the client's receive time − sent_at (one machine, one clock).

    .venv/bin/python -m bench.b3_ws_latency [--rates 1000,500] [--reps 2] [--duration 10] [--profile]

The first rate is the target's; the others (default 500) show the latency below saturation. Redis commands per
event (INFO commandstats) and each process's CPU are printed alongside, since they explain the figure.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

from bench.chatter_servers import bench_token, chatter_database, daphne, ws_connect
from bench.event_publisher import Publisher
from bench.machine import CpuMeter, format_cpu, machine_note
from bench.processes import BenchRun, log, run_main
from bench.pyspy import Profile
from bench.redis_stats import RedisCommands, format_commands
from bench.services import start_services
from bench.stats import median, percentile, table

FOCUS = ("channels_redis", "redis/", "workflows", "channels/", "daphne", "autobahn")


async def measure(server, token: str, publisher: Publisher, args) -> dict:
    socket = await ws_connect(server, token)
    loop = asyncio.get_running_loop()
    # Subscribed once a probe arrives: the consumer joins the user's group just after accepting.
    while json.loads(await asyncio.wait_for(socket.recv(), 15))["data"]["n"] != -1:
        pass
    latencies: list[tuple[float, float]] = []  # (seconds since go, latency)
    seen: set[int] = set()
    duplicates = 0
    meter = CpuMeter({"daphne": server.pid, "redis": args.redis_pid, "publisher": publisher.process.pid,
                      "client (this process)": os.getpid()})
    publisher.go(rate=args.rate, duration=args.duration)
    go = time.time()
    meter.start()
    cpu = None
    profiles = []
    args.redis.start()
    if args.profile and args.first_round:
        profiles = [Profile(args.run, server.pid, "daphne", args.duration - 1),
                    Profile(args.run, publisher.process.pid, "publisher", args.duration - 1)]
    result_future = loop.run_in_executor(None, publisher.result, args.duration + 60)
    last_arrival = time.monotonic()
    sent = None
    while True:
        if cpu is None and time.time() - go >= args.duration:
            cpu = meter.stop()
        if sent is None and result_future.done():
            sent = result_future.result()
        if sent is not None and (len(seen) >= sent["sent"] or time.monotonic() - last_arrival > 3):
            break
        try:
            raw = await asyncio.wait_for(socket.recv(), 0.5)
        except TimeoutError:
            continue
        now = time.time()
        data = json.loads(raw)["data"]
        if data["n"] < 0:
            continue
        last_arrival = time.monotonic()
        if data["n"] in seen:
            duplicates += 1
            continue
        seen.add(data["n"])
        latencies.append((data["sent_at"] - go, now - data["sent_at"]))
    await socket.close()
    commands = args.redis.stop()
    return {"commands": commands, "latencies": latencies, "sent": sent, "received": len(seen), "duplicates": duplicates,
            "cpu": cpu or meter.stop(), "profiles": profiles}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="1000,500", help="events per second, one case each (default 1000,500)")
    parser.add_argument("--reps", type=int, default=2, help="rounds of each rate, interleaved (default 2)")
    parser.add_argument("--duration", type=float, default=10, help="seconds of publishing per round (default 10)")
    parser.add_argument("--profile", action="store_true", help="py-spy daphne and the publisher in the first round")
    args = parser.parse_args()
    args.rates = [float(r) for r in args.rates.split(",")]

    with BenchRun("b3") as run:
        services = start_services(run)
        database = chatter_database(run, "postgres", DATABASE_URL=services.database_url, REDIS_URL=services.redis_url)
        server = daphne(run, database)
        token = bench_token(server, database)
        args.run, args.redis_pid = run, services.redis_pid
        args.redis = RedisCommands(services.redis_url)
        publisher = Publisher(run, database.env, owner_id=database.user_id)
        rounds = []
        for rep in range(args.reps):
            for rate in args.rates:
                args.rate, args.first_round = rate, not rounds
                publisher.wait_ready()
                log(f"round {rep + 1}: publishing {rate:.0f} events/s for {args.duration:.0f} s")
                rounds.append((rate, asyncio.run(measure(server, token, publisher, args))))
        publisher.close()
        round_trip = args.redis.round_trip_ms()
        report(rounds, args)
        print(f"Redis PING round trip from this process, idle: {round_trip:.3f} ms median")
        print(machine_note())
        for _, outcome in rounds:
            for profile in outcome["profiles"]:
                print()
                print(profile.summary(focus=FOCUS))
    return 0


def report(rounds: list[tuple[float, dict]], args) -> None:
    print(f"\nB3: an event published in a publisher process -> Redis -> daphne -> websocket client; "
          f"{args.reps} round(s) of {args.duration:.0f} s per rate, interleaved")
    rows = []
    for rate, outcome in rounds:
        sent = outcome["sent"]
        values = [lat * 1000 for _, lat in outcome["latencies"]]
        rows.append([f"{rate:.0f}/s", f"{sent['sent'] / sent['flushed_s']:.0f}",
                     f"{outcome['received']}/{sent['sent']}", outcome["duplicates"],
                     *(f"{percentile(values, p):.1f}" for p in (50, 90, 99)), f"{max(values):.1f}"])
    print(table(rows, ["offered", "achieved (flushed) ev/s", "delivered/sent", "dup", "p50 ms", "p90 ms",
                       "p99 ms", "max ms"]))
    print("median over rounds:")
    rows = []
    for rate in args.rates:
        outcomes = [o for r, o in rounds if r == rate]
        p99s = [percentile([lat * 1000 for _, lat in o["latencies"]], 99) for o in outcomes]
        p50s = [percentile([lat * 1000 for _, lat in o["latencies"]], 50) for o in outcomes]
        delivered = sum(o["received"] for o in outcomes) / sum(o["sent"]["sent"] for o in outcomes)
        rows.append([f"{rate:.0f}/s", f"{median(p50s):.1f}", f"{median(p99s):.1f}",
                     f"{delivered * 100:.2f}%", "met" if median(p99s) <= 50 else "missed"])
    print(table(rows, ["offered", "p50 ms", "p99 ms", "delivered", "target p99 <= 50 ms"]))
    for rate, outcome in rounds:
        per_second: dict[int, list] = {}
        for at, lat in outcome["latencies"]:
            per_second.setdefault(int(at), []).append(lat * 1000)
        print(f"{rate:.0f}/s round, p50/p99 ms by second: " + ", ".join(
            f"{percentile(v, 50):.0f}/{percentile(v, 99):.0f}" for _, v in sorted(per_second.items())))
        print(f"    CPU while publishing: {format_cpu(outcome['cpu'])}")
        print("    " + format_commands(outcome["commands"], outcome["sent"]["sent"], "event"))


if __name__ == "__main__":
    run_main(main)
