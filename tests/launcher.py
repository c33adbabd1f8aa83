"""Python processes for tests, forked from a parent that has imported their environment-independent modules once.

A daphne server, a `manage.py qcluster` worker or a `manage.py <command>` spends most of its start importing modules
(~1.5 s of CPU). Most of them do not depend on the process's environment: third-party libraries and `engine/`. Each
pytest process keeps one long-lived parent (`python -m tests.launcher`) that imported them at its start, and asks it
to fork a child per start; the child takes that start's environment, cwd, argv and standard streams and runs the
program as `python -m module ...`, `python script ...` (runpy) or `python -c code ...` would. Two calls:
- `launch(argv, cwd=, env=, log=)`: a server; returns at once a `Process` handle: `pid`, `poll`, `wait`,
  `terminate`, `kill`, `returncode`, as subprocess.Popen's.
- `run(argv, cwd=, env=, input=, timeout=)`: a command run to completion; returns a subprocess.CompletedProcess
  (stdout, stderr, returncode), as subprocess.run(..., capture_output=True) would.

What keeps a child the same as a process started from scratch:
- Django's settings are never configured in the parent (it has no DJANGO_SETTINGS_MODULE): a module that reads a
  setting at import fails there, and is not preloaded.
- The parent records which environment variables the preloaded modules read (`os.environ`, `os.getenv`); a start
  whose environment differs from the parent's in one of them is not forked.
- Startup variables (PYTHON*, LD_*) act when an interpreter starts: a start that differs in one is not forked.
- Before each fork the parent checks it runs one thread and holds no descriptors but its own pipes, and that no
  module installed Twisted's reactor.
- A child is in the parent's process group, which is pytest's: stopping the group stops the servers too; or, given
  `new_session`, in a session of its own (as Popen's start_new_session), for a test that ends it with os.killpg.
- Signals are the program's own: SIGTERM reaches daphne or qcluster as it would reach them started alone.

A start that cannot be forked (the parent would not start or died, or one of the checks above failed) falls back to
subprocess.Popen (launch, said in the server's log) or subprocess.run (run), said on stderr, in pytest's warnings
summary and in its terminal summary.

Not for a start whose check is about the interpreter's own start: which modules it imported (the parent's are
there already), `-X` options or startup variables, or a command a user types (a shell script, `make run`).

The parent forks and reaps (it answers one request at a time); the test side waits on a pidfd of the child and asks
the parent for the exit status once the child has ended.

The modules preloaded: tests/launcher_modules.txt, written by `python -m tests.launcher --write-modules` from what a
daphne server and a qcluster worker have imported once started, less the project's packages (but engine/), less what
fails to import without settings (Django's models, admin and auth modules, DRF's renderers and test client, django_q
but its parts that need no settings, drf_spectacular), imports a module such a process has not, goes on without one
that failed here (a swallowed ImportError), or reads the whole environment (croniter: platform.architecture()
copies it). A list gone stale (a module on it fails to import) makes every start fall back, naming the fix.
"""
from __future__ import annotations

import atexit
import io
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import MutableMapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = Path(__file__).with_name("launcher_modules.txt")
# The project's packages read Django's settings or models; engine/ is plain Python.
PROJECT_PACKAGES = frozenset(p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()) - {"engine"}
# Never imported in the parent: the first two install a Twisted reactor (daphne.server the asyncio one, which opens an
# event loop and its descriptors), as the child's program does; daphne's command line imports daphne.server; and
# wsgiref.handlers copies the whole environment into a class attribute at import (prometheus_client and
# django.test's client import it: not preloaded either).
NOT_PRELOADED = ("twisted.internet.reactor", "daphne.server", "daphne.cli", "daphne.__main__", "wsgiref.handlers")


def startup_env(env: dict) -> dict:
    """The variables an interpreter acts on as it starts, which a fork cannot apply afterwards."""
    return {k: v for k, v in env.items() if k.startswith(("PYTHON", "LD_")) and k != "PYTHONUNBUFFERED"}


# --- the parent ------------------------------------------------------------------------------------------------
class _ReadRecorder(MutableMapping):
    """os.environ while the parent preloads: the names of the variables read."""

    def __init__(self, environ):
        self.environ, self.read = environ, set()

    def __getitem__(self, key):
        self.read.add(key)
        return self.environ[key]

    def __contains__(self, key):
        self.read.add(key)
        return key in self.environ

    def __setitem__(self, key, value):
        self.environ[key] = value

    def __delitem__(self, key):
        del self.environ[key]

    def __iter__(self):
        self.read.add("*")
        return iter(self.environ)

    def __len__(self):
        return len(self.environ)

    def copy(self):
        self.read.add("*")
        return self.environ.copy()


