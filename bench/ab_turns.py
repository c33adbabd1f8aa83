"""An A/B of two checkouts of Chatter on B5's chat turn, side by side in one run: one daphne process of each (each
from its own checkout, e.g. a `git worktree` of the commit before), on one PostgreSQL + Redis database, both
migrated by the newer checkout. Sequential turns alternate between them turn by turn, with a pause before each:
100 ms (each server has been idle about 200 ms: the cold turn B5's interleaved column measures) and 10 ms (warm);
then each alone under 4 clients for 8 s (after first in odd repetitions, before first in even ones: the second
runs just after the first's writes). Beside each figure, each server's CPU per turn (its process's user + system
time over the turns it served): on a loaded machine the one figure the load does not swamp. The figures of one
variant move by several percent between runs: read the difference within a repetition, and only across repetitions
that agree.

    git worktree add /tmp/chatter-before <commit> && ln -s $PWD/.venv /tmp/chatter-before/.venv
    .venv/bin/python -m bench.ab_turns --before /tmp/chatter-before [--after .] [--reps 3] [--count 60]

Both checkouts must share the database schema (no migration between them).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
from pathlib import Path

from bench.b5_loadgen import Client
from bench.chatter_servers import Server, bench_token, chatter_database
from bench.machine import cpu_seconds, machine_note
from bench.processes import HOST, PYTHON, ROOT, BenchRun, free_port, log, run_main, wait_listening
from bench.services import start_services
from bench.stats import median, ms


def daphne_from(run: BenchRun, database, checkout: Path, label: str) -> Server:
    """One daphne process serving `checkout`'s code on `database`."""
    port = free_port()
    env = {**database.env, "PYTHONPATH": str(checkout)}
    log_name = f"daphne-{label}-{port}.log"
    process = run.spawn([PYTHON, "-m", "daphne", "-b", HOST, "-p", str(port), "chatter_project.asgi:application"],
                        env=env, log_name=log_name, cwd=checkout)
    wait_listening(process, port, run.tmp / log_name, what=f"daphne ({label})")
    log(f"daphne ({label}, {checkout}) on {HOST}:{port}, pid {process.pid}")
    return Server(process=process, port=port, log_path=run.tmp / log_name, env=env)


async def alternated(targets: dict[str, str], token: str, *, count: int, pause: float) -> dict[str, list[float]]:
    """`count` rounds of one turn to each target, in an order that rotates every round, `pause` s before each (after
    5 turns each, not counted)."""
    clients = {name: Client("chatter", target, token, 30) for name, target in targets.items()}
    for client in clients.values():
        for _ in range(5):
            await client.turn()
    names, latencies = list(clients), {name: [] for name in clients}
    for round_ in range(count):
        start = round_ % len(names)
        for name in names[start:] + names[:start]:
            await asyncio.sleep(pause)
            elapsed, ok, detail = await clients[name].turn()
            if not ok:
                raise RuntimeError(f"{name}: {detail}")
            latencies[name].append(elapsed)
    for client in clients.values():
        client.close()
    return latencies


def turns_per_second(target: str, token: str, *, clients: int = 4, seconds: float = 8) -> tuple[float, int]:
    """Turns/s of `clients` clients for `seconds`, and how many turns were made."""
    result = subprocess.run([PYTHON, "-m", "bench.b5_loadgen", "--kind", "chatter", "--targets", target, "--token",
                             token, "--clients", str(clients), "--duration", str(seconds)], cwd=ROOT,
                            capture_output=True, text=True, check=True, timeout=120)
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    if measured["failures"]:
        raise RuntimeError(f"{measured['failures']} turns failed: {measured['failure_examples']}")
    return measured["turns"] / measured["elapsed"], measured["turns"]


def cpu_ms(servers: dict[str, Server], before: dict[str, float], turns: dict[str, int]) -> dict[str, str]:
    """Each server's CPU per turn since `before`, ms."""
    return {name: f"{(cpu_seconds(server.process.pid) - before[name]) / turns[name] * 1000:.1f}"
            for name, server in servers.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the checkout to compare against (a git worktree)")
    parser.add_argument("--after", default=str(ROOT), help="the checkout measured (default: this one)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--count", type=int, default=60, help="rounds of alternated turns per pause (default 60)")
    args = parser.parse_args()
    checkouts = {"before": Path(args.before).resolve(), "after": Path(args.after).resolve()}
    with BenchRun("ab-turns") as run:
        services = start_services(run)
        database = chatter_database(run, "postgres", DATABASE_URL=services.database_url, REDIS_URL=services.redis_url,
                                    CHATTER_LOCAL_TOKEN_DELAY_MS=0)
        servers = {name: daphne_from(run, database, checkout, name) for name, checkout in checkouts.items()}
        token = bench_token(servers["after"], database)
        targets = {name: f"{HOST}:{server.port}" for name, server in servers.items()}
        print(f"\nB5's chat turn, one daphne process per checkout, PostgreSQL + Redis: {checkouts['before']} (before) "
              f"and {checkouts['after']} (after); sequential medians over {args.count} alternated turns, ms; CPU: each "
              "server's ms per turn")
        for rep in range(1, args.reps + 1):
            line = [f"rep {rep}:"]
            for pause in (0.1, 0.01):
                cpu = {name: cpu_seconds(server.process.pid) for name, server in servers.items()}
                latencies = asyncio.run(alternated(targets, token, count=args.count, pause=pause))
                per_turn = cpu_ms(servers, cpu, {name: args.count + 5 for name in servers})
                before, after = median(latencies["before"]), median(latencies["after"])
                line.append(f"{'cold' if pause > 0.05 else 'warm'} {ms(before)} -> {ms(after)} ({ms(after - before)}; "
                            f"CPU {per_turn['before']} -> {per_turn['after']})")
            rates, turns, per_turn = {}, {}, {}
            for name in sorted(targets, reverse=rep % 2 == 0):  # after first in odd reps, before first in even
                target = targets[name]
                cpu = {name: cpu_seconds(servers[name].process.pid)}
                rates[name], turns[name] = turns_per_second(target, token)
                per_turn.update(cpu_ms({name: servers[name]}, cpu, turns))
            line.append(f"4 clients {rates['before']:.1f} -> {rates['after']:.1f} turns/s "
                        f"({(rates['after'] / rates['before'] - 1) * 100:+.0f}%; CPU {per_turn['before']} -> "
                        f"{per_turn['after']})")
            print("  ".join(line), flush=True)
        print(machine_note())
    return 0


if __name__ == "__main__":
    run_main(main)
