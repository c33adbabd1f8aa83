"""Writes of conversations: every message is saved and deleted here, so aggregates stay exact (I1)."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import F, Max
from django.utils import timezone

from chatter_project.errors import Conflict, InvalidInput, NotFound
from conversations.models import Conversation, Document, Message
from conversations.signals import message_deleted, message_saved

MAX_MESSAGE_CHARS = 100_000
MAX_DOCUMENT_CHARS = 500_000


def conversation_create(*, owner, title: str = "", metadata: dict | None = None,
                        status: str = Conversation.Status.ACTIVE) -> Conversation:
    if status not in Conversation.Status.values:
        raise InvalidInput(f"unknown status {status!r}")
    return Conversation.objects.create(owner=owner, title=title[:255], metadata=metadata or {}, status=status)


CONVERSATION_EDITABLE = ("title", "status", "metadata")


def conversation_update(*, conversation: Conversation, **changes) -> Conversation:
    """Title, status and metadata; the aggregates are the receivers' alone."""
    unknown = sorted(set(changes) - set(CONVERSATION_EDITABLE))
    if unknown:
        raise InvalidInput("these fields cannot be changed", details=[
            {"path": name, "code": "read_only", "message": f"{name} cannot be changed"} for name in unknown])
    if "status" in changes and changes["status"] not in Conversation.Status.values:
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
    from workflows.models import (
        WorkflowExecution,  # workflows depends on conversations, not the reverse
    )

    with transaction.atomic():
        conversation_get_for_update(conversation_id=conversation.pk)
        if WorkflowExecution.objects.filter(conversation_id=conversation.pk, status__in=(
                WorkflowExecution.Status.PENDING, WorkflowExecution.Status.RUNNING)).exists():
            raise Conflict("the conversation has a run in progress; cancel it or wait for it to finish")
        messages = list(Message.objects.filter(conversation_id=conversation.pk).order_by("sequence"))
        Message.objects.filter(conversation_id=conversation.pk).delete()
        for message in messages:
            message_deleted.send(sender=Message, message=message, actor=actor)
        Conversation.objects.filter(pk=conversation.pk).delete()


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
    """The one path by which a message is stored, whatever kind of run or mode produced it. Inside a caller's
    transaction it takes no savepoint: if it fails, the caller's transaction fails with it."""
    if role not in Message.Role.values:
        raise InvalidInput(f"unknown message role {role!r}")
    with transaction.atomic(savepoint=False):
        conversation = conversation_get_for_update(conversation_id=conversation_id)
        last = Message.objects.filter(conversation_id=conversation_id).aggregate(last=Max("sequence"))["last"]
        message = Message.objects.create(
            conversation=conversation,  # its owner is known to the receivers without another read
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
    errors = [{"path": name, "code": "blank", "message": f"{name} may not be blank"}
              for name, value in (("title", title), ("content", content)) if not value.strip()]
    if len(content) > MAX_DOCUMENT_CHARS:
        errors.append({"path": "content", "code": "max_length", "message": f"at most {MAX_DOCUMENT_CHARS} characters"})
    if errors:
        raise InvalidInput("invalid document", details=errors)
    return Document.objects.create(owner=owner, title=title[:255], content=content, metadata=metadata or {})


def document_delete(*, document: Document) -> None:
    document.delete()
