"""B5's load generator: a separate process that sends chat turns over loopback HTTP/1.1 keep-alive connections and
prints what it measured as one JSON line. Deliberately small (asyncio streams, no HTTP library) so the client
costs little CPU on the machine the servers share.

    python -m bench.b5_loadgen --kind chatter|peer|langgraph|openai --targets 127.0.0.1:8001,127.0.0.1:8002 [--token T]
                               (--clients 8 --duration 10 | --clients 1 --count 100) [--warmup 5] [--timeout 30]
    python -m bench.b5_loadgen --round-robin '[{"name": N, "kind": K, "target": "host:port", "token": T}, ...]'
                               --count 100 [--warmup 5] [--timeout 30] [--pause-ms 25]

With --round-robin, one client per server, one turn at a time: each round sends one turn to every server, in an
order that rotates every round, so each server's sequential turns are taken in the same seconds as the others'
(the machine's slow and quick moments fall on all of them alike). A short pause before each turn lets the
previous server finish what it does after answering, so that one server's background work does not land on
another's turn.

Client i talks to target i % len(targets) on one connection (as a load balancer with keep-alive would spread
them). The same message every turn, and every answer is checked:
- chatter:   `POST /api/v1/chat/ {"message"}` (a new conversation each turn, everything kept), 201 with a
             completed execution;
- peer:      `POST /runs/wait {"assistant_id": "chat", "input": {"message"}, "on_completion": "keep"}` (a new
             thread each turn, kept with its run and checkpoints, as Chatter keeps its conversation), 200 with
             the reply;
- langgraph: the same without "on_completion" (the server's default: the temporary thread is deleted);
- openai:    `POST /v1/chat/completions {"model": "gpt-4o-mini", "messages": [user message]}` with `Authorization:
             Bearer <token>` (B8: a gateway, or its upstream itself), 200 with a chat.completion carrying the
             upstream's reply (bench/b8_stub.py).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

MESSAGE = "hello there"
OPENAI_MODEL = "gpt-4o-mini"
OPENAI_REPLY = b"Hello! How can I help"  # bench/b8_stub.py's reply


def request_bytes(kind: str, host: str, token: str) -> bytes:
    if kind == "chatter":
        path, body = "/api/v1/chat/", {"message": MESSAGE}
        extra = f"Authorization: Token {token}\r\n"
    elif kind == "openai":
        path, body = "/v1/chat/completions", {"model": OPENAI_MODEL, "messages": [{"role": "user", "content": MESSAGE}]}
        extra = f"Authorization: Bearer {token}\r\n"
    else:
        path, body = "/runs/wait", {"assistant_id": "chat", "input": {"message": MESSAGE}}
        if kind == "peer":
            body["on_completion"] = "keep"
        extra = ""
    data = json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nAccept: application/json\r\n"
            f"{extra}Content-Length: {len(data)}\r\nConnection: keep-alive\r\n\r\n")
    return head.encode() + data


def answer_ok(kind: str, status: int, body: bytes) -> bool:
    if kind == "chatter":
        return status == 201 and b'"status":"completed"' in body
    if kind == "openai":
        return status == 200 and b"chat.completion" in body and OPENAI_REPLY in body
    return status == 200 and b'"reply":"(local model)' in body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        return status, await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return status, bytes(body)
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    raise RuntimeError(f"response without a length: {headers}")


class Client:
    def __init__(self, kind: str, target: str, token: str, timeout: float):
        self.kind, self.target, self.timeout = kind, target, timeout
        self.host, port = target.rsplit(":", 1)
        self.port = int(port)
        self.request = request_bytes(kind, target, token)
        self.reader = self.writer = None

    async def turn(self) -> tuple[float, bool, str]:
        """(seconds, ok, detail) for one turn; reconnects if the server closed the connection. A turn not
        answered within the timeout fails, and its connection is dropped."""
        for attempt in range(2):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            started = time.perf_counter()
            try:
                self.writer.write(self.request)
                status, body = await asyncio.wait_for(read_response(self.reader), self.timeout)
            except TimeoutError:
                self.close()
                self.writer = None
                return time.perf_counter() - started, False, f"no answer within {self.timeout:g} s"
            except (asyncio.IncompleteReadError, ConnectionError):
                self.writer = None
                if attempt:
                    raise
                continue
            elapsed = time.perf_counter() - started
            ok = answer_ok(self.kind, status, body)
            return elapsed, ok, "" if ok else f"{status} {body[:200]!r}"
        raise RuntimeError("unreachable")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def run(args) -> dict:
    targets = args.targets.split(",")
    tokens = args.token.split(",")  # client i uses key i % len(tokens)
    clients = [Client(args.kind, targets[i % len(targets)], tokens[i % len(tokens)], args.timeout)
               for i in range(args.clients)]
    for client in clients:  # warm-up: connections open, servers warm
        for _ in range(args.warmup):
            await client.turn()
    latencies: list[float] = []
    failures: list[str] = []
    per_target = {t: 0 for t in targets}
    deadline = None
    remaining = args.count

    async def loop(client: Client) -> None:
        nonlocal remaining
        while True:
            if deadline is not None and time.perf_counter() >= deadline:
                return
            if deadline is None:
                if remaining <= 0:
                    return
                remaining -= 1
            elapsed, ok, detail = await client.turn()
            latencies.append(elapsed)
            per_target[client.target] += 1
            if not ok:
                failures.append(detail)

    cpu0 = time.process_time()
    started = time.perf_counter()
    if args.duration:
        deadline = started + args.duration
    await asyncio.gather(*(loop(c) for c in clients))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    for client in clients:
        client.close()
    return {"kind": args.kind, "clients": args.clients, "turns": len(latencies), "elapsed": elapsed,
            "requests": len(latencies) + args.clients * args.warmup,
            "latencies": latencies, "failures": len(failures), "failure_examples": failures[:3],
            "per_target": per_target, "loadgen_cpu_share": cpu / elapsed, "pid": os.getpid()}


async def round_robin(servers: list[dict], *, count: int, warmup: int, timeout: float, pause: float) -> dict:
    """`count` rounds of one sequential turn per server (rotating order), each turn `pause` s after the previous
    one (so what a server still does after answering, its own background work, is over before the next server's
    turn starts); each server's latencies, by round."""
    clients = {s["name"]: Client(s["kind"], s["target"], s.get("token", ""), timeout) for s in servers}
    for client in clients.values():
        for _ in range(warmup):
            await client.turn()
    names = list(clients)
    latencies: dict[str, list[float]] = {name: [] for name in names}
    failures: dict[str, list[str]] = {name: [] for name in names}
    for round_ in range(count):
        start = round_ % len(names)
        for name in names[start:] + names[:start]:
            await asyncio.sleep(pause)
            elapsed, ok, detail = await clients[name].turn()
            latencies[name].append(elapsed)
            if not ok:
                failures[name].append(detail)
    for client in clients.values():
        client.close()
    return {"round_robin": {name: {"latencies": latencies[name], "failures": len(failures[name]),
                                   "failure_examples": failures[name][:3]} for name in names}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--round-robin", help="JSON list of servers ({name, kind, target, token}): sequential "
                        "turns, one per server per round (--count rounds)")
    parser.add_argument("--kind", choices=("chatter", "peer", "langgraph", "openai"))
    parser.add_argument("--targets", help="host:port[,host:port...]")
    parser.add_argument("--token", default="", help="Chatter API token, or several separated by commas: "
                        "client i uses the i-th (round robin)")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--duration", type=float, default=0, help="seconds of load (else --count turns)")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=3, help="turns per client before measuring")
    parser.add_argument("--timeout", type=float, default=30, help="seconds a turn may take before it fails")
    parser.add_argument("--pause-ms", type=float, default=25, help="--round-robin: pause before each turn (ms)")
    args = parser.parse_args()
    if args.round_robin:
        result = asyncio.run(round_robin(json.loads(args.round_robin), count=args.count, warmup=args.warmup,
                                         timeout=args.timeout, pause=args.pause_ms / 1000))
    elif args.kind and args.targets:
        result = asyncio.run(run(args))
    else:
        parser.error("--kind and --targets, or --round-robin")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
