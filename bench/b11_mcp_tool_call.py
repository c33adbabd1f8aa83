"""B11: what a workflow's MCP tool call adds over calling the same server directly with the `mcp` client.

    .venv/bin/python -m bench.b11_mcp_tool_call [--calls 300] [--reps 3] [--profile 300]

A real MCP server (tests/mcp_server.py's tools: the official SDK's FastMCP, Streamable HTTP) in a process of its
own on 127.0.0.1; a fresh SQLite database with the server registered for the bench user (loopback allowed, as an
operator allows an internal tool server). Interleaved call by call, in a new random order each round, `--reps`
repetitions of `--calls` calls of `add`:

- **workflow**: the JSON workflow's tool path, what a run's `tools` node calls for an MCP tool
  (workflows.run_tools.RunTools.run: the allow-list and visibility check of the run's owner, the server's headers
  decrypted, the call on a kept session of tools.mcp_pool, the text scrubbed and capped, the server's health),
  timed on the worker thread that makes it (a run's nodes are sync code); the run's own writes around it (tool_start, the ToolCall row) are not in it;
- **direct**: `ClientSession.call_tool` on a session kept open, the SDK's own HTTP client, on this thread's event
  loop (no thread hop, no checks);
- **fresh**: for scale, the direct call on a session opened for it (what each call cost before sessions were kept).

Prints p50/p95 of each, and the workflow's added p50/p95 over direct (target: ≤ 2 ms at p50); and this process's
CPU time per call of each (all its threads: the pool's loop, the worker, this one), which waits for a core on a
busy machine do not inflate. `--profile N`: then N more calls of each side under cProfile, the workflow's on its
worker thread and on the pool's loop, the direct ones on this thread's loop, and the functions each spent most in.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import random
import sys
import time

import anyio
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from bench import chatter_calls
from bench.chatter_servers import USERNAME, chatter_database
from bench.machine import CpuMeter, format_cpu, machine_note
from bench.processes import PYTHON, BenchRun, free_port, log, run_main, wait_listening
from bench.stats import median, ms, percentile, table

SERVER = """
import sys
from tests.mcp_server import build_mcp
mcp = build_mcp(lambda name, arguments: None)
mcp.settings.port = int(sys.argv[1])
mcp.run(transport="streamable-http")
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="then cProfile N calls of each side (0: none)")
    args = parser.parse_args()

    with BenchRun("b11") as run:
        port = free_port()
        server = run.spawn([PYTHON, "-c", SERVER, str(port)], env=None, log_name="mcp-server.log")
        wait_listening(server, port, run.tmp / "mcp-server.log", what="the MCP server")
        url = f"http://127.0.0.1:{port}/mcp"
        database = chatter_database(run, "sqlite", CHATTER_OUTBOUND_ALLOWED_NETWORKS="127.0.0.0/8",
                                    LOG_LEVEL="WARNING")
        chatter_calls.django_setup(database.env)
        workflow = chatter_calls.mcp_tool_path(chatter_calls.bench_user(USERNAME), url)
        try:
            reps, cpu, shares, profiles = anyio.run(measure, args, workflow, url, server.pid)
        finally:  # before the server stops
            chatter_calls.mcp_sessions_close()
        report(args, reps, cpu, shares)
        profiles_print(profiles)
    return 0


