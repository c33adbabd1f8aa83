"""core.db.instances: a named statement's rows as model instances, the same as Manager.raw() makes them (on
PostgreSQL from the cursor and Model.from_db; on SQLite through raw()), on the database the suite runs on."""
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models.query_utils import DeferredAttribute

from conversations.models import Conversation
from core.db import instances
from tests.factories import ConversationFactory
from workflows.models import WorkflowTemplate

pytestmark = pytest.mark.django_db

ATTNAMES = [field.attname for field in WorkflowTemplate._meta.concrete_fields]


def _as_dict(instance) -> dict:
    return {name: getattr(instance, name) for name in ATTNAMES if name in instance.__dict__}


def test_rows_are_the_instances_raw_makes_with_their_json_parsed(alice):
    WorkflowTemplate.objects.create(key="one", name="One", owner=alice, graph={"nodes": [{"id": "start"}]},
                                    params={"naïve": ["✓", 1.5, None]})
    WorkflowTemplate.objects.create(key="two", name="Two", owner=alice)
    sql = 'SELECT * FROM "workflows_workflowtemplate" WHERE "owner_id" = %s ORDER BY "key"'

    read = instances(WorkflowTemplate, sql, [alice.pk])

    raw = list(WorkflowTemplate.objects.raw(sql, [alice.pk]))
    assert [_as_dict(i) for i in read] == [_as_dict(i) for i in raw] and len(read) == 2
    assert read[0].params == {"naïve": ["✓", 1.5, None]} and read[0].graph == {"nodes": [{"id": "start"}]}
    assert not read[0]._state.adding and read[0]._state.db == "default"  # as loaded from the database


def test_columns_in_another_order_land_on_their_fields_and_those_left_out_are_deferred(alice):
    conversation = ConversationFactory(owner=alice, title="hello")
    Conversation.objects.filter(pk=conversation.pk).update(total_cost=Decimal("0.012345"), message_count=3)
    sql = 'SELECT "total_cost", "title", "id" FROM "conversations_conversation" WHERE "id" = %s'

    pk = Conversation._meta.pk.get_db_prep_value(conversation.pk, connection)  # as a statement's caller passes it
    [read] = instances(Conversation, sql, [pk])

    assert (read.pk, read.title, read.total_cost) == (conversation.pk, "hello", Decimal("0.012345"))
    assert read.get_deferred_fields() >= {"owner_id", "message_count", "created_at"}
    assert isinstance(Conversation.__dict__["message_count"], DeferredAttribute)
    assert read.message_count == 3  # a deferred field loads when read, as with raw()


def test_no_rows_is_an_empty_list(alice):
    assert instances(Conversation, 'SELECT * FROM "conversations_conversation" WHERE "owner_id" = %s',
                     [alice.pk]) == []
