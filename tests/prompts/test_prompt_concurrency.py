"""Prompts under concurrency (on SQLite, and on PostgreSQL where the writers really run at once): versions saved
at once are numbered without a gap or a repeat, `latest` ends on the last; turns of one new conversation drawing
under a split at once all get one version."""
from concurrent.futures import ThreadPoolExecutor

import pytest

from prompts.models import PromptAssignment
from prompts.services import prompt_label_set, prompt_version_assigned, prompt_version_create
from tests.analytics.test_usage_concurrency import in_thread
from tests.factories import ConversationFactory
from tests.prompts.factories import PromptFactory, versions_add

pytestmark = pytest.mark.django_db(transaction=True)


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
