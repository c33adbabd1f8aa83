"""`make run` (scripts/run.sh) as a user starts it: on the port and host asked for, saying "Serving …" only once
that port answers, and saying why when it cannot serve."""
import http.server
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from tests.fixtures_server import ROOT, free_port

pytestmark = [pytest.mark.timeout(400), pytest.mark.one_database]  # `make run` brings its own SQLite


def run_script(tmp_path, **env_vars) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYTEST") and k not in ("CHATTER_Q_SYNC", "DJANGO_SETTINGS_MODULE", "HOST", "PORT")}
    env.update({
        "SECRET_KEY": "test-run-script-secret",
        "CHATTER_VAR_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'run.sqlite3'}",
        "PYTHONUNBUFFERED": "1",
        **env_vars,
    })
    # SIGINT as a terminal leaves it (default): a suite started in the background (`make test &`) inherits it
    # ignored, and bash cannot trap a signal ignored when it starts, so Ctrl-C would never reach the script.
    return subprocess.Popen([str(ROOT / "scripts" / "run.sh")], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def lines_until(process: subprocess.Popen, prefix: str, *, timeout_s: float = 300) -> list[str]:
    """What the script printed up to the first line starting with `prefix` (or to its end)."""
    lines, deadline = [], time.monotonic() + timeout_s
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith(prefix) or time.monotonic() > deadline:
            break
    return lines


def stop(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # what Ctrl-C sends; the script stops daphne and the worker
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the session this test started, nothing else
            process.wait(10)
    process.stdout.close()
    return process.returncode


def test_it_serves_on_the_port_asked_for_and_says_so_once_it_answers(tmp_path):
    port = free_port()
    process = run_script(tmp_path, PORT=str(port))
    try:
        lines = lines_until(process, "Serving ")
        assert lines[-1].startswith(f"Serving http://127.0.0.1:{port}/ "), "\n".join(lines)
        assert any(line.startswith(f"Admin login: http://127.0.0.1:{port}/admin/  user: admin  password: ")
                   for line in lines)
        # Said only once bound: the very next request is answered.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health/", timeout=30) as response:
            assert response.status == 200
    finally:
        stop(process)


def test_when_the_port_is_taken_it_never_says_serving_and_exits_non_zero(tmp_path):
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))  # bound, not listening: daphne cannot bind it, and nothing answers
        process = run_script(tmp_path, PORT=str(port))
        try:
            lines = lines_until(process, "Serving ")
            rc = process.wait(120)
        finally:
            stop(process)
    output = "\n".join(lines)
    assert not any(line.startswith("Serving ") for line in lines), output
    assert rc != 0 and f"could not serve 127.0.0.1:{port}" in output


def test_it_refuses_a_port_another_server_answers_on_before_doing_anything(tmp_path):
    port = free_port()
    other = http.server.HTTPServer(("127.0.0.1", port), http.server.BaseHTTPRequestHandler)  # answers the probe
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        process = run_script(tmp_path, PORT=str(port))
        try:
            output = process.communicate(timeout=120)[0]
        finally:
            stop(process)
    finally:
        other.shutdown()
        other.server_close()
    assert process.returncode == 1, output
    assert f"could not serve 127.0.0.1:{port}: Address already in use" in output
    # Checked first: no "Serving" from the other server's answer, no admin made, no database written.
    assert "Serving " not in output and "Admin login" not in output and "password" not in output
    assert not (tmp_path / "run.sqlite3").exists()


@pytest.mark.parametrize("port", ["80a", "0", "70000"])
def test_a_bad_port_stops_it_with_a_message_naming_port(tmp_path, port):
    process = run_script(tmp_path, PORT=port)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 2 and f"PORT must be a port number (1-65535), got '{port}'" in output
