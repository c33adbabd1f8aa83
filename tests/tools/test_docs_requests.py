"""docs/tools.md's requests of a run allowed MCP tools, sent as the page writes them: `POST /api/v1/executions/`
with its JSON example, and `POST /api/v1/chat/` with the chat turn's form of it; both are taken (the offline
`local` model answers)."""
import json
import re

import pytest

from tests.fixtures_server import ROOT
from tests.tools.conftest import client_with_key

pytestmark = pytest.mark.django_db
SECTION = ROOT.joinpath("docs", "tools.md").read_text().split("## Tools in workflows", 1)[1].split("\n## ", 1)[0]


def test_the_pages_run_request_is_taken_by_executions(alice):
    [example] = re.findall(r"^```json\n(.*?)^```$", SECTION, flags=re.S | re.M)

    response = client_with_key(alice, scopes=("runs",)).post("/api/v1/executions/", json.loads(example),
                                                             format="json")

    assert response.status_code == 201, response.content
    assert response.json()["execution"]["status"] == "completed"


def test_the_pages_chat_turn_is_taken_by_chat(alice):
    [said] = re.findall(r'`(\{"template": "tool_agent", "message".*?\})`', SECTION)
    body = json.loads(said.replace('"…"', '"How many open issues mention login?"').replace("[…]", '["calculator"]'))

    response = client_with_key(alice, scopes=("chat",)).post("/api/v1/chat/", body, format="json")

    assert response.status_code == 201, response.content
