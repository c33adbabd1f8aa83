"""/langgraph/'s per-request overhead: sequential `GET /langgraph/threads/{id}` and `POST
/langgraph/threads/{id}/runs/wait` on a trivial registered graph (one node adding 1), in-process through Django's
test Client and over HTTP against a daphne of the same settings and database (SQLite, a fresh file): the CPU time
per request (of this process in-process, of daphne's over HTTP: steady on a busy machine) and the wall time's
median and 90th percentile; plus the SQL statements each request makes (CaptureQueriesContext). One JSON line per
run. To compare two trees (a branch and
main), run it from either against the other, interleaved:

    python bench/langgraph_http_overhead.py --tree <a source tree> --label main [--gets 500] [--waits 200]

The tree's own modules are imported (this file needs nothing of the tree it measures)."""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRAPH = '''from typing import TypedDict
from langgraph.graph import END, START, StateGraph


class State(TypedDict, total=False):
    n: int


def bump(state: State) -> dict:
    return {"n": state.get("n", 0) + 1}


builder = StateGraph(State)
builder.add_node("bump", bump)
builder.add_edge(START, "bump")
builder.add_edge("bump", END)
graph = builder.compile()
'''


def _cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) of this process (every thread), or of process `pid`: what a request costs
    whatever else the machine runs meanwhile, unlike its wall time."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _timed(send, n: int, *, cpu_of: int | None = None) -> dict:
    times = []
    cpu = _cpu_s(cpu_of)
    for _ in range(n):
        started = time.perf_counter()
        send()
        times.append((time.perf_counter() - started) * 1e6)
    cpu = _cpu_s(cpu_of) - cpu
    return {"n": n, "cpu_us": round(cpu / n * 1e6), "median_us": round(statistics.median(times)),
            "p90_us": round(statistics.quantiles(times, n=10)[-1])}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", required=True)
    parser.add_argument("--label", required=True)
    parser.add_argument("--gets", type=int, default=500)
    parser.add_argument("--waits", type=int, default=200)
    args = parser.parse_args()
    tree = Path(args.tree).resolve()
    work = Path(tempfile.mkdtemp(prefix="lg-overhead-"))
    (work / "graph.py").write_text(GRAPH)
    (work / "langgraph.json").write_text(json.dumps({"graphs": {"trivial": "./graph.py:graph"}}))
    env = {"DJANGO_SETTINGS_MODULE": "chatter_project.settings", "SECRET_KEY": "bench-overhead",
           "DATABASE_URL": f"sqlite:///{work / 'db.sqlite3'}", "CHATTER_GRAPHS": str(work / "langgraph.json"),
           "CHATTER_RUN_THROTTLE": "1000000/min", "ALLOWED_HOSTS": "127.0.0.1,localhost,testserver",
           "PYTHONDONTWRITEBYTECODE": "1"}
    os.environ.update(env)
    sys.path.insert(0, str(tree))
    os.chdir(tree)

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from keys.services import api_token_create

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench", "bench@example.com", "bench-password")
    key = api_token_create(user=user)[1]
    client = Client(headers={"x-api-key": key})
    thread = client.post("/langgraph/threads", "{}", content_type="application/json").json()["thread_id"]
    wait_body = json.dumps({"assistant_id": "trivial", "input": {"n": 1}})

    def get():
        response = client.get(f"/langgraph/threads/{thread}")
        assert response.status_code == 200, response.content

    def wait():
        response = client.post(f"/langgraph/threads/{thread}/runs/wait", wait_body, content_type="application/json")
        assert response.status_code == 200, response.content

    _timed(get, 50), _timed(wait, 20)  # warm up
    with CaptureQueriesContext(connection) as get_queries:
        get()
    with CaptureQueriesContext(connection) as wait_queries:
        wait()
    result = {"label": args.label, "queries": {"get": len(get_queries), "wait": len(wait_queries)},
              "client": {"get": _timed(get, args.gets), "wait": _timed(wait, args.waits)}}
    connection.close()

    import httpx

    port = _free_port()
    log = open(work / "daphne.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                               "chatter_project.asgi:application"], cwd=tree, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, **env, "PYTHONPATH": str(tree)})
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"x-api-key": key}, timeout=30) as http:
            for _ in range(200):
                try:
                    if http.get("/langgraph/ok").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)

            def http_get():
                assert http.get(f"/langgraph/threads/{thread}").status_code == 200

            def http_wait():
                response = http.post(f"/langgraph/threads/{thread}/runs/wait", content=wait_body,
                                     headers={"content-type": "application/json"})
                assert response.status_code == 200, response.text

            _timed(http_get, 50), _timed(http_wait, 20)
            result["daphne"] = {"get": _timed(http_get, args.gets, cpu_of=server.pid),
                                "wait": _timed(http_wait, args.waits, cpu_of=server.pid)}
    finally:
        server.terminate()
        server.wait(10)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
