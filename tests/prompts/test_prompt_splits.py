"""A/B splits: a label pointing at weighted versions. A conversation keeps the version it drew on its first turn
(changing the weights never moves it); a standalone run draws once for all its calls; each run records its draw."""
import pytest

from prompts.models import PromptAssignment, PromptLabel
from prompts.services import prompt_version_assigned
from tests.factories import ConversationFactory
from tests.invariants import assert_all
from tests.prompts.conftest import prompt_graph
from tests.prompts.factories import PromptFactory, versions_add
from workflows.models import LLMCall, WorkflowExecution

pytestmark = pytest.mark.django_db
SPLIT_URL = "/api/v1/prompts/support/labels/production/"
USAGE = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}


@pytest.fixture
def split_prompt(alice):
    prompt = PromptFactory(owner=alice, name="support", content="Version one.")
    versions_add(prompt, 1, text="Version two.")
    return prompt


@pytest.fixture
def definition(api, split_prompt) -> str:
    response = api.post("/api/v1/workflows/definitions/", {
        "name": "split bot", **prompt_graph({"name": "support", "label": "production"})}, format="json")
    assert response.status_code == 201
    return response.json()["id"]


def split(api, weights: dict) -> None:
    assert api.put(SPLIT_URL, {"split": weights}, format="json").status_code == 200


def turn(api, definition: str, conversation: str | None = None, **extra) -> dict:
    response = api.post("/api/v1/chat/", {"message": "hi", "definition_id": definition,
                                          **({"conversation_id": conversation} if conversation else {}), **extra},
                        format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_a_90_10_split_lands_within_three_points_over_2500_draws(api, split_prompt):
    """The draw itself, as every run makes it (one without a conversation draws each time; each draw reads its
    version, so the draws are few enough to keep the test short and the bound is 5 standard deviations of them)."""
    split(api, {"1": 90, "2": 10})
    label = PromptLabel.objects.get(prompt=split_prompt, name="production")

    drawn = [prompt_version_assigned(label=label).version for _ in range(2_500)]

    share_one = drawn.count(1) / len(drawn)
    assert set(drawn) == {1, 2} and abs(share_one - 0.90) <= 0.03, share_one  # 5 standard deviations: 5 * 0.006


def test_40_new_conversations_each_send_the_version_they_drew_and_record_it(api, alice, definition, split_prompt,
                                                                            openai_server, run_rate):
    run_rate("100000/min")  # 40 turns at once
    split(api, {"1": 50, "2": 50})
    for _ in range(40):
        openai_server.reply(content="ok", usage=USAGE)

    conversations = [turn(api, definition, provider="openai", model="gpt-4o-mini")["conversation"]["id"]
                     for _ in range(40)]

    sent = [request.body["messages"][0]["content"] for request in openai_server.requests]
    assert len(sent) == 40 and set(sent) == {"Version one.", "Version two."}  # both: all but 2e-12 of runs
    recorded = [WorkflowExecution.objects.get(conversation_id=c).prompt_version.version for c in conversations]
    assert [{1: "Version one.", 2: "Version two."}[version] for version in recorded] == sent  # each run, what it sent
    assigned = dict(PromptAssignment.objects.values_list("conversation_id", "version__version"))
    assert {str(c): v for c, v in assigned.items()} == dict(zip(conversations, recorded))


def test_every_turn_of_a_conversation_uses_its_first_draw_whatever_the_weights_become(api, alice, definition,
                                                                                       split_prompt):
    split(api, {"1": 50, "2": 50})
    conversations = [turn(api, definition)["conversation"]["id"] for _ in range(12)]
    first = {c: WorkflowExecution.objects.get(conversation_id=c).prompt_version.version for c in conversations}
    assert set(first.values()) == {1, 2}  # 12 draws of a fair coin: both sides (fails once in 2,048 runs)

    split(api, {"1": 0, "2": 100})
    for conversation in conversations:
        turn(api, definition, conversation)
        turn(api, definition, conversation)

    for conversation in conversations:
        versions = LLMCall.objects.filter(execution__conversation_id=conversation).values_list(
            "prompt_version__version", flat=True)
        assert list(versions) == [first[conversation]] * 3
    fresh = turn(api, definition)
    assert WorkflowExecution.objects.get(pk=fresh["execution"]["id"]).prompt_version.version == 2


def test_a_label_moved_off_a_split_moves_every_conversation(api, alice, definition, split_prompt):
    split(api, {"1": 50, "2": 50})
    conversation = turn(api, definition)["conversation"]["id"]
    drawn = WorkflowExecution.objects.get(conversation_id=conversation).prompt_version.version
    other = 3 - drawn

    assert api.put(SPLIT_URL, {"version": other}, format="json").status_code == 200  # the rollout (or rollback)
    execution = turn(api, definition, conversation)["execution"]

    assert WorkflowExecution.objects.get(pk=execution["id"]).prompt_version.version == other


def test_a_standalone_run_draws_once_for_all_its_calls(api, alice, split_prompt):
    split(api, {"1": 50, "2": 50})
    graph = prompt_graph({"name": "support", "label": "production"})
    graph["nodes"].insert(2, {"id": "again", "type": "model", "config": {"prompt": {"name": "support"}}})
    graph["edges"] = [{"source": "start", "target": "llm"}, {"source": "llm", "target": "again"},
                      {"source": "again", "target": "end"}]

    for _ in range(10):
        response = api.post("/api/v1/executions/", {"graph": graph, "input": {"message": "hi"}}, format="json")
        execution = WorkflowExecution.objects.get(pk=response.json()["execution"]["id"])
        calls = list(execution.llm_call_rows.values_list("prompt_version", flat=True))
        assert calls == [execution.prompt_version_id] * 2
        assert_all(execution)
    assert PromptAssignment.objects.count() == 0  # nothing to keep: the run is its own unit
    assert WorkflowExecution.objects.values("prompt_version").distinct().count() == 2  # fails once in 512


def test_a_conversation_whose_version_left_the_split_draws_again_and_keeps_that(alice, split_prompt):
    from prompts.services import prompt_label_set, prompt_version_assigned

    versions_add(split_prompt, 1, text="Version three.")
    conversation = ConversationFactory(owner=alice)
    label = prompt_label_set(prompt=split_prompt, name="production", split={"1": 100, "2": 0}, actor=alice)
    assert prompt_version_assigned(label=label, conversation_id=conversation.pk).version == 1

    label = prompt_label_set(prompt=split_prompt, name="production", split={"2": 0, "3": 100}, actor=alice)

    assert [prompt_version_assigned(label=label, conversation_id=conversation.pk).version for _ in range(3)] == [3] * 3
    label = prompt_label_set(prompt=split_prompt, name="production", split={"2": 100, "3": 0}, actor=alice)
    assert prompt_version_assigned(label=label, conversation_id=conversation.pk).version == 3  # weights: it stays
    assert PromptAssignment.objects.get().version.version == 3
