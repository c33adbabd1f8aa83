"""Domain signals of conversations and the receivers that keep Conversation aggregates exact (I1).

Services send these inside their transaction; receivers change counters with F() in that same
transaction, so a committed conversation always equals the sum over its messages.
"""
from django.db.models import F
from django.dispatch import Signal, receiver

from conversations.models import Conversation

# sender=Message class; kwargs: message, actor
message_saved = Signal()
# sender=Message class; kwargs: message (already deleted, fields intact), actor
message_deleted = Signal()


def _apply(message, sign: int) -> None:
    changes = {
        "message_count": F("message_count") + sign,
        "prompt_tokens": F("prompt_tokens") + sign * message.prompt_tokens,
        "completion_tokens": F("completion_tokens") + sign * message.completion_tokens,
        "total_tokens": F("total_tokens") + sign * message.total_tokens,
        "total_cost": F("total_cost") + sign * message.cost,
    }
    if sign > 0:
        changes["last_message_at"] = message.created_at
    updated = Conversation.objects.filter(pk=message.conversation_id).update(**changes)
    if updated != 1:
        raise Conversation.DoesNotExist(f"conversation {message.conversation_id} vanished mid-write")


@receiver(message_saved, dispatch_uid="conversation_totals_add")
def conversation_totals_add(sender, message, **kwargs) -> None:
    _apply(message, +1)


@receiver(message_deleted, dispatch_uid="conversation_totals_subtract")
def conversation_totals_subtract(sender, message, **kwargs) -> None:
    _apply(message, -1)