class NotPreloaded(Exception):
    """Raised (not an ImportError, which a module may catch and go on without) when a preloaded module imports one
    that must not be."""


class _Watcher:
    """A meta path finder, first while the parent preloads: notes each module asked for, and stops those that
    must not be imported there."""

    def __init__(self):
        self.asked: set[str] = set()

    def find_spec(self, name, path=None, target=None):
        if name.startswith(NOT_PRELOADED):
            raise NotPreloaded(f"{name} must not be preloaded")
        self.asked.add(name)
        return None  # found by the usual finders


def preload(names: list[str], real: set[str] | None = None) -> dict:
    """Imports `names`, in order. Reports the imports that failed, read the whole environment (e.g. copied it) or,
    given the modules of a real process (`real`), imported one it has not or went on without one of them that
    failed here; and which environment variables were read."""
    failed, listed = {}, set(names)
    environ, watcher = os.environ, _Watcher()
    recorder = os.environ = _ReadRecorder(environ)
    sys.meta_path.insert(0, watcher)
    try:
        for name in names:
            if name in sys.modules:
                continue
            before, whole = set(sys.modules), "*" in recorder.read
            watcher.asked.clear()
            try:
                __import__(name)
            except Exception as error:  # noqa: BLE001 - e.g. a module that reads Django's settings at import
                failed[name] = f"{type(error).__name__}: {error}"[:300]
                continue
            unlisted = sorted(set(sys.modules) - before - (real or listed))
            swallowed = sorted(n for n in watcher.asked & (real or set()) if n not in sys.modules)
            if unlisted and real is not None:
                failed[name] = f"imported modules a real process has not: {unlisted[:5]}"
            elif swallowed:
                failed[name] = f"went on without {swallowed[:5]}, which failed here"
            elif not whole and "*" in recorder.read:
                failed[name] = "read the whole environment"
    finally:
        sys.meta_path.remove(watcher)
        os.environ = environ
    return {"failed": failed, "env_read": sorted(recorder.read), "modules": len(sys.modules)}


def _stale(loaded: dict) -> str | None:
    if loaded["failed"] or "*" in loaded["env_read"]:
        return (f"{MODULES.name} is stale (run python -m tests.launcher --write-modules): {loaded['failed']}")
    return None


def _unforkable(own_fds: set[int]) -> str | None:
    if threading.active_count() != 1:
        return f"the launcher runs {threading.active_count()} threads"
    fds = {int(fd) for fd in os.listdir("/proc/self/fd")}
    # listdir's own descriptor is closed by now; one opened since (a preloaded module's) is not.
    extra = sorted(fd for fd in fds - own_fds if os.path.exists(f"/proc/self/fd/{fd}"))
    if extra:
        return "the launcher holds descriptors " + ", ".join(f"{fd}: {os.readlink(f'/proc/self/fd/{fd}')}"
                                                             for fd in extra)
    if "twisted.internet.reactor" in sys.modules:
        return "a preloaded module installed Twisted's reactor"
    return None


def serve() -> dict | None:
    """Answers requests (one JSON line each) on stdin until it closes; returns in a child, with its start."""
    commands, replies = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # a stray print of a preloaded module does not reach the replies
    os.close(devnull)
    loaded = preload(MODULES.read_text().split())
    stale = _stale(loaded)
    import gc

    gc.freeze()  # the children do not copy the preloaded objects' pages by touching their GC headers
    own_fds = {0, 1, 2, commands, replies}
    parent_env = dict(os.environ)
    children: set[int] = set()

    def reply(message: dict) -> None:
        os.write(replies, (json.dumps(message) + "\n").encode())

    reply({"ready": True, **loaded})
    buffered = b""
    while True:
        while b"\n" not in buffered:
            chunk = os.read(commands, 65536)
            if not chunk:
                _stop_children(children)
                return None
            buffered += chunk
        line, buffered = buffered.split(b"\n", 1)
        request = json.loads(line)
        if request["op"] == "status":  # asked once the child has ended (its pidfd said so)
            pid = request["pid"]
            _, status, usage = os.wait4(pid, 0)
            children.discard(pid)
            # its CPU time, with that of the processes it waited for (e.g. a qcluster's workers)
            reply({"returncode": os.waitstatus_to_exitcode(status), "cpu": usage.ru_utime + usage.ru_stime})
            continue
        env = request["env"]
        changed = sorted(k for k in loaded["env_read"] if env.get(k) != parent_env.get(k))
        reason = stale or _unforkable(own_fds) or (
            f"the preloaded modules read {', '.join(changed)}, which this start changes" if changed else None) or (
            "the start changes the interpreter's startup variables"
            if startup_env(env) != startup_env(parent_env) else None)
        if reason:
            reply({"refused": reason})
            continue
        pid = os.fork()
        if pid == 0:
            os.close(commands)
            os.close(replies)
            return request
        children.add(pid)
        reply({"pid": pid})


