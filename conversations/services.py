"""Writes of conversations: every message is saved and deleted here, so aggregates stay exact (I1)."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import F, Max

from chatter_project.errors import InvalidInput, NotFound
from conversations.models import Conversation, Document, Message
from conversations.signals import message_deleted, message_saved

MAX_MESSAGE_CHARS = 100_000


def conversation_create(*, owner, title: str = "", metadata: dict | None = None) -> Conversation:
    return Conversation.objects.create(owner=owner, title=title[:255], metadata=metadata or {})


def conversation_get_for_update(*, conversation_id) -> Conversation:
    """Lock the conversation row: writers of one conversation take turns, so sequences never clash."""
    try:
        return Conversation.objects.select_for_update().only("id", "owner_id").get(pk=conversation_id)
    except Conversation.DoesNotExist:
        raise NotFound("conversation not found") from None


def message_save(
    *,
    conversation_id,
    role: str,
    content: str,
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
) -> Message:
    """The one path by which a message is stored, whatever kind of run or mode produced it."""
    if role not in Message.Role.values:
        raise InvalidInput(f"unknown message role {role!r}")
    with transaction.atomic():
        conversation_get_for_update(conversation_id=conversation_id)
        last = Message.objects.filter(conversation_id=conversation_id).aggregate(last=Max("sequence"))["last"]
        message = Message.objects.create(
            conversation_id=conversation_id,
            sequence=(last or 0) + 1,
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
        )
        message_saved.send(sender=Message, message=message, actor=actor)
    return message


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
        message_deleted.send(sender=Message, message=message, actor=actor)
    return True


def message_cost_adjust(*, message_id, delta: Decimal) -> None:
    """Re-pricing: change a message's cost and its conversation's total by the same amount, under the lock."""
    with transaction.atomic():
        conversation_id = Message.objects.values_list("conversation_id", flat=True).get(pk=message_id)
        conversation_get_for_update(conversation_id=conversation_id)
        Message.objects.filter(pk=message_id).update(cost=F("cost") + delta)
        Conversation.objects.filter(pk=conversation_id).update(total_cost=F("total_cost") + delta)


def document_create(*, owner, title: str, content: str, metadata: dict | None = None) -> Document:
    if not title.strip() or not content.strip():
        raise InvalidInput("a document needs a title and content")
    return Document.objects.create(owner=owner, title=title[:255], content=content, metadata=metadata or {})
