"""LangGraph's own SDK integration suite against Chatter, as upstream wrote it.

The source distribution of langgraph-sdk 0.4.3 carries the suite (`tests/integration/`, 55 tests), the four graphs
it runs (`integration/graph/`) and their `integration/langgraph.json`. It is downloaded once with pip into
var/cache/ and unpacked there; nothing of it is in this repository. A real daphne server serves those graphs
(CHATTER_GRAPHS = that langgraph.json), and the suite runs in a pytest process of its own, from the unpacked
sdist with upstream's pytest config (so with the SDK client of the same release), against the server's
/langgraph/. Only connection glue is added (sdk_suite_glue.py: the server URL and the API key); its health probe
and every assertion are upstream's.

Every test has a time limit, so a hanging one fails and the rest go on, and the suite has one. The per-test
outcome is written to test-artifacts/sdk-integration-suite-<database>.md (with the suite's log and JUnit XML beside
it), and the test fails when a test listed in sdk_suite_passing.txt does not pass, when the suite did not collect
its 55 tests, or when it had to be stopped before it ran them all.
"""
from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
from django.db import connection

from tests.fixtures_server import ROOT

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]

SDK_VERSION = "0.4.3"
SUITE_SIZE = 55
CACHE = ROOT / "var" / "cache" / "langgraph-sdk-sdist"
SDIST = CACHE / f"langgraph_sdk-{SDK_VERSION}"
PASSING = Path(__file__).with_name("sdk_suite_passing.txt")
GLUE = Path(__file__).with_name("sdk_suite_glue.py")
ARTIFACTS = ROOT / "test-artifacts"
# Each test of the suite fails after this long (pytest-timeout), and the suite is stopped after SUITE_BUDGET_S
# (so make test stays within its budget if many hang): the stock server runs each test in a second or two.
PER_TEST_TIMEOUT_S = 15
SUITE_BUDGET_S = 240


