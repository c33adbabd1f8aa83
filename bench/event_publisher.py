"""A publisher process for B3 and B4: plain Python with Django set up (like a command or a worker), sending
§6-shaped token events through `workflows.realtime.broadcast`.

Protocol with the benchmark that starts it, in rounds: it says {"ready": true}; until a line
`go RATE DURATION [bounded]` arrives on stdin it sends one probe event (n = -1) every 20 ms, so the benchmark can see
that its websocket clients are subscribed; then it sends the round's events (n = 0, 1, …), calls
`broadcaster.flush()` and prints one JSON line with what it sent. It exits when stdin closes.

RATE is events/s paced on a fixed schedule (open loop: late calls are made at once, never skipped), or `max`:
as fast as the broadcaster drains, in batches of 200 each followed by flush(). `bounded` makes a paced round
wait for the broadcaster after every 200 calls, so a publisher slower than its schedule falls behind it
instead of queueing without bound, and stops at the end of DURATION (B4 measures the server, not a publisher's
backlog).

    event_publisher.py --owner-id ID [--tag NAME]
"""
from __future__ import annotations

import argparse
import json
import logging
import queue
import sys
import threading
import time
import uuid

import django

BATCH = 200


class OverCapacityCount(logging.Handler):
    """channels_redis drops a group message for a channel that is full, and says so only at INFO level:
    "%s of %s channels over capacity in group %s". Count those drops."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "over capacity" in str(record.msg) and record.args:
            self.dropped += int(record.args[0])


def token_envelope(execution_id: str, *, text: str, n: int, tag: str) -> dict:
    return {
        "event": "token",
        "execution_id": execution_id,
        "seq": None,
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000Z",
        "data": {"node_id": "model", "text": text, "sent_at": time.time(), "n": n, "publisher": tag},
    }


def publish_round(broadcast, broadcaster, *, owner_id: int, rate: float | None, duration: float, tag: str,
                  bounded: bool = False) -> dict:
    execution_id = str(uuid.uuid4())
    sent = 0
    worst_lateness = 0.0
    started = time.perf_counter()
    deadline = started + duration
    if rate is None:
        while time.perf_counter() < deadline:
            for _ in range(BATCH):
                broadcast(token_envelope(execution_id, text="x", n=sent, tag=tag), owner_id=owner_id)
                sent += 1
            broadcaster.flush(timeout=30)
    else:
        for i in range(int(rate * duration)):
            due = started + i / rate
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)
            else:
                worst_lateness = max(worst_lateness, now - due)
            broadcast(token_envelope(execution_id, text="x", n=i, tag=tag), owner_id=owner_id)
            sent += 1
            if bounded and sent % BATCH == 0:
                broadcaster.flush(timeout=30)
                if time.perf_counter() >= deadline:
                    break  # behind schedule: the round lasts `duration`, whatever was sent by then
    calls_done = time.perf_counter()
    broadcaster.flush(timeout=60)
    flushed = time.perf_counter()
    return {"tag": tag, "sent": sent, "calls_s": calls_done - started, "flushed_s": flushed - started,
            "worst_lateness_ms": worst_lateness * 1000}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--owner-id", type=int, required=True)
    parser.add_argument("--tag", default="p0")
    args = parser.parse_args()
    django.setup()
    from workflows.realtime import broadcast, broadcaster

    drops = OverCapacityCount()
    layer_logger = logging.getLogger("channels_redis.core")
    layer_logger.addHandler(drops)
    layer_logger.setLevel(logging.INFO)
    layer_logger.propagate = False

    commands: queue.SimpleQueue = queue.SimpleQueue()

    def read_commands() -> None:
        for line in sys.stdin:
            commands.put(line.split())
        commands.put(None)

    threading.Thread(target=read_commands, daemon=True).start()
    probe_id = str(uuid.uuid4())
    while True:
        print(json.dumps({"ready": True}), flush=True)
        while True:
            try:
                command = commands.get(timeout=0.02)
                break
            except queue.Empty:
                broadcast(token_envelope(probe_id, text="probe", n=-1, tag=args.tag), owner_id=args.owner_id)
        if command is None:
            broadcaster.flush(timeout=10)
            return 0
        broadcaster.flush(timeout=10)  # the probes leave before the measured events start
        _, rate, duration, *options = command
        dropped_before = drops.dropped
        result = publish_round(broadcast, broadcaster, owner_id=args.owner_id, tag=args.tag,
                               rate=None if rate == "max" else float(rate), duration=float(duration),
                               bounded="bounded" in options)
        print(json.dumps({**result, "dropped_over_capacity": drops.dropped - dropped_before}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
