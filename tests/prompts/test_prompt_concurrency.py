"""Prompts under concurrency (on SQLite, and on PostgreSQL where the writers really run at once): a name created
by many at once is one prompt, the others told it is taken; versions saved at once are numbered without a gap or a
repeat, `latest` ends on the last; turns of one new conversation drawing under a split at once all get one
version."""
from concurrent.futures import ThreadPoolExecutor

import pytest
from rest_framework.test import APIClient

from prompts.models import Prompt, PromptAssignment
from prompts.services import prompt_label_set, prompt_version_assigned, prompt_version_create
from tests.analytics.test_usage_concurrency import in_thread
from tests.factories import ConversationFactory
from tests.prompts.factories import PromptFactory, versions_add
from tests.together import at_once

pytestmark = pytest.mark.django_db(transaction=True)


def test_one_name_created_at_once_is_one_prompt_and_the_others_are_told_it_is_taken(alice):
    def create(index):
        client = APIClient()
        client.force_authenticate(alice)
        response = client.post("/api/v1/prompts/", {"name": "support", "prompt": f"Draft {index}."}, format="json")
        return response.status_code, response.json()

    answers = at_once(12, create)

    assert sorted(status for status, _ in answers) == [201] + [400] * 11, answers
    assert {body["error"]["details"][0]["path"] for status, body in answers if status == 400} == {"name"}
    assert Prompt.objects.filter(owner=alice, name="support").count() == 1
    assert Prompt.objects.get(owner=alice, name="support").versions.count() == 1


def test_versions_saved_at_once_are_numbered_1_to_n_and_latest_is_the_last(alice):
    prompt = PromptFactory(owner=alice, name="support")

    @in_thread
    def save(n):
        return prompt_version_create(prompt=prompt, type="text", content=f"v{n}", config={}, actor=alice).version

    with ThreadPoolExecutor(max_workers=8) as pool:
        numbers = list(pool.map(save, range(16)))

    assert sorted(numbers) == list(range(2, 18))
    assert sorted(prompt.versions.values_list("version", flat=True)) == list(range(1, 18))
    assert prompt.labels.get(name="latest").version.version == 17


def test_turns_of_one_conversation_drawing_at_once_get_one_version(alice):
    
    prompt = PromptFactory(owner=alice, name="support")
    versions_add(prompt, 1)
    label = prompt_label_set(prompt=prompt, name="production", split={"1": 50, "2": 50}, actor=alice)
    conversations = ConversationFactory.create_batch(6, owner=alice)

    @in_thread
    def draw(conversation):
        return conversation.pk, prompt_version_assigned(label=label, conversation_id=conversation.pk).version

    with ThreadPoolExecutor(max_workers=8) as pool:
        draws = list(pool.map(draw, conversations * 4))

    for conversation in conversations:
        assert len({version for pk, version in draws if pk == conversation.pk}) == 1
    assert PromptAssignment.objects.count() == len(conversations)