def sdist_unpacked() -> Path:
    """The unpacked sdist, downloaded and unpacked on first use (under a lock: make test's two phases run together)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (SDIST / "PKG-INFO").is_file():
            archive = CACHE / f"langgraph_sdk-{SDK_VERSION}.tar.gz"
            if not archive.is_file():
                done = subprocess.run(
                    [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "--quiet",
                     "--dest", str(CACHE), f"langgraph-sdk=={SDK_VERSION}"],
                    capture_output=True, text=True, timeout=300)
                assert done.returncode == 0 and archive.is_file(), (
                    f"could not download the langgraph-sdk {SDK_VERSION} sdist:\n{done.stdout}{done.stderr}")
            with tempfile.TemporaryDirectory(dir=CACHE) as unpacking:
                with tarfile.open(archive) as tar:
                    tar.extractall(unpacking, filter="data")
                shutil.rmtree(SDIST, ignore_errors=True)
                (Path(unpacking) / SDIST.name).rename(SDIST)
    for part in ("tests/integration/conftest.py", "integration/langgraph.json", "pyproject.toml"):
        assert (SDIST / part).is_file(), f"the langgraph-sdk {SDK_VERSION} sdist has no {part}"
    return SDIST


@dataclass
class Outcome:
    test_id: str
    outcome: str  # passed, failed, error, skipped
    reason: str = ""


SEVERITY = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}


def outcomes_from_junit(path: Path) -> dict[str, Outcome]:
    """Per test id (`test_runs.py::test_runs_wait_async`), its worst outcome (a test that passed and then failed its
    teardown appears twice) and the first line of why."""
    found: dict[str, Outcome] = {}
    for case in ElementTree.parse(path).iter("testcase"):
        parts, name = case.get("classname", "").split("."), case.get("name")
        modules = [i for i, part in enumerate(parts) if part.startswith("test_")]
        if not name or not modules:  # the test a stop interrupted
            continue
        test_id = "::".join([f"{parts[modules[-1]]}.py", *parts[modules[-1] + 1:], name])
        outcome = Outcome(test_id, "passed")
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                text = child.get("message") or child.text or ""
                first = next((line.strip() for line in text.splitlines() if line.strip()), "")
                outcome = Outcome(test_id, {"failure": "failed"}.get(child.tag, child.tag), first[:300])
                break
        if test_id not in found or SEVERITY[outcome.outcome] > SEVERITY[found[test_id].outcome]:
            found[test_id] = outcome
    return found


def expected_passing() -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in PASSING.read_text().splitlines())
    return [line for line in lines if line]


def write_table(path: Path, outcomes: dict[str, Outcome], summary: str) -> None:
    rows = [f"| `{o.test_id}` | {o.outcome} | {o.reason.replace('|', '/')} |" for o in sorted(
        outcomes.values(), key=lambda o: (o.outcome != "passed", o.test_id))]
    path.write_text("\n".join([f"# {summary}", "", "| test | outcome | why (first line) |", "|---|---|---|",
                               *rows, ""]))


def run_suite(sdist: Path, url: str, key: str, junit: Path, log: Path) -> bool:
    """Runs the suite; False when it had to be stopped at SUITE_BUDGET_S (then the JUnit XML has the tests run so
    far: pytest writes it on an interrupt too, unless the interrupt came while it was collecting)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTEST", "DJANGO", "LANGSMITH", "LANGCHAIN", "LANGGRAPH"))}
    env.update({
        "LANGGRAPH_INTEGRATION_URL": url,
        "LANGGRAPH_API_KEY": key,
        "PYTHONPATH": str(GLUE.parent),  # the glue plugin; nothing else of this project is importable there
        "PYTHONDONTWRITEBYTECODE": "1",  # the unpacked sdist stays as pip gave it
        "LANGSMITH_TRACING": "false",
    })
    command = [sys.executable, "-m", "pytest", "-c", "pyproject.toml", "tests/integration", "-m", "integration",
               "-p", "no:django", "-p", "no:cacheprovider", "-p", GLUE.stem,
               f"--timeout={PER_TEST_TIMEOUT_S}", f"--junitxml={junit}"]
    with log.open("w") as out:
        out.write(f"$ cd {sdist} && {' '.join(command)}\n")
        out.flush()
        process = subprocess.Popen(command, cwd=sdist, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + SUITE_BUDGET_S
        # pytest writes the JUnit XML when its session ends: from then on the process only exits (or waits on a
        # thread a test left behind, which is not the suite's verdict).
        while process.poll() is None and time.monotonic() < deadline and not junit.is_file():
            time.sleep(0.5)
        finished = junit.is_file()
        if process.poll() is None and not finished:
            process.send_signal(signal.SIGINT)  # as Ctrl-C: pytest ends the session and still writes its report
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        return finished


def collected(log: Path) -> int | None:
    found = re.search(r"\bcollected (\d+) items", log.read_text())
    return int(found.group(1)) if found else None


def test_langgraphs_sdk_integration_suite_passes_as_far_as_the_ratchet_says(daphne_server, alice_key, capsys):
    sdist = sdist_unpacked()
    server = daphne_server(CHATTER_GRAPHS=str(sdist / "integration" / "langgraph.json"))
    ARTIFACTS.mkdir(exist_ok=True)
    name = f"sdk-integration-suite-{connection.vendor}"
    junit, log, table = (ARTIFACTS / f"{name}{suffix}" for suffix in (".xml", ".log", ".md"))
    junit.unlink(missing_ok=True)
    # The suite's health probe gives the server 2 s: its first request (the URLconf, the graphs) can take longer on
    # a busy machine (make test's four workers on two cores), and then every test skips. Answered once, it is warm.
    assert httpx.get(f"{server.base_url}/langgraph/ok", timeout=60).status_code == 200

    # The key rides in the server URL's user part too: the SDK builds its websocket's URL from the server URL, and
    # that handshake carries no header of the suite's clients (the socket's client sends it as Basic credentials).
    finished = run_suite(sdist, f"{server.base_url.replace('://', f'://{alice_key}:@', 1)}/langgraph", alice_key,
                         junit, log)

    stopped = "" if finished else f" (stopped after {SUITE_BUDGET_S} s)"
    assert junit.is_file(), f"the suite wrote no JUnit XML{stopped}; its log ({log}) ends:\n{log.read_text()[-3000:]}"
    outcomes = {test_id: replace(o, reason=o.reason.replace(alice_key, "<key>"))  # (URLs in reasons carry it)
                for test_id, o in outcomes_from_junit(junit).items()}
    passed = sorted(test_id for test_id, o in outcomes.items() if o.outcome == "passed")
    summary = f"{len(passed)} of {SUITE_SIZE} pass (langgraph-sdk {SDK_VERSION} integration suite, {connection.vendor})"
    write_table(table, outcomes, summary)
    # The server's own log beside the suite's: what a failed test's 500 was, in the server's words.
    (ARTIFACTS / f"{name}-server.log").write_text(server.log.read_text().replace(alice_key, "<key>"))
    expected = expected_passing()
    newly = [test_id for test_id in passed if test_id not in expected]
    probe_skips = [o for o in outcomes.values() if o.outcome == "skipped" and "not reachable" in o.reason]
    with capsys.disabled():  # the tally shows in make test's output, not only with -s
        print(f"\n{summary}; per test: {table}")
        if not finished:
            print(f"THE SUITE WAS STOPPED after {SUITE_BUDGET_S} s, {len(outcomes)} of {SUITE_SIZE} tests run")
        if probe_skips:
            print(f"THE SUITE'S HEALTH PROBE FAILED: {len(probe_skips)} tests skipped: {probe_skips[0].reason}")
        if newly:
            print(f"{len(newly)} pass that {PASSING.name} does not list yet (add them):\n  " + "\n  ".join(newly))

    assert collected(log) == SUITE_SIZE, f"the suite collected {collected(log)} tests, not {SUITE_SIZE} (see {log})"
    assert finished and len(outcomes) == SUITE_SIZE, (
        f"the suite was stopped after {SUITE_BUDGET_S} s with {len(outcomes)} of {SUITE_SIZE} tests run (see {log})")
    lost = {test_id: outcomes.get(test_id, Outcome(test_id, "missing")) for test_id in expected
            if test_id not in passed}
    assert not lost, "listed as passing in {} but did not pass:\n{}".format(
        PASSING.name, "\n".join(f"{o.test_id}: {o.outcome}: {o.reason}" for o in lost.values()))
    # Everything the suite's runs did is on the books exactly: every run's totals are its nodes' (and its
    # messages'), every conversation's its messages', every template's its runs' (I1-I3, reconcile_aggregates).
    from tests.agent_server.conftest import reconcile_exit_code
    from tests.invariants import assert_i1_everywhere, assert_i3
    from workflows.models import WorkflowExecution

    finished_runs = list(WorkflowExecution.objects.filter(status__in=WorkflowExecution.TERMINAL))
    assert finished_runs, "the suite's runs left no finished execution"
    for execution in finished_runs:
        assert_i3(execution)
    assert_i1_everywhere()
    assert reconcile_exit_code() == 0
