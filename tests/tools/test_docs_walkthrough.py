"""docs/tools.md's walk-through (issue 44), run as a reader pastes it after the README's shell set-up: it starts
examples/mcp_server.py, registers it with a real server (daphne, the offline `local` model, loopback allowed as
the page says), runs a chat turn that calls its tool, and shows the call in the run's record and its event
stream. (Its ```shell blocks need that setting, so the README's one-shell run of every page leaves them out.)"""
import re
import subprocess

import pytest

from tests.factories import ApiTokenFactory
from tests.fixtures_server import ROOT, free_port, server_env
from workflows.models import ToolCall

pytestmark = [pytest.mark.timeout(300), pytest.mark.server]

PAGE = ROOT / "docs" / "tools.md"


def readme_setup() -> str:
    """The README's shell set-up the page relies on: `API`, `JSON` and the `json` helper."""
    found = re.search(r"^API=.*?^}\n", (ROOT / "README.md").read_text(), re.S | re.M)
    assert found, "the README's API= / json() set-up is gone"
    return found.group(0)


@pytest.mark.django_db(transaction=True)
def test_the_tools_walkthrough_registers_a_server_and_a_run_calls_it(loopback_server, alice, tmp_path):
    server = loopback_server
    token = ApiTokenFactory(user=alice, name="walk", scopes=["chat", "read", "tools"]).key
    blocks = re.findall(r"^```shell\n(.*?)^```$", PAGE.read_text(), flags=re.S | re.M)
    assert blocks, "docs/tools.md has no walk-through"
    port = str(free_port())
    script = "set -euo pipefail\n" + readme_setup() + f"TOKEN={token}\n" + "".join(blocks)
    script = script.replace("http://127.0.0.1:8000", server.base_url).replace("8765", port)

    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=90, cwd=ROOT,
                          env=server_env(tmp_path))

    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    out = done.stdout.splitlines()
    assert out[:2] == ["healthy", "demo__search_issues demo__get_issue"], done.stdout
    assert out[2] == ("demo__search_issues True '#101 [open] Login fails after password reset\\n"
                      "#103 [closed] Login page slow on mobile'"), done.stdout
    assert out[3:] == ["event: tool_start", "event: tool_called"], done.stdout
    call = ToolCall.objects.get()
    assert (call.tool, call.ok, call.server.name, call.arguments) == (
        "demo__search_issues", True, "demo", {"query": "login"})
