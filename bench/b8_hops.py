"""B8's thread hops: how many times one gateway call (`POST /v1/chat/completions`, sync and streamed) goes from the
event loop to a thread and back (asgiref's `sync_to_async`), and for what, through the ASGI application a server
runs (chatter_project.asgi: RequestThreads and Django's own ASGI handler), called in this process to the project's
OpenAI stub in a thread.

    .venv/bin/python -m bench.b8_hops [--calls 50] [--postgres]

SQLite without Redis by default (a hop is a hop on either database); `--postgres`: PostgreSQL + Redis, as
bench.b8_gateway's servers run, where the call's reads come from the process's memo.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter

from asgiref import sync as asgiref_sync

from bench import chatter_calls
from bench.b5_loadgen import MESSAGE, OPENAI_MODEL
from bench.b8_stub import REPLY, USAGE
from bench.chatter_servers import USERNAME, chatter_database
from bench.processes import BenchRun, log, run_main
from bench.services import start_services
from bench.stats import median, ms
from tests.openai_stub import OpenAIStub

HOPS: Counter = Counter()


def _name(func) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', None) or type(func).__name__}"


def _counting(call):
    """SyncToAsync.__call__ (loop -> thread), counting each hop by the function it runs (a bench's own instrument)."""

    async def counted(self, *args, **kwargs):
        HOPS[f"to a thread: {_name(self.func)}"] += 1
        return await call(self, *args, **kwargs)

    return counted


def _counting_back(call):
    """AsyncToSync.__call__ (thread -> loop), likewise."""

    def counted(self, *args, **kwargs):
        HOPS[f"to the loop: {_name(self.awaitable)}"] += 1
        return call(self, *args, **kwargs)

    return counted


async def _call(app, key: str, body: bytes) -> tuple[int, bytes]:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "query_string": b"",
             "root_path": "", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                         (b"authorization", f"Bearer {key}".encode()),
                         (b"content-length", str(len(body)).encode())]}
    sent = [{"type": "http.request", "body": body, "more_body": False}]
    status, chunks, finished = 0, [], asyncio.Event()

    async def receive():
        if sent:
            return sent.pop()
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                finished.set()

    await app(scope, receive, send)
    return status, b"".join(chunks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50, help="calls counted, of each kind (default 50)")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL + Redis")
    args = parser.parse_args()
    with BenchRun("b8-hops") as run:
        stub = OpenAIStub(keep_alive=True, keep_requests=False).start()
        run.on_exit(stub.stop)
        stub.always(content=REPLY, usage=USAGE, model=OPENAI_MODEL)
        extra = {}
        if args.postgres:
            services = start_services(run)
            extra = {"DATABASE_URL": services.database_url, "REDIS_URL": services.redis_url}
        database = chatter_database(run, "postgres" if args.postgres else "sqlite", OPENAI_BASE_URL=stub.base_url,
                                    OPENAI_API_KEY="sk-bench-upstream", CHATTER_PROVIDER_MAX_RETRIES=0, **extra)
        chatter_calls.django_setup(database.env)
        from asgiref.sync import async_to_sync

        from chatter_project.asgi import application
        from keys.services import api_token_create

        user = chatter_calls.bench_user(USERNAME)
        key = api_token_create(user=user, name="b8", scopes=["gateway"])[1]
        asgiref_sync.SyncToAsync.__call__ = _counting(asgiref_sync.SyncToAsync.__call__)
        asgiref_sync.AsyncToSync.__call__ = _counting_back(asgiref_sync.AsyncToSync.__call__)
        for stream in (False, True):
            body = json.dumps({"model": OPENAI_MODEL, "messages": [{"role": "user", "content": MESSAGE}],
                               "stream": stream}).encode()

            async def calls(n: int) -> list[float]:
                times = []
                for _ in range(n):
                    started = time.perf_counter()
                    status, content = await _call(application, key, body)
                    times.append(time.perf_counter() - started)
                    if status != 200 or (stream and b"[DONE]" not in content):
                        raise RuntimeError(f"{status} {content[:300]!r}")
                return times

            async_to_sync(calls)(10)
            HOPS.clear()
            times = async_to_sync(calls)(args.calls)
            HOPS[f"to the loop: {_name(calls)}"] -= 1  # (this script's own)
            kind = "streamed" if stream else "sync"
            print(f"\n{kind}: {sum(HOPS.values()) / args.calls:.1f} hops per call, wall median {ms(median(times))}")
            for name, count in HOPS.most_common():
                print(f"  {count / args.calls:5.1f}  {name}")
        log("done")
    return 0


if __name__ == "__main__":
    run_main(main)
