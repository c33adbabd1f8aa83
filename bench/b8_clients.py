"""B8's upstream client: the CPU one chat completion costs the calling thread, through each HTTP client the gateway
could call its upstream with (the pass-through's, gateway/upstream.py, is aiohttp), against the project's OpenAI stub
in a process of its own answering at once over keep-alive connections. Sequential calls on one kept connection;
the variants alternate, `--rounds` times; medians of the rounds.

    .venv/bin/python -m bench.b8_clients [--calls 2000] [--rounds 3]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time

import aiohttp
import httpx

from bench.b8_gateway import start_stub
from bench.processes import BenchRun, log, run_main
from bench.stats import median, table

BODY = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).encode()
HEADERS = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json", "Accept-Encoding": "identity"}
WARM_UP = 50


def _thread_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_utime + usage.ru_stime


def _per_call(calls: int, started: tuple[float, float]) -> tuple[float, float]:
    """(wall, CPU of this thread) per call since `started`, in ms."""
    wall, cpu = started
    return (time.perf_counter() - wall) * 1000 / calls, (_thread_cpu() - cpu) * 1000 / calls


def httpx_sync(url: str, calls: int) -> tuple[float, float]:
    with httpx.Client() as client:
        for _ in range(WARM_UP):
            client.post(url, content=BODY, headers=HEADERS).read()
        started = time.perf_counter(), _thread_cpu()
        for _ in range(calls):
            client.post(url, content=BODY, headers=HEADERS).read()
        return _per_call(calls, started)


async def _httpx_async(url: str, calls: int) -> tuple[float, float]:
    async with httpx.AsyncClient(http2=True) as client:  # (what the pass-through used before: HTTP/1.1 over http)
        for _ in range(WARM_UP):
            await client.post(url, content=BODY, headers=HEADERS)
        started = time.perf_counter(), _thread_cpu()
        for _ in range(calls):
            await client.post(url, content=BODY, headers=HEADERS)
        return _per_call(calls, started)


async def _aiohttp(url: str, calls: int) -> tuple[float, float]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60)) as session:
        for _ in range(WARM_UP):
            async with session.post(url, data=BODY, headers=HEADERS) as response:
                await response.read()
        started = time.perf_counter(), _thread_cpu()
        for _ in range(calls):
            async with session.post(url, data=BODY, headers=HEADERS) as response:
                await response.read()
        return _per_call(calls, started)


CLIENTS = {
    "httpx.Client (sync)": httpx_sync,
    "httpx.AsyncClient": lambda url, calls: asyncio.run(_httpx_async(url, calls)),
    "aiohttp.ClientSession": lambda url, calls: asyncio.run(_aiohttp(url, calls)),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per client per round (default 2000)")
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds (default 3)")
    args = parser.parse_args()
    with BenchRun("b8-clients") as run:
        url = f"http://{start_stub(run).targets(first_only=True)}/v1/chat/completions"
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in CLIENTS}
        for round_ in range(args.rounds):
            log(f"round {round_ + 1}/{args.rounds}: {args.calls} calls per client")
            for name, measure in CLIENTS.items():
                figures[name].append(measure(url, args.calls))
        print(f"\nB8's upstream client: one chat completion to the stub, {args.calls} sequential calls per client "
              f"per round, {args.rounds} alternated rounds (medians; ms per call)")
        print(table([[name, f"{median([w for w, _ in rounds]):.3f}", f"{median([c for _, c in rounds]):.3f}"]
                     for name, rounds in figures.items()], ["client", "wall", "CPU of the calling thread"]))
    return 0


if __name__ == "__main__":
    run_main(main)
