"""The official JavaScript clients the tests drive (tests/js/: LangGraph's SDK and OpenAI's Node client, at the
versions its package-lock.json pins). The `node_modules` fixture installs them there with `npm ci` when missing, once
for concurrent runs; `run_script` runs one of tests/js/*.mjs, which asserts what its client returns and prints one
JSON line of what it made, for the test to check what Chatter stored.

Node.js and npm are a real component (`node` in tests/real_components.py): without them these tests skip loudly and
`make test` fails. Registered for the suite with `pytest_plugins` in tests/conftest.py."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

JS = Path(__file__).parent / "js"


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """tests/js/node_modules as its lock file pins it, installed once (both phases of make test may ask at once)."""
    npm = shutil.which("npm")
    if not shutil.which("node") or not npm:
        pytest.skip("needs Node.js and npm (node.js is not installed): the JavaScript clients cannot run")
    wanted = hashlib.sha256((JS / "package-lock.json").read_bytes()).hexdigest()
    stamp = JS / "node_modules" / ".chatter-lock-sha256"
    with open(JS / ".install.lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if not stamp.exists() or stamp.read_text() != wanted:
            done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS, capture_output=True, text=True,
                                  timeout=600, check=False)
            assert done.returncode == 0, f"npm ci failed in tests/js:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
            stamp.write_text(wanted)
    return JS / "node_modules"


def run_script(name: str, **env: str) -> dict:
    """Runs tests/js/`name` with Node.js and `env`; fails with its output unless it exits 0; its last line, parsed."""
    done = subprocess.run(["node", str(JS / name)], cwd=JS, capture_output=True, text=True, timeout=240,
                          check=False, env={**os.environ, **env})
    assert done.returncode == 0, f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])