def _stop_children(children: set[int]) -> None:
    """stdin closed (pytest ended or died): the servers still running are stopped."""
    for pid in children:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 20
    while children:
        for pid in list(children):
            if time.monotonic() > deadline:  # one that ignores SIGTERM
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                children.discard(pid)
            elif os.waitpid(pid, os.WNOHANG)[0]:
                children.discard(pid)
        time.sleep(0.05)


def become(start: dict) -> None:
    """In the child: becomes the start's program, as the interpreter would have run it: `python -m module ...`,
    `python script ...` or `python -c code ...`, with its own standard streams, session, cwd and environment."""
    if start.get("new_session"):
        os.setsid()  # as Popen's start_new_session: the test may end the child's group with os.killpg
    for fd, path, flags in ((0, start.get("stdin") or os.devnull, os.O_RDONLY),
                            (1, start["stdout"], os.O_WRONLY | os.O_CREAT | os.O_APPEND),
                            (2, start["stderr"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)):
        opened = os.open(path, flags, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    os.chdir(start["cwd"])
    os.environ.clear()
    os.environ.update(start["env"])
    if os.environ.get("PYTHONUNBUFFERED"):
        sys.stdout.reconfigure(line_buffering=True, write_through=True)
        sys.stderr.reconfigure(line_buffering=True, write_through=True)
    argv = start["argv"]
    import runpy

    try:
        if argv[1] == "-m":
            sys.argv = [argv[2], *argv[3:]]
            sys.path[0] = start["cwd"]
            runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
        elif argv[1] == "-c":
            import builtins
            import types
            from importlib.machinery import BuiltinImporter

            sys.argv = ["-c", *argv[3:]]
            sys.path[0] = ""  # as the interpreter's for -c: the current directory
            main = types.ModuleType("__main__")  # as the interpreter's for -c
            main.__loader__, main.__annotations__, main.__builtins__ = BuiltinImporter, {}, builtins
            sys.modules["__main__"] = main
            exec(compile(argv[2], "<string>", "exec"), main.__dict__)  # noqa: S102 - the start's program
        else:
            sys.argv = argv[1:]
            sys.path[0] = os.path.dirname(os.path.abspath(argv[1]))
            runpy.run_path(argv[1], run_name="__main__")
    except Exception as error:  # noqa: BLE001 - an uncaught exception, reported as the interpreter does
        # its traceback from the program's first frame on (not this module's and runpy's), exit status 1
        trace = error.__traceback__
        while trace is not None and trace.tb_frame.f_code.co_filename in (__file__, runpy.__file__):
            trace = trace.tb_next
        sys.excepthook(type(error), error.with_traceback(trace), trace)  # (it prints the exception's own)
        sys.exit(1)


def write_modules() -> None:
    """tests/launcher_modules.txt: of the modules a daphne server and a qcluster worker have imported once started,
    those that import, in that order, in an interpreter without Django settings, without importing a module off the
    list and without reading the whole environment. Each round drops what failed and tries again."""
    code = ("import sys, django; import daphne.cli, daphne.server; django.setup(); import chatter_project.asgi; "
            "from django.core.management import load_command_class; load_command_class('django_q', 'qcluster'); "
            "import django_q.cluster; print('\\n'.join(sys.modules))")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "chatter_project.settings", "SECRET_KEY": "list-modules",
           "CHATTER_VAR_DIR": str(ROOT / "var")}
    names = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True,
                           text=True).stdout.split()
    names = [n for n in names if n != "__main__" and n.split(".")[0] not in PROJECT_PACKAGES]
    bare = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    real = list(names)
    for _ in range(30):
        checked = json.loads(subprocess.run([sys.executable, "-m", "tests.launcher", "--check"], cwd=ROOT, env=bare,
                                            input=json.dumps({"names": names, "real": real}), check=True,
                                            capture_output=True, text=True).stdout)
        dropped = set(checked["failed"])
        for name in sorted(dropped):
            print(f"left out: {name}: {checked['failed'][name]}")
        if not dropped:
            break
        names = [n for n in names if n not in dropped]
    else:
        raise RuntimeError("the module list did not settle")
    MODULES.write_text("\n".join(names) + "\n")
    print(f"{len(names)} modules, reading {checked['env_read']}")


