"""B4's in-memory variant: Chatter's ASGI application plus two loopback-only endpoints that publish from inside
the server process (without Redis, the only place with listeners), the way a run in that process publishes.

    POST /bench/probe/?owner=ID                                  one probe event (n = -1)
    POST /bench/publish/?owner=ID&rate=EVENTS_PER_S&duration=S   paced events from a thread; answers when done

Served only by the benchmark's own daphne (`python -m bench.b4_ws_throughput`); never part of the project's URLs.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from urllib.parse import parse_qs

from bench.chatter_calls import asgi_application, broadcast
from bench.event_publisher import token_envelope

chatter_application = asgi_application()


def _publish_paced(owner_id: int, rate: float, duration: float) -> dict:
    execution_id = str(uuid.uuid4())
    total = int(rate * duration)
    started = time.perf_counter()
    worst = 0.0
    for i in range(total):
        due = started + i / rate
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        else:
            worst = max(worst, now - due)
        broadcast(token_envelope(execution_id, text="x", n=i, tag="in-process"), owner_id=owner_id)
    return {"tag": "in-process", "sent": total, "calls_s": time.perf_counter() - started,
            "flushed_s": time.perf_counter() - started, "worst_lateness_ms": worst * 1000}


async def _answer(send, status: int, body: dict) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


async def application(scope, receive, send):
    if scope["type"] != "http" or not scope["path"].startswith("/bench/"):
        return await chatter_application(scope, receive, send)
    if scope.get("client", ("",))[0] != "127.0.0.1" or scope["method"] != "POST":
        return await _answer(send, 404, {"error": "not found"})
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    owner_id = int(query["owner"])
    if scope["path"] == "/bench/probe/":
        broadcast(token_envelope(str(uuid.uuid4()), text="probe", n=-1, tag="in-process"), owner_id=owner_id)
        return await _answer(send, 200, {"ok": True})
    if scope["path"] == "/bench/publish/":
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()

        def work() -> None:
            result = _publish_paced(owner_id, float(query["rate"]), float(query["duration"]))
            loop.call_soon_threadsafe(done.set_result, result)

        threading.Thread(target=work, name="bench-publisher", daemon=True).start()
        return await _answer(send, 200, await done)
    return await _answer(send, 404, {"error": "not found"})
