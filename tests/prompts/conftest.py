import pytest

from tests.api.conftest import fresh_throttles  # noqa: F401 - every test starts with a full run allowance
from tests.prompts.factories import PromptFactory


@pytest.fixture
def support(alice):
    """Alice's prompt `support`: v1 (production) and v2 (latest)."""
    prompt = PromptFactory(owner=alice, name="support", content="You answer about {{topic}}.",
                           config={"temperature": 0.1}, labels=["production"])
    from prompts.services import prompt_version_create

    prompt_version_create(prompt=prompt, type="text", content="Be terse about {{topic}}.",
                          config={"temperature": 0.7, "max_tokens": 50}, actor=alice)
    return prompt


def prompt_graph(ref: dict) -> dict:
    return {"nodes": [{"id": "start", "type": "start"},
                      {"id": "llm", "type": "model", "config": {"prompt": ref}},
                      {"id": "end", "type": "end"}],
            "edges": [{"source": "start", "target": "llm"}, {"source": "llm", "target": "end"}]}
