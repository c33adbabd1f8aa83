import pytest

from tests.api.conftest import fresh_throttles  # noqa: F401 - every test starts with a full run allowance
from tests.datasets.factories import DatasetFactory, DatasetItemFactory
from tests.prompts.factories import PromptFactory, versions_add

OPENAI = {"provider": "openai", "model": "gpt-4o-mini"}
JUDGE_MODEL = "gpt-4o"


@pytest.fixture
def qa(alice):
    """Alice's dataset `qa`: 4 items; item n asks "question n" and expects "answer n"."""
    dataset = DatasetFactory(owner=alice, name="qa")
    for n in range(4):
        DatasetItemFactory(dataset=dataset, input={"message": f"question {n}"}, expected_output=f"answer {n}")
    return dataset


@pytest.fixture
def support(alice):
    """Alice's prompt `support`: v1 (production) and v2."""
    prompt = PromptFactory(owner=alice, name="support", content="Answer briefly.", labels=["production"])
    versions_add(prompt, 1, text="Answer in one word.")
    return prompt


def experiment_body(dataset, **changes) -> dict:
    return {"name": "try", "dataset": str(dataset.pk), "targets": [{"template": "universal_chat"}],
            **changes}
