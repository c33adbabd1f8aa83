"""conversations/statements.py, each named statement run as the services run it: its columns are the model's, the
rows it writes hold what save() would have stored and the row it returns reads as a queryset reads it (SQLite and
PostgreSQL; the two that ride on one statement are PostgreSQL's alone). A turn's memory is one statement
too, read as its queryset read it."""
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conversations import statements as sql
from conversations.models import Conversation, Message
from conversations.selectors import conversation_history
from conversations.services import conversation_create, message_save
from workflows.models import WorkflowExecution

pytestmark = pytest.mark.django_db
# What differs between a message and its ORM-saved twin (created_at is set as each is stored; checked apart).
SAME_AS_ORM = ("id", "conversation_id", "sequence", "created_at")


def _row(model, pk) -> dict:
    return model.objects.filter(pk=pk).values(*(f.attname for f in model._meta.concrete_fields)).get()


def _awkward_message(conversation_id, sequence=1) -> Message:
    """Values that a careless write would change: money past its 8 places, non-ASCII JSON, microseconds."""
    return Message(conversation_id=conversation_id, sequence=sequence, role="assistant", content="naïve ☃ 'quoted'",
                   prompt_tokens=2**40, completion_tokens=3, total_tokens=2**40 + 3, cost=Decimal("0.123456789"),
                   usage_raw={"total": 3, "note": "ünï"}, tool_calls=[{"name": "calc", "args": {"x": 1.5}}],
                   metadata={"k": None}, usage_estimated=True, response_time_ms=12, finish_reason="stop")


def _twin(message: Message, conversation_id) -> dict:
    """The row save() stores for the same message in another conversation."""
    twin = Message(**{f.attname: getattr(message, f.attname) for f in Message._meta.concrete_fields
                      if f.attname not in SAME_AS_ORM}, conversation_id=conversation_id, sequence=99)
    twin.save(force_insert=True)
    return _row(Message, twin.pk)


def _without(row: dict, names) -> dict:
    return {name: value for name, value in row.items() if name not in names}


def test_the_column_lists_are_the_models_concrete_fields_in_order():
    assert sql.CONVERSATION_COLUMNS == tuple(f.attname for f in Conversation._meta.concrete_fields)
    assert sql.MESSAGE_COLUMNS == tuple(f.attname for f in Message._meta.concrete_fields)
    assert set(sql.MESSAGE_COLUMNS) - set(sql.MESSAGE_RIDING_COLUMNS) == {"conversation_id", "sequence"}
    for columns, statement in ((sql.CONVERSATION_COLUMNS, sql.CONVERSATION_INSERT),
                               (sql.MESSAGE_COLUMNS, sql.MESSAGE_INSERT),
                               (sql.MESSAGE_COLUMNS, sql.CONVERSATION_MESSAGE_ADD_WITH_MESSAGE)):
        assert ", ".join(f'"{c}"' for c in columns) in " ".join(statement.split())


def _add_params(conversation_id, *, owner_id, cost=Decimal("0.123456789"), at=None) -> list:
    fields = Conversation._meta
    return [5, 7, 12, fields.get_field("total_cost").get_db_prep_save(cost, connection),
            fields.get_field("last_message_at").get_db_prep_save(at or timezone.now(), connection),
            fields.pk.get_db_prep_value(conversation_id, connection), owner_id]


def test_adding_a_message_counts_it_and_returns_the_row_as_a_queryset_reads_it(alice, bob):
    conversation = conversation_create(owner=alice, title="ünï", metadata={"a": [1, "☃"]})
    at = timezone.now()

    returned = list(Conversation.objects.raw(sql.CONVERSATION_MESSAGE_ADD,
                                             _add_params(conversation.pk, owner_id=alice.pk, at=at)))

    stored = _row(Conversation, conversation.pk)
    assert [_row_of(r) for r in returned] == [stored]
    assert (stored["message_count"], stored["last_sequence"], stored["total_tokens"]) == (1, 1, 12)
    assert stored["total_cost"] == Decimal("0.12345679") and stored["last_message_at"] == at
    # any owner, then the wrong owner: the row counts once more, then not at all
    assert len(list(Conversation.objects.raw(sql.CONVERSATION_MESSAGE_ADD,
                                             _add_params(conversation.pk, owner_id=None)))) == 1
    others = _add_params(conversation.pk, owner_id=bob.pk)
    assert list(Conversation.objects.raw(sql.CONVERSATION_MESSAGE_ADD, others)) == []
    assert _row(Conversation, conversation.pk)["message_count"] == 2


def _row_of(instance) -> dict:
    return {f.attname: getattr(instance, f.attname) for f in type(instance)._meta.concrete_fields}


