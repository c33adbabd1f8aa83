"""tests/launcher.py (issue 43 item 24): processes forked from a parent that preloaded their modules behave as
processes started alone: each takes its own environment, cwd, argv and log; the parent configured no settings,
runs no thread and holds no descriptor a child would inherit; a child is in pytest's process group (or a session
of its own, asked for); signals and exit statuses reach the test as subprocess.Popen's do; a command run to
completion gives what subprocess.run gives (its output, exit status, input, timeout, traceback); a start the
parent cannot fork is started by subprocess, loudly."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import httpx
import pytest

from tests import launcher
from tests.fixtures_server import server_env

PROBE = """
import json, os, sys, threading
print(json.dumps({"name": __name__, "argv": sys.argv, "cwd": os.getcwd(), "marker": os.environ.get("MARKER"),
                  "threads": threading.active_count(), "pgrp": os.getpgrp(), "fds": sorted(os.listdir("/proc/self/fd")),
                  "settings": "django.conf" in sys.modules and __import__("django.conf").conf.settings.configured}))
if sys.argv[1:] == ["wait"]:
    import signal
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))  # a program's own handler, as daphne's and qcluster's
    print("waiting", flush=True)
    signal.pause()
sys.exit(int(sys.argv[1]))
"""



def _start(tmp_path, name: str, *args: str, **env) -> launcher.Process | subprocess.Popen:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    return launcher.launch([sys.executable, script.name, *args], cwd=tmp_path,
                           env={**os.environ, "PYTHONUNBUFFERED": "1", **env}, log=tmp_path / f"{name}.log")


def _output(tmp_path, name: str) -> list[str]:
    return (tmp_path / f"{name}.log").read_text().splitlines()


@pytest.mark.one_database  # the launcher's own behaviour: no database
def test_item_24_a_child_runs_its_program_with_its_own_environment_cwd_argv_and_log(tmp_path):
    process = _start(tmp_path, "exit", "3", MARKER="first")
    assert isinstance(process, launcher.Process), "not forked: see the warning"
    assert process.wait(30) == 3 and process.returncode == 3 and process.poll() == 3
    seen = json.loads(_output(tmp_path, "exit")[0])
    assert seen["name"] == "__main__" and seen["argv"] == ["probe.py", "3"] and seen["cwd"] == str(tmp_path)
    assert seen["marker"] == "first" and seen["threads"] == 1 and seen["settings"] is False
    assert seen["fds"] == ["0", "1", "2", "3"]  # 3: listdir's own
    assert seen["pgrp"] == os.getpgrp()  # stopping pytest's process group (make test's SQLite phase) stops it too


@pytest.mark.one_database
def test_item_24_sigterm_reaches_the_childs_own_handler_and_kill_ends_it(tmp_path):
    import time

    first, second = _start(tmp_path, "first", "wait"), _start(tmp_path, "second", "wait")
    for name, process in (("first", first), ("second", second)):
        deadline = time.monotonic() + 30
        while "waiting" not in _output(tmp_path, name) and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(0)
        assert process.poll() is None
    first.terminate()
    assert first.wait(30) == 7
    second.kill()
    assert second.wait(30) == -signal.SIGKILL


@pytest.mark.one_database
def test_item_24_the_parent_preloaded_no_settings_and_no_environment_a_server_is_given(tmp_path):
    loaded = launcher.launcher().loaded
    assert loaded["failed"] == {} and loaded["modules"] > 1000
    assert "*" not in loaded["env_read"]  # no preloaded module copied the environment
    given = set(server_env(tmp_path, OPENAI_BASE_URL="http://x", REDIS_URL="redis://x")) - set(os.environ)
    given |= {k for k in os.environ if k.startswith(("DJANGO", "CHATTER", "DATABASE", "REDIS", "OPENAI", "LOG"))}
    assert given and not given & set(loaded["env_read"])


@pytest.mark.one_database
def test_item_24_a_start_that_changes_what_a_preloaded_module_read_is_started_by_popen(tmp_path, monkeypatch):
    monkeypatch.setattr(launcher, "fallbacks", {})  # this test's fallback is not one of the session's summary
    read = launcher.launcher().loaded["env_read"]
    assert "HOME" in read  # e.g. autobahn's reactor choice looks at it
    with pytest.warns(launcher.NotForked, match="HOME"):
        process = _start(tmp_path, "home", "0", HOME=str(tmp_path))
    assert isinstance(process, subprocess.Popen) and process.wait(30) == 0
    assert "not forked" in _output(tmp_path, "home")[0]


def test_item_24_two_servers_forked_from_one_parent_answer_with_their_own_settings(daphne_server):
    local = daphne_server(ALLOWED_HOSTS="127.0.0.1")
    other = daphne_server(ALLOWED_HOSTS="example.test")
    assert isinstance(local.process, launcher.Process) and isinstance(other.process, launcher.Process)
    # (timeouts: a new server's first request is its slowest, over httpx's 5 s on a loaded CI)
    assert httpx.get(f"{local.base_url}/api/v1/health/", timeout=30).status_code == 200
    assert httpx.get(f"{other.base_url}/api/v1/health/", timeout=30).status_code == 400  # DisallowedHost: 127.0.0.1
    named = httpx.get(f"{other.base_url}/api/v1/health/", headers={"Host": "example.test"}, timeout=30)
    assert named.status_code == 200
    for server in (local, other):
        server.process.terminate()
        assert server.process.wait(30) == 0  # daphne's clean shutdown on SIGTERM


# What a `python -c` command sees of its own start, printed on stdout and stderr, its input echoed, its exit status
# its first argument: the same forked and started by subprocess.run.
COMMAND = """
import json, os, sys, threading
line = sys.stdin.readline()
print(json.dumps({"name": __name__, "argv": sys.argv, "path0": sys.path[0], "cwd": os.getcwd(), "line": line,
                  "marker": os.environ.get("MARKER"), "threads": threading.active_count(), "pgrp": os.getpgrp(),
                  "main": {k: repr(v) for k, v in vars(sys.modules["__main__"]).items()},
                  "fds": sorted(os.listdir("/proc/self/fd")), "tty": sys.stdin.isatty() or sys.stdout.isatty()}))
