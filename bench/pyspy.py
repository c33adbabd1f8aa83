"""`--profile`: py-spy samples of a server process while it is measured, summarised as the functions most often
on CPU (self) and most often on the stack (total). Optional: without py-spy it says so and does nothing (it comes
with bench/requirements.txt, installed under var/bench/tools). Profiling perturbs the figures: read it for where
the time goes, not for the figures."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

from bench.processes import ROOT, BenchRun, ensure_tools, log
_IDLE_LEAVES = ("EpollSelector.select", "Condition.wait", "Event.wait", "Thread._wait_for_tstate_lock",
                "SimpleQueue.get", "Queue.get (queue.py)", "sleep")


class Profile:
    """py-spy (non-blocking sampling) of one process for `seconds`, started at once."""

    def __init__(self, run: BenchRun, pid: int, label: str, seconds: float, rate: int = 200):
        self.label = label
        self.raw = run.tmp / f"pyspy-{label}.txt"
        self.process = None
        tools = ensure_tools()
        py_spy = tools / "bin" / "py-spy" if tools else None
        if py_spy is None or not py_spy.exists():
            log("py-spy is not available (bench/requirements.txt): no profile")
            return
        # --gil: only the thread holding the GIL is sampled, i.e. the Python work that costs the process its CPU
        # (threads waiting for the GIL, the database or a socket would otherwise look busy).
        self.process = run.spawn([str(py_spy), "record", "--nonblocking", "--gil", "--format", "raw", "--rate", str(rate),
                                  "--duration", str(max(1, int(seconds))), "--pid", str(pid), "-o", str(self.raw)],
                                 env=dict(os.environ), log_name=f"pyspy-{label}.log")

    def summary(self, top: int = 12, focus: tuple[str, ...] = ()) -> str:
        """Self time by function, then time on the stack for functions whose path contains one of `focus`;
        percentages of the samples in which the process was running (waits in select/locks left out)."""
        if self.process is None:
            return ""
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:  # the measuring ended before the time it was given: py-spy writes at Ctrl-C
            self.process.send_signal(signal.SIGINT)
            self.process.wait(60)
        if not self.raw.exists():
            return f"py-spy wrote nothing for {self.label}"
        kept = ROOT / "bench" / "results" / time.strftime("%Y-%m-%d", time.gmtime())  # git-ignored
        kept.mkdir(parents=True, exist_ok=True)
        kept = kept / f"pyspy-{self.label}-{time.strftime('%H%M%S', time.gmtime())}.txt"
        shutil.copyfile(self.raw, kept)
        own: dict[str, int] = {}
        total: dict[str, int] = {}
        samples = idle = 0
        for line in self.raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            frames = [_short_frame(f) for f in stack.split(";") if not f.startswith(("process ", "thread "))]
            if not frames:
                continue
            if frames[-1].startswith(_IDLE_LEAVES):
                idle += n
                continue
            samples += n
            own[frames[-1]] = own.get(frames[-1], 0) + n
            for frame in set(frames):
                total[frame] = total.get(frame, 0) + n
        if not samples:
            return f"py-spy: no on-CPU samples for {self.label}"
        lines = [f"py-spy, {self.label}: {samples} running samples ({idle} more waiting in select/locks, left out); "
                 f"raw samples: {kept.relative_to(ROOT)}",
                 "  self time:"]
        lines += [f"    {n / samples * 100:5.1f}%  {frame}" for frame, n in
                  sorted(own.items(), key=lambda kv: -kv[1])[:top]]
        if focus:
            lines.append(f"  on the stack (inclusive), in {', '.join(focus)}:")
            picked = [(f, n) for f, n in total.items() if any(m in f for m in focus)]
            lines += [f"    {n / samples * 100:5.1f}%  {frame}" for frame, n in
                      sorted(picked, key=lambda kv: -kv[1])[:top]]
        return "\n".join(lines)


def _short_frame(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/module.py:123)"; keep the function and the package path.
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3.11/", str(ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"
