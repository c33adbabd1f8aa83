"""Writes of conversations: every message is saved and deleted here, so aggregates stay exact (I1)."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.models import F
from django.utils import timezone

from conversations.models import Conversation, Document, Message
from conversations.selectors import conversation_is_busy
from conversations.signals import document_created, document_deleting, message_deleted, message_saved
from core.db import prepared_values, write_atomic
from core.errors import Conflict, InvalidInput, NotFound
from conversations.statements import (
    CONVERSATION_MESSAGE_ADD,
    CONVERSATION_MESSAGE_ADD_WITH_MESSAGE,
    MESSAGE_RIDING_COLUMNS,
    conversation_open_with_message,
    message_insert,
    stored_values,
)

MAX_MESSAGE_CHARS = 100_000
MAX_DOCUMENT_CHARS = 500_000
_ROLES = frozenset(Message.Role.values)  # (Choices.values builds its list on every read)
_STATUSES = frozenset(Conversation.Status.values)
_ADDED = ("total_cost", "last_message_at", "id")  # what CONVERSATION_MESSAGE_ADD sets, then the row's id


def conversation_create(*, owner, title: str = "", metadata: dict | None = None,
                        status: str = Conversation.Status.ACTIVE, conversation_id=None,
                        written: bool = True) -> Conversation:
    """A new conversation; `conversation_id`: the id a client chose (LangGraph's threads may be created so).
    `written=False`: not inserted yet, to be opened by its first message (message_save's `opening`)."""
    if status not in _STATUSES:
        raise InvalidInput(f"unknown status {status!r}")
    conversation = Conversation(owner=owner, title=title[:255], metadata=metadata or {}, status=status)
    if conversation_id is not None:
        conversation.id = conversation_id
    if written:
        conversation.save(force_insert=True)
    return conversation


CONVERSATION_EDITABLE = ("title", "status", "metadata")


def conversation_update(*, conversation: Conversation, **changes) -> Conversation:
    """Title, status and metadata; the aggregates are the receivers' alone."""
    unknown = sorted(set(changes) - set(CONVERSATION_EDITABLE))
    if unknown:
        raise InvalidInput("these fields cannot be changed", details=[
            {"path": name, "code": "read_only", "message": f"{name} cannot be changed"} for name in unknown])
    if "status" in changes and changes["status"] not in _STATUSES:
        raise InvalidInput(f"unknown status {changes['status']!r}")
    if "title" in changes:
        changes["title"] = changes["title"][:255]
    with transaction.atomic():
        conversation_get_for_update(conversation_id=conversation.pk)
        Conversation.objects.filter(pk=conversation.pk).update(**changes, updated_at=timezone.now())
    return Conversation.objects.get(pk=conversation.pk)


def conversation_delete(*, conversation: Conversation, actor=None) -> None:
    """Delete a conversation and its messages, each message leaving through message_deleted (so every total
    that counted it, not only this conversation's, takes it out). A conversation with a run in progress is a
    409: that run's messages would have nowhere to go."""
    with transaction.atomic():
        conversation_get_for_update(conversation_id=conversation.pk)
        if conversation_is_busy(conversation_id=conversation.pk):
            raise Conflict("the conversation has a run in progress; cancel it or wait for it to finish")
        messages = list(Message.objects.filter(conversation_id=conversation.pk).order_by("sequence"))
        Message.objects.filter(conversation_id=conversation.pk).delete()
        for message in messages:
            _message_take_out(message, actor=actor)
        Conversation.objects.filter(pk=conversation.pk).delete()


def conversation_get_for_update(*, conversation_id) -> Conversation:
    """Lock the conversation row: writers of one conversation take turns."""
    try:
        return Conversation.objects.select_for_update().only("id", "owner_id").get(pk=conversation_id)
    except Conversation.DoesNotExist:
        raise NotFound("conversation not found") from None


# The totals a message moves (its own field → the conversation's).
_TOTALS = (("prompt_tokens", "prompt_tokens"), ("completion_tokens", "completion_tokens"),
           ("total_tokens", "total_tokens"), ("cost", "total_cost"))
def _conversation_message_add(*, conversation_id, values: dict, saved_at, owner_id=None,
                              message: Message | None = None) -> Conversation | None:
    """Count a new message (the next sequence, its figures) in one statement that also locks the row until the
    caller's transaction ends: so writers of one conversation take turns, sequences never clash, and the totals are
    exactly the sum over the messages (I1). Returns the row as it now is (its last_sequence is the new message's),
    or None when there is no such conversation (of `owner_id`). `message` (PostgreSQL): the new message, inserted
    with that sequence by the same statement (nothing when there is no such conversation)."""
    connection = connections[DEFAULT_DB_ALIAS]
    params = [values["prompt_tokens"], values["completion_tokens"], values["total_tokens"],
              *prepared_values(Conversation, _ADDED, (values["cost"], saved_at, conversation_id), connection), owner_id]
    statement = CONVERSATION_MESSAGE_ADD
    if message is not None:
        statement = CONVERSATION_MESSAGE_ADD_WITH_MESSAGE
        params += stored_values(message, MESSAGE_RIDING_COLUMNS, connection)
    return next(iter(Conversation.objects.raw(statement, params)), None)


def _conversation_message_take_out(*, message: Message) -> None:
    """Take a deleted message's figures out of its conversation's totals (the caller holds the row's lock)."""
    changed = Conversation.objects.filter(pk=message.conversation_id).update(
        message_count=F("message_count") - 1,
        **{column: F(column) - getattr(message, field) for field, column in _TOTALS})
    if changed != 1:
        raise NotFound("conversation not found")


def message_save(
    *,
    conversation_id=None,
    role: str,
    content: str,
    owner=None,
    execution=None,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    cached_prompt_tokens: int = 0,
    reasoning_tokens: int = 0,
    cost: Decimal = Decimal("0"),
    usage_estimated: bool = False,
    usage_raw: Any = None,
    provider_used: str = "",
    model_used: str = "",
    finish_reason: str = "",
    response_time_ms: int = 0,
    tool_calls: list | None = None,
    error_message: str = "",
    metadata: dict | None = None,
    actor=None,
    opening: Conversation | None = None,
    riding: list[tuple[str, list]] = (),
) -> Message:
    """The one path by which a message is stored, whatever kind of run or mode produced it: the conversation's
    row, locked, gives the sequence and takes the totals, then the message is inserted (on PostgreSQL by the same
    statement). With `owner`, a conversation of another user is a NotFound. `opening`, instead of
    `conversation_id`: a new conversation (not yet written) that this message opens; it is inserted already
    counting the message, as its first (on PostgreSQL by the message's statement). `riding`: INSERTs written with a
    new conversation and its message (core.db.statements_run: on PostgreSQL that one statement, which outside any
    transaction commits by itself; a run's row: workflows.services.runs.run_write). Inside a caller's transaction
    it takes no savepoint: if it fails, the caller's transaction fails with it. `message.conversation` is the
    conversation as this message left it."""
    if role not in _ROLES:
        raise InvalidInput(f"unknown message role {role!r}")
    if riding and opening is None:
        raise ValueError("statements ride only on a new conversation's write")
    saved_at = timezone.now()
    totals = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
              "total_tokens": prompt_tokens + completion_tokens, "cost": cost}
    message = Message(
        conversation_id=opening.pk if opening is not None else conversation_id,
        sequence=1,  # a new conversation's first; otherwise the conversation's row gives it
        role=role,
        content=content,
        execution=execution,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        cached_prompt_tokens=cached_prompt_tokens,
        reasoning_tokens=reasoning_tokens,
        cost=cost,
        usage_estimated=usage_estimated,
        usage_raw=usage_raw if usage_raw is not None else {},
        provider_used=provider_used,
        model_used=model_used,
        finish_reason=finish_reason,
        response_time_ms=response_time_ms,
        tool_calls=tool_calls or [],
        error_message=error_message,
        metadata=metadata or {},
        created_at=saved_at,
    )
    # With statements riding on it, on PostgreSQL outside any transaction, one statement that commits by itself;
    # message_saved is then sent after it (its receivers leave a run's messages to the run's end).
    with write_atomic(one_statement=True) if riding else transaction.atomic(savepoint=False):
        if opening is not None:  # inserted counting the message (one statement on PostgreSQL)
            conversation = opening
            for field, column in _TOTALS:
                setattr(conversation, column, totals[field])
            conversation.message_count, conversation.last_sequence, conversation.last_message_at = 1, 1, saved_at
            conversation_open_with_message(conversation, message, riding)
        else:
            rides = connection.vendor == "postgresql"  # the message rides on the conversation's UPDATE
            conversation = _conversation_message_add(
                conversation_id=conversation_id, saved_at=saved_at, owner_id=owner.pk if owner else None,
                values=totals, message=message if rides else None)
            if conversation is None:
                raise NotFound("conversation not found")
            message.sequence = conversation.last_sequence
            if rides:
                message._state.adding = False  # stored by the conversation's statement (Model._state is documented)
            else:
                message_insert(message)
        message.conversation = conversation  # as it now is: its owner and totals are known without another read
        message_saved.send(sender=Message, message=message, actor=actor)
    return message


def _message_take_out(message: Message, *, actor) -> None:
    _conversation_message_take_out(message=message)
    message_deleted.send(sender=Message, message=message, actor=actor)


def message_delete(*, message_id, actor=None) -> bool:
    """Delete one message and take it out of its conversation's totals. False if it was already gone."""
    with transaction.atomic():
        try:
            conversation_id = Message.objects.values_list("conversation_id", flat=True).get(pk=message_id)
        except Message.DoesNotExist:
            return False
        conversation_get_for_update(conversation_id=conversation_id)
        # Re-read under the lock: a concurrent delete of the same message must subtract it once.
        message = Message.objects.filter(pk=message_id).first()
        if message is None:
            return False
        message.delete()
        _message_take_out(message, actor=actor)
    return True


def message_cost_adjust(*, message_id, delta: Decimal) -> None:
    """Re-pricing: change a message's cost and its conversation's total by the same amount, under the lock."""
    with transaction.atomic():
        conversation_id = Message.objects.values_list("conversation_id", flat=True).get(pk=message_id)
        conversation_get_for_update(conversation_id=conversation_id)
        Message.objects.filter(pk=message_id).update(cost=F("cost") + delta)
        Conversation.objects.filter(pk=conversation_id).update(total_cost=F("total_cost") + delta)


def document_create(*, owner, title: str, content: str, metadata: dict | None = None, actor=None,
                    api_key=None) -> Document:
    """A document of `owner`'s; `document_created` tells the apps above (knowledge mirrors it, embedding it as
    `api_key` would: its limits and budgets hold) in the same transaction. `actor`: who made it (the owner by
    default)."""
    errors = [{"path": name, "code": "blank", "message": f"{name} may not be blank"}
              for name, value in (("title", title), ("content", content)) if not value.strip()]
    if len(content) > MAX_DOCUMENT_CHARS:
        errors.append({"path": "content", "code": "max_length", "message": f"at most {MAX_DOCUMENT_CHARS} characters"})
    if errors:
        raise InvalidInput("invalid document", details=errors)
    with transaction.atomic():
        document = Document.objects.create(owner=owner, title=title[:255], content=content, metadata=metadata or {})
        document_created.send(sender=Document, document=document, actor=actor or owner, api_key=api_key)
    return document


def document_delete(*, document: Document, actor=None) -> None:
    """A document; `document_deleting` first, in the same transaction (what the apps above keep of it may outlive
    it: knowledge's mirror, when another document has the same text)."""
    with transaction.atomic():
        document_deleting.send(sender=Document, document=document, actor=actor or document.owner)
        document.delete()
