"""The engine is a library (issue 48 item 4, docs/architecture.md#the-engine): its package imports no Django, no
Django library and no package of the project, so it can be read, tested and reused alone; no module of it is over 500
lines."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import engine as engine_package

pytestmark = pytest.mark.one_database

ROOT = Path(__file__).resolve().parent.parent.parent
PACKAGE = Path(engine_package.__file__).parent
NAME = engine_package.__name__
FRAMEWORKS = {"django", "rest_framework", "channels", "channels_redis", "daphne", "django_q", "corsheaders",
              "whitenoise", "drf_spectacular", "pgvector"}


def project_packages() -> set[str]:
    """The repository's own top-level packages (the apps, core, chatter_project, tests, bench, ...)."""
    return {path.name for path in ROOT.iterdir() if (path / "__init__.py").exists()}


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports, at any depth (functions' own imports too), relative ones resolved; also what it
    names to importlib.import_module or __import__."""
    module = [NAME, *path.relative_to(PACKAGE).with_suffix("").parts]
    package = module if path.name == "__init__.py" else module[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            found.append((node.lineno, ".".join([*base, *([node.module] if node.module else [])])))
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and (getattr(node.func, "attr", None) == "import_module" or getattr(node.func, "id", None) == "__import__")):
            found.append((node.lineno, node.args[0].value))
    return found


def test_item_04_the_engine_imports_no_django_and_no_package_of_the_project():
    forbidden = FRAMEWORKS | project_packages()
    seen, offenders = set(), []
    modules = sorted(PACKAGE.rglob("*.py"))
    for path in modules:
        for line, imported in imports_of(path):
            seen.add(imported)
            if imported == NAME or imported.startswith(NAME + "."):
                continue
            if imported.split(".")[0] in forbidden:
                offenders.append(f"{path.relative_to(ROOT)}:{line}: imports {imported}")
    # The walk read the package, its functions' imports included (LangGraph is imported where a graph compiles).
    assert len(modules) > 20 and {"langgraph.graph", f"{NAME}.routing"} <= seen
    assert {"workflows", "core", "keys", "chatter_project"} <= forbidden
    assert offenders == [], "the engine imports what it may not:\n" + "\n".join(offenders)


def test_item_04_no_module_of_the_engine_is_over_500_lines():
    sizes = {path.relative_to(ROOT): len(path.read_text(encoding="utf-8").splitlines())
             for path in PACKAGE.rglob("*.py")}
    assert sizes and [f"{path}: {lines}" for path, lines in sizes.items() if lines > 500] == []


OUTSIDE_THE_ENGINE = sorted(FRAMEWORKS | project_packages() - {NAME.split(".")[0]})
ALONE = f"""
import sys
from {NAME}.compile import graph_run
from {NAME}.config import config_resolve
from {NAME}.graph import parse_graph
from {NAME}.hooks import NullHooks
from {NAME}.runtime import RunContext

graph = parse_graph({{"nodes": [{{"id": "start", "type": "start"}}, {{"id": "model", "type": "model"}},
                               {{"id": "tools", "type": "tools"}}, {{"id": "end", "type": "end"}}],
                     "edges": [{{"source": "start", "target": "model"}},
                               {{"source": "model", "target": "tools", "condition": "has_tool_calls"}},
                               {{"source": "model", "target": "end"}}, {{"source": "tools", "target": "model"}}]}})
ctx = RunContext(config=config_resolve({{"allowed_tools": ["calculator"]}}), hooks=NullHooks())
state = graph_run(graph, ctx=ctx, message="What is 12*7?")
print(repr(state["messages"][-1].content))
print(ctx.llm_calls, ctx.tool_calls, ctx.usage.total_tokens)
print(sorted({{name.split(".")[0] for name in sys.modules}} & set({OUTSIDE_THE_ENGINE!r})))
"""


def test_item_04_the_engine_runs_a_graph_alone_without_django():
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO", "CHATTER", "OPENAI"))}
    done = subprocess.run([sys.executable, "-c", ALONE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)

    assert done.returncode == 0, done.stderr
    reply, counts, loaded = done.stdout.splitlines()[-3:]
    llm_calls, tool_calls, tokens = map(int, counts.split())
    assert "84" in reply and (llm_calls, tool_calls) == (2, 1) and tokens > 0  # the model called the calculator
    assert loaded == "[]", "the engine imported Django or a package of the project"


def test_item_04_alone_routing_keeps_cooldowns_and_counts_in_its_own_process_cache(tmp_path):
    from engine.routing import deployment_cool_down, deployments_load, route_deployments
    from engine.settings import ProcessCache, settings, settings_update

    path = tmp_path / "deployments.json"
    path.write_text('{"models": {"m": {"deployments": [{"name": "a", "base_url": "http://127.0.0.1:9/v1"},'
                    ' {"name": "b", "base_url": "http://127.0.0.1:10/v1", "rpm": 1}]}}}')
    table = deployments_load(str(path), environ={})
    given = settings.shared_cache  # (Django's cache, in this process)
    settings_update(shared_cache=ProcessCache())
    try:
        deployment_cool_down(table.routes["m"].deployments[0], table=table)
        skipped, skipped_again = [], []
        first = [d.name for d in route_deployments(table.routes["m"], table=table, skipped=skipped)]
        again = [d.name for d in route_deployments(table.routes["m"], table=table, skipped=skipped_again)]
    finally:
        settings_update(shared_cache=given)

    assert first == ["b"] and [(s.deployment.name, s.why) for s in skipped] == [("a", "cooling down")]
    assert again == [] and {(s.deployment.name, s.why) for s in skipped_again} == {("a", "cooling down"),
                                                                                    ("b", "at its rpm")}


def test_item_04_the_process_cache_expires_what_it_holds():
    from engine.settings import ProcessCache

    cache = ProcessCache()
    assert cache.add("n", 0, timeout=60) and not cache.add("n", 5, timeout=60)
    assert cache.incr("n", 3) == 3 and cache.get_many(["n", "missing"]) == {"n": 3}
    cache.set("gone", 1, timeout=-1)  # already past its time
    assert cache.get_many(["gone"]) == {} and cache.add("gone", 2, timeout=60)
    with pytest.raises(ValueError):
        cache.incr("missing")
