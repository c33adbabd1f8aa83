"""The publisher process of B3 and B4 (both ends of its protocol): plain Python with Django set up, like a
command or a worker, publishing token events shaped as a run does.

Protocol, in rounds: the process says {"ready": true}; until a line `go RATE DURATION [bounded]` arrives on
stdin it sends one probe event (n = -1) every 20 ms, so the benchmark can see that its websocket clients are
subscribed; then it sends the round's events (n = 0, 1, …), waits until they have left and prints one
JSON line with what it sent. It exits when stdin closes.

RATE is events/s paced on a fixed schedule (open loop: late calls are made at once, never skipped), or `max`:
as fast as they leave, in batches of 200 each followed by a flush. `bounded` makes a paced round
wait for them to leave after every 200 calls, so a publisher slower than its schedule falls behind it
instead of queueing without bound, and stops at the end of DURATION.

    python -m bench.event_publisher --owner-id ID [--tag NAME]      (started by `Publisher`)
"""
from __future__ import annotations

import argparse
import json
import queue
import subprocess
import sys
import threading
import time
import uuid

from bench.processes import PYTHON, BenchRun

BATCH = 200


# --- the benchmark's side ------------------------------------------------------------------------------------
class Publisher:
    """This module in a process of its own, driven round by round."""

    def __init__(self, run: BenchRun, env: dict, *, owner_id: int, tag: str = "p0"):
        self.tag, self.run = tag, run
        self.process = run.spawn([PYTHON, "-m", "bench.event_publisher", "--owner-id", str(owner_id), "--tag", tag],
                                 env=env, log_name=f"publisher-{tag}.log", stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE)
        self._lines: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._read_lines, name=f"publisher-{tag}-stdout", daemon=True).start()

    def wait_ready(self, timeout: float = 30) -> None:
        """Blocks until the publisher is set up and probing (again, after a round)."""
        line = self._line(timeout)
        if not json.loads(line).get("ready"):
            raise RuntimeError(f"publisher {self.tag}: unexpected {line!r}")

    def go(self, *, rate: float | None, duration: float, bounded: bool = False) -> None:
        self.process.stdin.write(f"go {'max' if rate is None else rate} {duration}{' bounded' if bounded else ''}\n")
        self.process.stdin.flush()

    def result(self, timeout: float = 120) -> dict:
        return json.loads(self._line(timeout))

    def close(self) -> None:
        try:
            self.process.stdin.close()
            self.process.wait(15)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.run.stop(self.process)

    def _line(self, timeout: float) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"publisher {self.tag} said nothing for {timeout} s: {self._log_tail()}") from None
        if line is None:
            raise RuntimeError(f"publisher {self.tag} exited: {self._log_tail()}")
        return line

    def _read_lines(self) -> None:
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _log_tail(self) -> str:
        return (self.run.tmp / f"publisher-{self.tag}.log").read_text()[-2000:]


# --- the publisher process ---------------------------------------------------------------------------------
def token_envelope(execution_id: str, *, text: str, n: int, tag: str) -> dict:
    return {
        "event": "token", "execution_id": execution_id, "seq": None,
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000Z",
        "data": {"node_id": "model", "text": text, "sent_at": time.time(), "n": n, "publisher": tag},
    }


def publish_round(*, owner_id: int, rate: float | None, duration: float, tag: str, bounded: bool = False) -> dict:
    from bench.chatter_calls import broadcast

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
                if time.perf_counter() >= deadline:
                    break  # behind schedule: the round lasts `duration`, whatever was sent by then
    calls_done = flushed = time.perf_counter()  # publishing is synchronous: everything has left
    return {"tag": tag, "sent": sent, "calls_s": calls_done - started, "flushed_s": flushed - started,
            "worst_lateness_ms": worst_lateness * 1000}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--owner-id", type=int, required=True)
    parser.add_argument("--tag", default="p0")
    args = parser.parse_args()
    import django

    django.setup()
    from bench.chatter_calls import broadcast

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
            return 0
        _, rate, duration, *options = command
        result = publish_round(owner_id=args.owner_id, tag=args.tag, rate=None if rate == "max" else float(rate),
                               duration=float(duration), bounded="bounded" in options)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
