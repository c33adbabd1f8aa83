"""tests/launcher.py (issue 43 item 24): server processes forked from a parent that preloaded their modules behave
as processes started alone: each takes its own environment, cwd, argv and log; the parent configured no settings,
runs no thread and holds no descriptor a child would inherit; a child is in pytest's process group; signals and
exit statuses reach the test as subprocess.Popen's do; a start the parent cannot fork is started by Popen, loudly."""
from __future__ import annotations

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
    import json

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
    assert httpx.get(f"{local.base_url}/api/v1/health/").status_code == 200
    assert httpx.get(f"{other.base_url}/api/v1/health/").status_code == 400  # DisallowedHost: 127.0.0.1
    assert httpx.get(f"{other.base_url}/api/v1/health/", headers={"Host": "example.test"}).status_code == 200
    for server in (local, other):
        server.process.terminate()
        assert server.process.wait(30) == 0  # daphne's clean shutdown on SIGTERM
