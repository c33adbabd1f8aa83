"""Skips of tests that need a real component (a browser, PostgreSQL, Redis, the llama.cpp server) are said
loudly at the end of the run, so a green run without them is never mistaken for a pass.

A test counts as needing a component when its skip reason names it (e.g. "needs Redis (make test's second
phase)"). `CHATTER_REQUIRE_COMPONENTS` (comma-separated: browser, postgresql, redis, llama, node) names the
components this run must have: a skip of one of those fails the run (`make test` sets it for each phase).
`CHATTER_SKIP_REPORT`, when set, is a file that receives one `component<TAB>count` line per skipped
component, for scripts/test.sh's summary.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# Component -> words of a skip reason that name it.
COMPONENTS = {
    "browser": ("chromium", "browser", "playwright"),
    "postgresql": ("postgres",),
    "redis": ("redis",),
    "llama": ("llama",),
    "node": ("node.js",),
}
LABELS = {"browser": "browser (Chromium)", "postgresql": "PostgreSQL", "redis": "Redis", "llama": "llama server",
          "node": "Node.js (the JavaScript clients)"}

_skipped: dict[str, list[tuple[str, str]]] = {}


def _reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr or "")


def component_of(reason: str) -> str | None:
    words = reason.lower()
    return next((name for name, keys in COMPONENTS.items() if any(key in words for key in keys)), None)


def required_components() -> list[str]:
    names = [name.strip().lower() for name in os.environ.get("CHATTER_REQUIRE_COMPONENTS", "").split(",")]
    unknown = [name for name in names if name and name not in COMPONENTS]
    if unknown:
        raise pytest.UsageError(f"CHATTER_REQUIRE_COMPONENTS: unknown {', '.join(unknown)} "
                                f"(known: {', '.join(COMPONENTS)})")
    return [name for name in names if name]


def pytest_configure(config: pytest.Config) -> None:
    required_components()  # a typo stops the run at once
    _skipped.clear()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = _reason(report)
    component = component_of(reason)
    if component:
        _skipped.setdefault(component, []).append((report.nodeid, reason))


def _missing_required() -> list[str]:
    return [name for name in required_components() if name in _skipped]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if hasattr(session.config, "workerinput"):  # a pytest-xdist worker: its controller hears every report, and writes
        return
    report_path = os.environ.get("CHATTER_SKIP_REPORT")
    if report_path:
        Path(report_path).write_text("".join(f"{name}\t{len(tests)}\n" for name, tests in _skipped.items()))
    if _missing_required() and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not _skipped:
        return
    required = _missing_required()
    total = sum(len(tests) for tests in _skipped.values())
    title = f"NOT RUN: {total} tests that need a real component were skipped"
    terminalreporter.section(title, sep="!", red=True, bold=True)
    for name, tests in _skipped.items():
        verdict = "REQUIRED in this run: the run FAILS" if name in required else "not required in this run"
        terminalreporter.write_line(f"{LABELS[name]}: {len(tests)} skipped ({verdict})", red=True, bold=True)
        for nodeid, reason in tests:
            terminalreporter.write_line(f"    {nodeid}: {reason}")
    terminalreporter.write_line(
        "These tests did not pass: they did not run. Skipped components were not tested.", red=True, bold=True)