async def measure(args, workflow, url: str, server_pid: int):
    """The direct calls on this thread's event loop, as a program using the `mcp` client makes them; the
    workflow's on a worker thread (as a run's tools node runs, in sync code), each timed where it is made."""
    async with streamable_http_client(url) as (read, write, _), ClientSession(read, write) as session:
        await session.initialize()

        async def direct(a, b) -> float:
            started = time.perf_counter()
            result = await session.call_tool("add", {"a": a, "b": b})
            elapsed = time.perf_counter() - started
            assert not result.isError, result
            return elapsed

        async def fresh(a, b) -> float:
            started = time.perf_counter()
            async with streamable_http_client(url) as (read_, write_, _), ClientSession(read_, write_) as opened:
                await opened.initialize()
                result = await opened.call_tool("add", {"a": a, "b": b})
            elapsed = time.perf_counter() - started
            assert not result.isError, result
            return elapsed

        async def through_workflow(a, b) -> float:
            return await anyio.to_thread.run_sync(workflow, a, b)

        sides = {"workflow": through_workflow, "direct": direct, "fresh": fresh}
        for call in sides.values():  # warm: sessions opened, code paths run once
            for _ in range(20):
                await call(1, 2)
        meter = CpuMeter({"mcp server": server_pid})
        meter.start()
        reps, cpu = [], {name: [] for name in sides}
        for rep in range(args.reps):
            times: dict[str, list[float]] = {name: [] for name in sides}
            for i in range(args.calls):
                order = list(sides)
                random.shuffle(order)
                for name in order:
                    cpu_started = time.process_time()
                    times[name].append(await sides[name](i, rep))
                    cpu[name].append(time.process_time() - cpu_started)
            reps.append(times)
            log(f"rep {rep + 1}: workflow {ms(median(times['workflow']))} ms, direct "
                f"{ms(median(times['direct']))} ms: +{ms(median(times['workflow']) - median(times['direct']))} ms")
        shares = meter.stop()
        profiles = await profiled(args.profile, workflow, direct) if args.profile else {}
        return reps, cpu, shares, profiles


async def profiled(calls: int, workflow, direct) -> dict[str, cProfile.Profile]:
    """`calls` calls of each side under cProfile: the workflow's on the thread that makes it and on the pool's
    loop (where its session is), the direct ones on this thread (its loop)."""
    worker, pool, here = cProfile.Profile(), cProfile.Profile(), cProfile.Profile()

    def workflow_profiled(a, b) -> float:
        worker.enable()
        try:
            return workflow(a, b)
        finally:
            worker.disable()

    async def pool_profiling(on: bool) -> None:
        pool.enable() if on else pool.disable()

    chatter_calls.mcp_pool_run(pool_profiling, True)
    for i in range(calls):
        await anyio.to_thread.run_sync(workflow_profiled, i, 3)
    chatter_calls.mcp_pool_run(pool_profiling, False)
    here.enable()
    for i in range(calls):
        await direct(i, 3)
    here.disable()
    return {"workflow, its thread": worker, "workflow, the pool's loop": pool, "direct": here}


# What a profile prints: Chatter's code, the MCP client, httpx's client, Django's querysets (not the event loop's).
PROFILED = r"/(tools|workflows|core)/|/mcp/client/|/httpx/_client|/django/db/models/query\.py"


def profiles_print(profiles: dict[str, cProfile.Profile], top: int = 25) -> None:
    for name, profile in profiles.items():
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(PROFILED, top)
        print(f"\n--- cProfile, {name} (cumulative; a coroutine's every resumption counts as a call) ---")
        print(out.getvalue().strip())


def report(args, reps, cpu, shares) -> None:
    rows = []
    for rep, times in enumerate(reps, start=1):
        rows += [[f"rep {rep} {name}", ms(median(times[name])), ms(percentile(times[name], 95))] for name in times]
        rows.append([f"rep {rep} workflow - direct", ms(median(times["workflow"]) - median(times["direct"])),
                     ms(percentile(times["workflow"], 95) - percentile(times["direct"], 95))])
    print(f"\nB11: one MCP tool call (`add`), {args.calls} calls per side per repetition, interleaved; ms")
    print(table(rows, ["", "p50", "p95"]))
    added = [median(t["workflow"]) - median(t["direct"]) for t in reps]
    print(f"\nadded by the workflow's tool path at p50: {', '.join(ms(a) for a in added)} ms "
          f"(median {ms(median(added))}); target <= 2 ms: {'met' if median(added) <= 0.002 else 'NOT met'}")
    print(f"this process's CPU per call (all its threads; median, ms): "
          + ", ".join(f"{name} {ms(median(values))}" for name, values in cpu.items())
          + f"; the workflow's added CPU: {ms(median(cpu['workflow']) - median(cpu['direct']))} ms (what a busy "
          "machine's waits do not inflate)")
    print(f"CPU while measuring: {format_cpu(shares)}; {machine_note()}")


if __name__ == "__main__":
    sys.exit(run_main(main))
