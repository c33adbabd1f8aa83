"""The `server` marker: a test that starts a process (a daphne server, a django-q2 worker, a browser, llama.cpp's
server, redis-server or PostgreSQL of its own, a `manage.py` or SDK suite run in a subprocess) is marked `server`
at collection, so `pytest -m "not server"` is the quick run.

A test starts a process when its code, the code of the fixtures it uses, or the helpers of this `tests` package
they call name `subprocess`, `multiprocessing`, asyncio's subprocess functions or Playwright. Tests written with
the suite's fixtures (`daphne_server`, `gateway`, `llama_server`, `private_redis`, …) are marked without editing.
`@pytest.mark.server` marks one by hand.

A test that starts a process unmarked (e.g. through a library this scan cannot see) errors at teardown, naming
the program: the quick run then never starts servers by accident.
"""
from __future__ import annotations

import inspect
import os
import sys
import types

import pytest

# Names whose use starts a process.
PROCESS_NAMES = frozenset({
    "subprocess", "Popen", "multiprocessing", "create_subprocess_exec", "create_subprocess_shell",
    "playwright", "sync_playwright", "async_playwright", "posix_spawn",
})
PROCESS_EVENTS = frozenset({"subprocess.Popen", "os.posix_spawn", "os.fork", "os.exec", "os.system", "os.spawn",
                            "tests.launcher.fork"})  # a server forked by tests/launcher.py's parent
# What the standard library runs to describe the machine (platform.uname(), ctypes.util.find_library()), e.g. for an
# HTTP client's User-Agent: gone at once, not a server.
MACHINE_PROBES = frozenset({"uname", "ldconfig", "gcc", "cc", "ld", "objdump", "file"})

_verdicts: dict[int, bool] = {}


def _ours(value) -> bool:
    module = getattr(value, "__module__", None) or getattr(value, "__name__", "")
    return module == "tests" or module.startswith("tests.")


def _codes(code: types.CodeType):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


def starts_process(value, seen: set[int] | None = None) -> bool:
    """Whether a function (or a class's methods) of ours names a way to start a process, directly or through
    another function or class of this package."""
    seen = set() if seen is None else seen
    value = inspect.unwrap(value) if callable(value) else value
    if id(value) in seen:
        return False
    seen.add(id(value))
    if id(value) in _verdicts:
        return _verdicts[id(value)]
    if isinstance(value, type):
        members = [m for m in vars(value).values() if isinstance(m, (types.FunctionType, staticmethod, classmethod,
                                                                      property))]
        functions = [getattr(m, "__func__", None) or getattr(m, "fget", None) or m for m in members]
        verdict = any(f is not None and starts_process(f, seen) for f in functions)
    elif isinstance(value, types.FunctionType):
        verdict = _function_starts_process(value, seen)
    else:
        verdict = False
    _verdicts[id(value)] = verdict
    return verdict


def _function_starts_process(function: types.FunctionType, seen: set[int]) -> bool:
    namespace = function.__globals__
    names = {name for code in _codes(function.__code__) for name in code.co_names}
    if any(part in PROCESS_NAMES for name in names for part in name.split(".")):
        return True
    for name in names:
        target = namespace.get(name)
        if isinstance(target, types.ModuleType) and _ours(target):
            followed = [getattr(target, other, None) for other in names]
        else:
            followed = [target]
        for value in followed:
            if isinstance(value, (types.FunctionType, type)) and _ours(value) and starts_process(value, seen):
                return True
    return False


def item_starts_process(item: pytest.Item) -> bool:
    function = getattr(item, "function", None)
    if function is not None and starts_process(function):
        return True
    fixture_info = getattr(item, "_fixtureinfo", None)
    if fixture_info is None:
        return False
    for name in item.fixturenames:
        for fixturedef in fixture_info.name2fixturedefs.get(name, ()):
            func = fixturedef.func
            if _ours(func) and starts_process(func):
                return True
    return False


def pytest_configure(config: pytest.Config) -> None:
    sys.addaudithook(_audit)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("server") is None and item_starts_process(item):
            item.add_marker(pytest.mark.server)


# The programs an unmarked test started, while one runs (None when no unmarked test is running).
_started: list[str] | None = None


def _program(event: str, args: tuple) -> str:
    program = args[0] if args else ""
    if not program and event == "subprocess.Popen" and args[1]:  # no executable: the first argument is the program
        command = args[1]
        program = command if isinstance(command, (str, bytes)) else next(iter(command), "")
    return os.fsdecode(program) if isinstance(program, (str, bytes, os.PathLike)) else str(program)


def _audit(event: str, args: tuple) -> None:  # called for every audited event of the process: cheap first
    if event not in PROCESS_EVENTS or _started is None:
        return
    program = _program(event, args)
    if os.path.basename(program.split()[0] if program.strip() else program) not in MACHINE_PROBES:
        _started.append(f"{event}: {program!r}"[:200])


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem):
    global _started
    _started = None if item.get_closest_marker("server") else []
    try:
        return (yield)
    finally:
        _started = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem):
    result = yield
    if _started:
        started = "; ".join(dict.fromkeys(_started))
        pytest.fail(f"{item.nodeid} started a process ({started}) but is not marked `server`: use the suite's "
                    "server fixtures or mark it @pytest.mark.server", pytrace=False)
    return result