@pytest.mark.postgres
def test_on_postgresql_the_message_riding_on_the_count_is_stored_as_save_stores_it(alice, bob):
    conversation = conversation_create(owner=alice)
    message = _awkward_message(conversation.pk)
    params = _add_params(conversation.pk, owner_id=alice.pk) + sql.stored_values(
        message, sql.MESSAGE_RIDING_COLUMNS, connection)

    returned = list(Conversation.objects.raw(sql.CONVERSATION_MESSAGE_ADD_WITH_MESSAGE, params))

    assert [_row_of(r) for r in returned] == [_row(Conversation, conversation.pk)]
    stored = _row(Message, message.pk)
    assert (stored["conversation_id"], stored["sequence"], stored["created_at"]) == (
        conversation.pk, 1, message.created_at)
    assert _without(stored, SAME_AS_ORM) == _without(_twin(message, conversation.pk), SAME_AS_ORM)
    # another owner's conversation: no row returned, no message written
    other = _awkward_message(conversation.pk)
    params = _add_params(conversation.pk, owner_id=bob.pk) + sql.stored_values(
        other, sql.MESSAGE_RIDING_COLUMNS, connection)
    assert list(Conversation.objects.raw(sql.CONVERSATION_MESSAGE_ADD_WITH_MESSAGE, params)) == []
    assert not Message.objects.filter(pk=other.pk).exists()


def _opening(owner) -> Conversation:
    return Conversation(owner=owner, title="ünï", metadata={"a": 1}, message_count=1, last_sequence=1,
                        total_cost=Decimal("0.123456789"), last_message_at=timezone.now())


def _assert_stored_as_save_stores(opening: Conversation, message: Message) -> None:
    twin = Conversation(**{f.attname: getattr(opening, f.attname) for f in Conversation._meta.concrete_fields
                           if f.attname != "id"})
    twin.save(force_insert=True)
    skip = ("id", "created_at", "updated_at")  # set when each was stored
    stored = _row(Conversation, opening.pk)
    assert _without(stored, skip) == _without(_row(Conversation, twin.pk), skip)
    assert (stored["created_at"], stored["updated_at"]) == (opening.created_at, opening.updated_at)
    stored = _row(Message, message.pk)
    assert _without(stored, SAME_AS_ORM) == _without(_twin(message, twin.pk), SAME_AS_ORM)
    assert (stored["conversation_id"], stored["sequence"], stored["created_at"]) == (
        opening.pk, 1, message.created_at)


def test_a_conversation_opened_with_its_message_is_stored_as_save_stores_both(alice):
    opening = _opening(alice)
    message = _awkward_message(opening.pk)

    sql.conversation_open_with_message(opening, message)

    _assert_stored_as_save_stores(opening, message)
    assert not opening._state.adding and not message._state.adding


def test_a_message_inserted_by_its_statement_is_stored_as_save_stores_it(alice):
    """message_insert: how a counted message is written where it does not ride on the count (SQLite)."""
    conversation = conversation_create(owner=alice)
    message = _awkward_message(conversation.pk, sequence=7)

    with CaptureQueriesContext(connection) as queries:
        sql.message_insert(message)

    assert [q["sql"].split("(")[0].strip() for q in queries.captured_queries] == [
        'INSERT INTO "conversations_message"']
    stored = _row(Message, message.pk)
    assert (stored["conversation_id"], stored["sequence"], stored["created_at"]) == (
        conversation.pk, 7, message.created_at)
    assert _without(stored, SAME_AS_ORM) == _without(_twin(message, conversation.pk), SAME_AS_ORM)
    assert not message._state.adding


def test_a_turns_history_is_the_newest_messages_before_its_own_oldest_first(alice):
    conversation = conversation_create(owner=alice)
    other = conversation_create(owner=alice)
    for role, content in [("system", "be brief"), ("user", "naïve ☃"), ("tool", "42"), ("assistant", "ok"),
                          ("user", "again"), ("assistant", "later")]:
        message_save(conversation_id=conversation.pk, role=role, content=content)
    message_save(conversation_id=other.pk, role="user", content="elsewhere")

    with CaptureQueriesContext(connection) as queries:
        newest = conversation_history(conversation_id=conversation.pk, before_sequence=6, limit=3)
    assert len(queries.captured_queries) == 1
    assert newest == [("user", "naïve ☃"), ("assistant", "ok"), ("user", "again")]
    assert conversation_history(conversation_id=conversation.pk, limit=3) == [
        ("assistant", "ok"), ("user", "again"), ("assistant", "later")]
    assert conversation_history(conversation_id=conversation.pk, before_sequence=1, limit=3) == []
    assert conversation_history(conversation_id=other.pk, limit=3) == [("user", "elsewhere")]


def test_a_resumed_turns_history_ends_at_its_runs_first_user_message(alice):
    """Without the turn's message at hand (a resumed run), its history ends where the run's first user message is;
    a run that wrote none has no history to read."""
    conversation = conversation_create(owner=alice)
    run, silent = (WorkflowExecution.objects.create(owner=alice, conversation=conversation, workflow_type="custom",
                                                    status="running", mode="sync") for _ in range(2))
    for role, content, execution in [("user", "first", None), ("assistant", "one", None), ("user", "mine", run),
                                     ("assistant", "reply", run), ("user", "again", run), ("user", "later", None)]:
        message_save(conversation_id=conversation.pk, role=role, content=content, execution=execution)

    with CaptureQueriesContext(connection) as queries:
        history = conversation_history(conversation_id=conversation.pk, before_turn_of=run.pk, limit=10)
    assert len(queries.captured_queries) == 1
    assert history == [("user", "first"), ("assistant", "one")]
    assert conversation_history(conversation_id=conversation.pk, before_turn_of=silent.pk, limit=10) == []
