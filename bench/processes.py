"""The processes a benchmark starts, and stopping them all on the way out.

`BenchRun` owns a temp dir and everything started inside it; it stops it all in reverse order on exit, also on an
error, Ctrl-C or SIGTERM, and children get SIGTERM from the kernel if the benchmark itself is killed
(PR_SET_PDEATHSIG). Everything listens on 127.0.0.1 only.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
VAR_DIR = ROOT / "var" / "bench"  # git-ignored: the peers' venvs, the bench's own tools
TOOLS_DIR = VAR_DIR / "tools"
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
HOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


class BenchRun:
    """Context manager: a temp dir, and everything started inside it, stopped on exit."""

    def __init__(self, name: str):
        self.name = name
        self.tmp = Path(tempfile.mkdtemp(prefix=f"chatter-bench-{name}-"))
        self.processes: list[subprocess.Popen] = []
        self._cleanups: list[Callable[[], None]] = []
        self._previous_sigterm = None

    def __enter__(self) -> Self:
        def on_sigterm(signum, frame):
            raise KeyboardInterrupt("SIGTERM")

        self._previous_sigterm = signal.signal(signal.SIGTERM, on_sigterm)
        return self

    def __exit__(self, *exc) -> None:
        # Ctrl-C during the clean-up must not leave things behind: ignore it until done.
        previous_sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for process in reversed(self.processes):
                self.stop(process)
            for cleanup in reversed(self._cleanups):
                try:
                    cleanup()
                except Exception as error:  # noqa: BLE001 - the other clean-ups must still run
                    log(f"clean-up failed: {error}")
            if os.environ.get("BENCH_KEEP_TMP") == "1":
                log(f"kept {self.tmp} (server and publisher logs) because BENCH_KEEP_TMP=1")
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous_sigint)
            signal.signal(signal.SIGTERM, self._previous_sigterm or signal.SIG_DFL)

    def on_exit(self, cleanup: Callable[[], None]) -> None:
        """Run `cleanup` on exit, after every process has been stopped (last registered, first run)."""
        self._cleanups.append(cleanup)

    def stop(self, process: subprocess.Popen, timeout: float = 10) -> None:
        """SIGTERM to the process (its own session), SIGKILL to its group after `timeout`."""
        if process.poll() is None:
            try:
                process.terminate()
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(5)
        if process in self.processes:
            self.processes.remove(process)

    def spawn(self, args: list[str], *, env: dict, log_name: str, stdin=subprocess.DEVNULL, stdout=None,
              cwd: Path = ROOT) -> subprocess.Popen:
        """Start a process in a session of its own (a Ctrl-C reaches only us; we stop children in order), its
        output in `log_name` under the temp dir (stderr only, when `stdout` is given)."""
        log_path = self.tmp / log_name
        process = subprocess.Popen(
            args, cwd=cwd, env=env, stdin=stdin,
            stdout=stdout if stdout is not None else log_path.open("w"),
            stderr=log_path.open("w") if stdout is not None else subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent, text=True,  # noqa: PLW1509 - before any thread matters
        )
        self.processes.append(process)
        return process


def wait_listening(process: subprocess.Popen, port: int, log_path: Path, *, timeout: float = 30,
                   what: str = "server") -> None:
    """Until something accepts connections on HOST:port; fails if the process exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited:\n{log_path.read_text()[-3000:]}")
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start:\n{log_path.read_text()[-3000:]}") from None
            time.sleep(0.05)


def wait_http(process: subprocess.Popen, port: int, path: str, log_path: Path, *, timeout: float = 90,
              what: str = "server") -> None:
    """Until GET http://HOST:port/path answers below 500; fails if the process exits first."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://{HOST}:{port}{path}", timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} on {port} did not answer {path}:\n{log_path.read_text()[-3000:]}")


def ensure_tools() -> Path | None:
    """bench/requirements.txt (uvicorn for B5's uvicorn variant, py-spy for --profile) installed for .venv's
    Python under var/bench/tools (`pip install --target`), so the project's .venv stays as the project installs
    it (`--no-deps`: what they need besides is in .venv already); done once, again when the file changes. None
    when pip fails (no PyPI)."""
    stamp = TOOLS_DIR / ".installed"
    requirements = BENCH_DIR / "requirements.txt"
    if stamp.exists() and stamp.stat().st_mtime >= requirements.stat().st_mtime:
        return TOOLS_DIR
    log(f"installing bench/requirements.txt into {TOOLS_DIR} (pip --target, once)")
    result = subprocess.run([PYTHON, "-m", "pip", "install", "-q", "--upgrade", "--no-deps", "--target",
                             str(TOOLS_DIR), "-r", str(requirements)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        log(f"pip failed, no bench tools:\n{result.stderr[-1500:]}")
        return None
    stamp.touch()
    return TOOLS_DIR


def run_main(main: Callable[[], int | None]) -> None:
    """The entry point of every command: exit with main()'s status, 130 on Ctrl-C or SIGTERM."""
    try:
        sys.exit(main() or 0)
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped")
        sys.exit(130)
