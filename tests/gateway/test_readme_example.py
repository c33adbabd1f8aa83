"""The README's gateway example, as written, against a server set up as `make run` sets it up out of the box: the
offline `local` provider only, no upstream. Only its base URL (another port) and its key (a new one) change."""
import re
from pathlib import Path

import pytest

from chatter_project.tokens import api_token_create
from workflows.models import WorkflowExecution

README = Path(__file__).resolve().parents[2] / "README.md"
BASE_URL = "http://127.0.0.1:8000/v1"
KEY = "<a key with the gateway scope>"


def readme_example() -> str:
    section = README.read_text().split("## The OpenAI-compatible gateway", 1)[1]
    (code,) = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], flags=re.S)
    assert BASE_URL in code and KEY in code, "the example's base URL and key placeholder changed: update this test"
    return code


@pytest.mark.django_db(transaction=True)
def test_the_readme_gateway_example_runs_out_of_the_box(daphne_server, alice):
    server = daphne_server(OPENAI_API_KEY="", OPENAI_BASE_URL="", ANTHROPIC_API_KEY="",
                           CHATTER_DEFAULT_PROVIDER="local", CHATTER_DEFAULT_MODEL="")
    key = api_token_create(user=alice, name="readme", scopes=["gateway"])[1]
    code = readme_example().replace(BASE_URL, f"{server.base_url}/v1").replace(KEY, key)
    names: dict = {}

    exec(compile(code, str(README), "exec"), names)  # noqa: S102 - the README's own example, run as a reader would

    reply, last = names["reply"], names["chunk"]
    assert reply.choices[0].message.content and reply.choices[0].finish_reason == "stop"
    assert last.choices == [] and last.usage.total_tokens > 0
    runs = WorkflowExecution.objects.filter(workflow_type="gateway", status="completed").order_by("created_at")
    assert [(run.provider, run.total_tokens) for run in runs] == [
        ("local", reply.usage.total_tokens), ("local", last.usage.total_tokens)]
