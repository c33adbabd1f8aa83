"""How busy the machine was: CPU time of named processes while a benchmark measured, and what every other
process used meanwhile ("others": the machine is shared, so every report says how loaded it was)."""
from __future__ import annotations

import math
import os
import threading
import time
from collections import defaultdict
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far; NaN once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / _TICKS


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants now (e.g. a qcluster's worker processes)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                pass
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process, of its live descendants, and of the children it has reaped (cutime + cstime):
    what a forking server (PostgreSQL: a backend per connection) used, including backends that exited."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return float("nan")
    total = sum(int(f) for f in fields[11:15]) / _TICKS  # utime, stime, cutime, cstime
    for child in process_tree(pid)[1:]:
        seconds = cpu_seconds(child)
        if not math.isnan(seconds):  # a backend that exited meanwhile is in cutime instead
            total += seconds
    return total


def _machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return total - idle, total


class Tree(int):
    """A pid whose whole process tree is counted, reaped children included (see tree_cpu_seconds)."""


class CpuMeter:
    """CPU used by named processes between start() and stop(), as a share of one core, plus "others".

    A name stands for a pid, a list of pids (summed: e.g. a qcluster and its workers) or a `Tree(pid)`."""

    def __init__(self, pids: dict[str, int | list[int]]):
        self.pids = pids

    @staticmethod
    def _cpu(pids: int | list[int]) -> float:
        if isinstance(pids, Tree):
            return tree_cpu_seconds(pids)
        if isinstance(pids, list):
            return sum(cpu_seconds(pid) for pid in pids)
        return cpu_seconds(pids)

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.c0 = {name: self._cpu(pid) for name, pid in self.pids.items()}
        self.m0 = _machine_jiffies()

    def stop(self) -> dict[str, float]:
        elapsed = time.monotonic() - self.t0
        shares = {name: (self._cpu(pid) - self.c0[name]) / elapsed for name, pid in self.pids.items()}
        busy, total = (now - before for now, before in zip(_machine_jiffies(), self.m0))
        machine = busy / total * os.cpu_count() if total else float("nan")
        shares["others"] = max(0.0, machine - sum(v for v in shares.values() if not math.isnan(v)))
        return shares


def machine_note() -> str:
    load = os.getloadavg()
    return (f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
            f"a 1-million-step Python loop {python_loop_ms():.0f} ms")


def python_loop_ms() -> float:
    """The host's speed as one figure, the best of 3 runs of a fixed pure-Python loop: hosts of this machine's kind
    differ (the same code's chat turns measured ×2.4 apart on two days), so figures of different runs are read
    against it."""
    best = float("inf")
    for _ in range(3):
        started, total = time.perf_counter(), 0
        for step in range(1_000_000):
            total += step
        best = min(best, time.perf_counter() - started)
    return best * 1000


def format_cpu(shares: dict[str, float]) -> str:
    return ", ".join(f"{name} {share * 100:.0f}%" for name, share in shares.items()) + " of one core"


def threads_cpu() -> dict[str, float]:
    """CPU seconds so far of this process's threads by name ("chatter-…" threads and the main thread by their
    own name, the rest as "other")."""
    found: dict[str, float] = defaultdict(float)
    by_id = {t.native_id: t.name for t in threading.enumerate()}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = by_id.get(int(task.name), "other")
        name = name if name.startswith(("chatter-", "MainThread")) else "other"
        found[name] += (int(fields[11]) + int(fields[12])) / _TICKS
    return found


def loop_thread_cpu(pid: int) -> tuple[float, float]:
    """(CPU seconds so far of process `pid`'s main thread, where an ASGI server runs its event loop; of all its
    other threads): another process's threads, by thread id."""
    main = rest = 0.0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds = (int(fields[11]) + int(fields[12])) / _TICKS
        if int(task.name) == pid:
            main += seconds
        else:
            rest += seconds
    return main, rest


def run_queue_seconds(pids: list[int]) -> float:
    """Seconds the threads of `pids` (and of their children, as a PostgreSQL postmaster's backends) have spent
    runnable but waiting for a core so far (/proc/…/schedstat's run delay), live threads only."""
    total = 0
    for pid in {child for pid in pids for child in process_tree(pid)}:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                total += int((task / "schedstat").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return total / 1e9

