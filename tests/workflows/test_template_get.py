"""workflows.selectors.template_get finds what template_list would find: the two say the
same of every template a user may or may not see, by id and by key (the user's own first)."""
import pytest

from tests.api.test_templates import GRAPH
from tests.factories import WorkflowTemplateFactory
from workflows.models import WorkflowTemplate
from workflows.selectors import template_get, template_list

pytestmark = pytest.mark.django_db


def test_template_get_finds_exactly_what_template_list_lists(alice, bob):
    templates = [
        WorkflowTemplate.objects.get(key="universal_chat", owner=None),  # built-in
        WorkflowTemplateFactory(key="alices", name="a", owner=alice, graph=GRAPH),
        WorkflowTemplateFactory(key="bobs", name="b", owner=bob, graph=GRAPH),
        WorkflowTemplateFactory(key="bobs_shared", name="c", owner=bob, graph=GRAPH, is_public=True),
    ]
    for user in (alice, bob):
        visible = set(template_list(user=user).values_list("pk", flat=True))
        for template in templates:
            found = template_get(user=user, key_or_id=str(template.pk))
            assert (found.pk if found else None) == (template.pk if template.pk in visible else None)
            by_key = template_get(user=user, key_or_id=template.key)
            assert (by_key is not None) == (template.pk in visible)


def test_by_key_the_users_own_template_comes_before_a_shared_one(alice, bob):
    shared = WorkflowTemplateFactory(key="brief", name="b", owner=bob, graph=GRAPH, is_public=True)
    mine = WorkflowTemplateFactory(key="brief", name="a", owner=alice, graph=GRAPH)
    assert template_get(user=alice, key_or_id="brief").pk == mine.pk
    assert template_get(user=bob, key_or_id="brief").pk == shared.pk
    assert template_get(user=alice, key_or_id="no_such_key") is None
    assert template_get(user=alice, key_or_id="00000000-0000-0000-0000-000000000000") is None