print("to stderr", file=sys.stderr)
sys.exit(int(sys.argv[1]))
"""


@pytest.mark.one_database
def test_item_24_a_command_run_to_completion_gives_what_subprocess_run_gives(tmp_path, monkeypatch):
    monkeypatch.setattr(launcher, "fallbacks", {})
    before = launcher.forked
    env = {**os.environ, "MARKER": "mine"}
    argv = [sys.executable, "-c", COMMAND, "5", "more"]

    forked = launcher.run(argv, cwd=tmp_path, env=env, input="typed\r\nnext\n", timeout=60)
    alone = subprocess.run(argv, cwd=tmp_path, env=env, input="typed\r\nnext\n", timeout=60, capture_output=True,
                           text=True)

    assert launcher.forked == before + 1 and launcher.fallbacks == {}
    assert isinstance(forked, subprocess.CompletedProcess) and forked.args == argv
    assert forked.returncode == alone.returncode == 5
    assert forked.stdout == alone.stdout and forked.stderr == alone.stderr == "to stderr\n"
    seen = json.loads(forked.stdout)
    assert seen["argv"] == ["-c", "5", "more"] and seen["path0"] == "" and seen["cwd"] == str(tmp_path)
    assert seen["line"] == "typed\r\n" and seen["marker"] == "mine"
    assert seen["main"]["__name__"] == "'__main__'" and seen["main"]["__spec__"] == "None"
    assert seen["threads"] == 1 and seen["fds"] == ["0", "1", "2", "3"] and seen["tty"] is False
    no_input = launcher.run(argv[:3] + ["0"], cwd=tmp_path, env=env, text=False)
    assert no_input.returncode == 0 and json.loads(no_input.stdout)["line"] == ""  # stdin: /dev/null
    assert isinstance(no_input.stdout, bytes) and no_input.stderr == b"to stderr\n"


@pytest.mark.one_database
def test_item_24_a_manage_py_command_runs_forked_with_its_own_settings(tmp_path):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "chatter_project.settings", "SECRET_KEY": "k",
           "CHATTER_VAR_DIR": str(tmp_path), "CHATTER_MAX_CONCURRENT_RUNS": "lots"}
    env.pop("DEBUG", None)
    refused = launcher.run([sys.executable, "manage.py", "check"], cwd=launcher.ROOT, env=env, timeout=120)
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr.splitlines()[-1] == ("django.core.exceptions.ImproperlyConfigured: "
                                               "CHATTER_MAX_CONCURRENT_RUNS must be an integer, got 'lots'")
    env["CHATTER_MAX_CONCURRENT_RUNS"] = "3"
    done = launcher.run([sys.executable, "manage.py", "check"], cwd=launcher.ROOT, env=env, timeout=120)
    assert done.returncode == 0 and "System check identified no issues" in done.stdout, done.stderr


@pytest.mark.one_database
def test_item_24_an_uncaught_exception_is_reported_as_the_interpreter_does(tmp_path):
    argv = [sys.executable, "-c", "import json\ndef fail():\n    json.loads('{')\nfail()\n"]
    forked = launcher.run(argv, cwd=tmp_path, env=dict(os.environ), timeout=60)
    alone = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert forked.returncode == alone.returncode == 1 and forked.stdout == ""
    assert forked.stderr == alone.stderr  # from the program's first frame: none of the launcher's or runpy's
    assert forked.stderr.startswith('Traceback (most recent call last):\n  File "<string>", line 4, in <module>\n')


@pytest.mark.one_database
def test_item_24_a_command_past_its_timeout_is_killed_with_what_it_printed(tmp_path):
    script = "import os, signal\nprint('started', os.getpid(), flush=True)\nsignal.pause()\n"
    with pytest.raises(subprocess.TimeoutExpired) as expired:
        launcher.run([sys.executable, "-c", script], cwd=tmp_path, env=dict(os.environ), timeout=3)
    said, pid = expired.value.output.split()
    assert expired.value.timeout == 3 and said == "started" and expired.value.stderr == ""
    assert not os.path.exists(f"/proc/{pid}")  # killed and reaped, as subprocess.run's


@pytest.mark.one_database
def test_item_24_a_server_in_a_session_of_its_own_ends_with_its_group(tmp_path):
    process = _start_in_session(tmp_path)
    assert isinstance(process, launcher.Process), "not forked: see the warning"
    assert os.getsid(process.pid) == process.pid and os.getpgid(process.pid) == process.pid != os.getpgrp()
    os.killpg(process.pid, signal.SIGKILL)  # as a test that kills a worker and the processes it started
    assert process.wait(30) == -signal.SIGKILL


def _start_in_session(tmp_path) -> launcher.Process | subprocess.Popen:
    import time

    script = "import signal\nprint('waiting', flush=True)\nsignal.pause()\n"
    process = launcher.launch([sys.executable, "-c", script], cwd=tmp_path, env=dict(os.environ),
                              log=tmp_path / "session.log", new_session=True)
    deadline = time.monotonic() + 30
    while "waiting" not in _output(tmp_path, "session") and time.monotonic() < deadline:
        time.sleep(0.02)
    return process


@pytest.mark.one_database
def test_item_24_a_command_that_cannot_be_forked_is_run_by_subprocess_loudly(tmp_path, monkeypatch):
    monkeypatch.setattr(launcher, "fallbacks", {})
    argv = [sys.executable, "-c", COMMAND, "2"]
    with pytest.warns(launcher.NotForked, match="HOME"):
        done = launcher.run(argv, cwd=tmp_path, env={**os.environ, "HOME": str(tmp_path)}, input="x\n", timeout=60)
    assert done.returncode == 2 and json.loads(done.stdout)["line"] == "x\n"
    assert done.stderr == "to stderr\n"  # the fallback is said on pytest's stderr, not in the command's output
    assert list(launcher.fallbacks.values()) == [1]


@pytest.mark.one_database
def test_item_24_a_forked_process_reports_the_cpu_it_used(tmp_path):
    script = "import time\nwhile time.process_time() < 0.3:\n    pass\n"  # burns 0.3 s of CPU, however long it takes
    process = launcher.launch([sys.executable, "-c", script], cwd=tmp_path, env=dict(os.environ),
                              log=tmp_path / "cpu.log")
    assert isinstance(process, launcher.Process), "not forked: see the warning"
    assert process.cpu is None and process.wait(60) == 0
    assert 0.3 <= process.cpu < 30  # its own, from its exit status (the summary adds them up)