# --- the test side ---------------------------------------------------------------------------------------------
class LauncherUnavailable(RuntimeError):
    pass


class NotForked(UserWarning):
    pass


class Process:
    """A forked child, as a test uses a subprocess.Popen: the parent reaps it and reports its exit status and the
    CPU time it used."""

    def __init__(self, launcher: "Launcher", pid: int, args: list[str]):
        self.launcher, self.pid, self.args = launcher, pid, args
        self.returncode: int | None = None
        self.cpu: float | None = None  # seconds of CPU, once it has ended
        # The child stays a zombie until the parent is asked for its status: this pidfd is of the child.
        self.pidfd = os.pidfd_open(pid)

    def _reap(self) -> None:
        global forked_cpu
        answer = self.launcher.request({"op": "status", "pid": self.pid})
        self.returncode, self.cpu = answer["returncode"], answer["cpu"]
        forked_cpu += self.cpu
        os.close(self.pidfd)

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self.pidfd], [], [], 0)[0]:
            self._reap()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not select.select([self.pidfd], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(self.args, timeout)
            self._reap()
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                signal.pidfd_send_signal(self.pidfd, sig)
            except ProcessLookupError:  # ended since poll()
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Launcher:
    """The parent of one pytest process, started on first use and ended when pytest's process ends."""

    def __init__(self) -> None:
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("PYTEST") and k not in ("CHATTER_Q_SYNC", "DJANGO_SETTINGS_MODULE")}
        self.env["PYTHONUNBUFFERED"] = "1"
        self.lock = threading.Lock()
        # Its own output (a traceback, should it fail) goes to a file of its own, named when it exits.
        with tempfile.NamedTemporaryFile(prefix="tests-launcher-", suffix=".log", delete=False) as log:
            self.log = Path(log.name)
            self.process = subprocess.Popen([sys.executable, "-m", "tests.launcher"], cwd=ROOT, env=self.env,
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        self._loaded: dict | None = None

    @property
    def loaded(self) -> dict:
        """What the parent preloaded (its first answer: waited for on first use, while it preloads)."""
        if self._loaded is None:
            self._loaded = self._read()
        return self._loaded

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise LauncherUnavailable(f"the launcher exited ({self.process.wait()}): {self.log.read_text()[-2000:]}")
        return json.loads(line)

    def request(self, message: dict) -> dict:
        with self.lock:
            self.loaded  # noqa: B018 - its first answer comes first
            try:
                self.process.stdin.write((json.dumps(message) + "\n").encode())
                self.process.stdin.flush()
            except OSError as error:
                raise LauncherUnavailable(f"the launcher exited ({error})") from error
            return self._read()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(30)
        if not self.log.read_text():
            self.log.unlink()


_launcher: Launcher | None = None
_unavailable: str | None = None
# Over this pytest process: how many starts were forked, and why the others were not.
forked = 0
forked_cpu = 0.0  # seconds, of those that have ended
fallbacks: dict[str, int] = {}


def launcher() -> Launcher:
    global _launcher, _unavailable
    if _unavailable is not None:
        raise LauncherUnavailable(_unavailable)
    if _launcher is None or _launcher.process.poll() is not None:
        try:
            _launcher = Launcher()
            _launcher.loaded  # noqa: B018 - started, or why not
        except (OSError, LauncherUnavailable, ValueError) as error:
            _unavailable = str(error)
            raise LauncherUnavailable(_unavailable) from error
        atexit.register(_launcher.close)
    return _launcher


def prestart() -> None:
    """Starts the parent now, to preload while pytest sets up (e.g. creates the test database)."""
    global _launcher
    if _launcher is None and _unavailable is None:
        try:
            _launcher = Launcher()
        except OSError:
            return  # launcher() tries again, and says why
        atexit.register(_launcher.close)


def _fork(start: dict, argv: list, fallback) -> "Process | subprocess.Popen | subprocess.CompletedProcess":
    """Forks `start` from the launcher; where it cannot be, says why (stderr, pytest's warnings summary) and calls
    `fallback(message)`, which starts it by subprocess."""
    global forked
    try:
        current = launcher()
        sys.audit("tests.launcher.fork", argv[0], argv)  # a process start, for tests/server_marker.py
        answer = current.request(start)
    except LauncherUnavailable as error:
        answer = {"refused": str(error)}
    if "pid" in answer:
        forked += 1
        return Process(current, answer["pid"], start["argv"])
    reason = answer["refused"]
    fallbacks[reason] = fallbacks.get(reason, 0) + 1
    message = f"tests/launcher.py: not forked, started by subprocess: {reason}"
    print(message, file=sys.stderr)
    warnings.warn(message, NotForked, stacklevel=3)  # in pytest's warnings summary, also from xdist's workers
    return fallback(message)


def launch(argv: list, *, cwd: Path, env: dict, log: Path,
           new_session: bool = False) -> "Process | subprocess.Popen":
    """A server: `argv` (`python -m module ...`, `python script ...` or `python -c code ...`) run in `cwd` with
    `env`, its stdout and stderr into `log`, its stdin /dev/null, in a session of its own if `new_session` (as
    Popen's start_new_session). Forked from the launcher, or, where it cannot be, started by subprocess.Popen (said
    on stderr and in `log`). Returns at once, with a handle as Popen's."""
    start = {"op": "start", "argv": [str(a) for a in argv], "cwd": str(cwd), "env": env, "stdout": str(log),
             "stderr": str(log), "new_session": new_session}
    log.write_bytes(b"")  # as Popen's stdout=log.open("w"), before the child appends to it

    def popen(message: str) -> subprocess.Popen:
        with log.open("w") as output:
            output.write(message + "\n")
            output.flush()
            return subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=output,
                                    stderr=subprocess.STDOUT, start_new_session=new_session)

    return _fork(start, argv, popen)


def run(argv: list, *, cwd: Path | str, env: dict, input: str | bytes | None = None, timeout: float | None = None,
        text: bool = True) -> subprocess.CompletedProcess:
    """A command run to completion, as subprocess.run(argv, cwd=cwd, env=env, input=input, timeout=timeout,
    capture_output=True, text=text) runs it under pytest (whose stdin is /dev/null): `argv` is `python -m module
    ...`, `python script ...` or `python -c code ...`. Its stdout and stderr go to files of their own, read once it
    has ended; `input` is its stdin (else /dev/null); past `timeout` seconds it is killed and TimeoutExpired raised
    with what it printed. A non-zero exit status is the caller's to check (returncode). Forked from the launcher,
    or, where it cannot be, run by subprocess.run: said on stderr and in pytest's warnings summary, not in the
    command's own output."""
    scratch = Path(tempfile.mkdtemp(prefix="tests-launcher-run-"))
    try:
        start = {"op": "start", "argv": [str(a) for a in argv], "cwd": str(cwd), "env": env,
                 "stdout": str(scratch / "stdout"), "stderr": str(scratch / "stderr"), "stdin": None}
        if input is not None:
            (scratch / "stdin").write_bytes(input.encode() if isinstance(input, str) else input)
            start["stdin"] = str(scratch / "stdin")

        def subprocess_run(message: str) -> subprocess.CompletedProcess:
            return subprocess.run(argv, cwd=cwd, env=env, input=input, timeout=timeout, capture_output=True,
                                  text=text, stdin=None if input is not None else subprocess.DEVNULL)

        process = _fork(start, argv, subprocess_run)
        if isinstance(process, subprocess.CompletedProcess):
            return process

        def output(name: str) -> str | bytes:
            data = (scratch / name).read_bytes() if (scratch / name).exists() else b""
            # as subprocess's text mode: the locale's encoding, universal newlines
            return io.TextIOWrapper(io.BytesIO(data)).read() if text else data

        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise subprocess.TimeoutExpired(start["argv"], timeout, output("stdout"), output("stderr")) from None
        return subprocess.CompletedProcess(start["argv"], process.returncode, output("stdout"), output("stderr"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def summary() -> list[str]:
    """Lines for pytest's summary: how the processes of this pytest process were started."""
    lines = [f"processes forked from tests/launcher.py: {forked} ({forked_cpu:.1f} s of CPU those ended used)"
             ] if forked else []
    lines += [f"NOT FORKED ({count}, started by subprocess): {reason}" for reason, count in fallbacks.items()]
    return lines


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-modules"]:
        write_modules()
    elif sys.argv[1:] == ["--check"]:
        _asked = json.loads(sys.stdin.read())
        print(json.dumps(preload(_asked["names"], set(_asked["real"]))))
    else:
        _request = serve()
        if _request is not None:
            become(_request)
