"""Conversations, messages and documents over the API. Money is rendered as strings (Decimal)."""
from __future__ import annotations

from rest_framework import serializers

from conversations.models import Conversation, Document, Message
from conversations.services import MAX_DOCUMENT_CHARS
from core.api.serializers import StrictFieldsMixin, StrictSerializer, moment, uuid_text
from core.money import usd


# Its declared fields say its shape (the schema); `conversation_body` renders it from the row's attributes as DRF
# renders those fields (tests/api/test_serializers_per_request.py), building no fields per conversation: every
# sync chat turn answers one.
class ConversationSerializer(serializers.Serializer):
    id = serializers.UUIDField(read_only=True)
    title = serializers.CharField(read_only=True)
    status = serializers.ChoiceField(choices=Conversation.Status.choices, read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)
    last_message_at = serializers.DateTimeField(allow_null=True, read_only=True)
    message_count = serializers.IntegerField(read_only=True)
    prompt_tokens = serializers.BigIntegerField(read_only=True)
    completion_tokens = serializers.BigIntegerField(read_only=True)
    total_tokens = serializers.BigIntegerField(read_only=True)
    total_cost = serializers.DecimalField(max_digits=20, decimal_places=8, read_only=True)
    metadata = serializers.JSONField(read_only=True)

    def to_representation(self, instance: Conversation) -> dict:
        return conversation_body(instance)


def conversation_body(conversation: Conversation) -> dict:
    c = conversation
    return {
        "id": str(c.id),
        "title": str(c.title),
        "status": str(c.status),
        "created_at": moment(c.created_at),
        "updated_at": moment(c.updated_at),
        "last_message_at": moment(c.last_message_at),
        "message_count": int(c.message_count),
        "prompt_tokens": int(c.prompt_tokens),
        "completion_tokens": int(c.completion_tokens),
        "total_tokens": int(c.total_tokens),
        "total_cost": usd(c.total_cost),
        "metadata": c.metadata,
    }


class ConversationWriteSerializer(StrictSerializer):
    title = serializers.CharField(required=False, allow_blank=True, max_length=255)
    status = serializers.ChoiceField(choices=Conversation.Status.choices, required=False)
    metadata = serializers.DictField(required=False)


class DocumentSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    metadata = serializers.DictField(required=False, default=dict)

    class Meta:
        model = Document
        fields = ("id", "title", "content", "metadata", "created_at")
        read_only_fields = ("id", "created_at")
        extra_kwargs = {"title": {"max_length": 255}, "content": {"max_length": MAX_DOCUMENT_CHARS}}


# Its declared fields say its shape (the schema); `message_body` renders it from the row's attributes as DRF
# renders those fields (tests/api/test_serializers_per_request.py), building no fields per message: every
# sync chat turn answers two.
class MessageSerializer(serializers.Serializer):
    id = serializers.UUIDField(read_only=True)
    conversation = serializers.UUIDField(source="conversation_id", read_only=True)
    sequence = serializers.IntegerField(read_only=True)
    role = serializers.ChoiceField(choices=Message.Role.choices, read_only=True)
    content = serializers.CharField(read_only=True, style={"base_template": "textarea.html"})
    execution = serializers.UUIDField(source="execution_id", allow_null=True, read_only=True)
    prompt_tokens = serializers.BigIntegerField(read_only=True)
    completion_tokens = serializers.BigIntegerField(read_only=True)
    total_tokens = serializers.BigIntegerField(read_only=True)
    cached_prompt_tokens = serializers.BigIntegerField(read_only=True)
    reasoning_tokens = serializers.BigIntegerField(read_only=True)
    cost = serializers.DecimalField(max_digits=20, decimal_places=8, read_only=True)
    provider_used = serializers.CharField(read_only=True)
    model_used = serializers.CharField(read_only=True)
    finish_reason = serializers.CharField(read_only=True)
    response_time_ms = serializers.IntegerField(read_only=True)
    usage_estimated = serializers.BooleanField(read_only=True)
    usage_raw = serializers.JSONField(read_only=True)
    tool_calls = serializers.JSONField(read_only=True)
    error_message = serializers.CharField(read_only=True, style={"base_template": "textarea.html"})
    metadata = serializers.JSONField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)

    def to_representation(self, instance: Message) -> dict:
        return message_body(instance)


def message_body(message: Message) -> dict:
    m = message
    return {
        "id": str(m.id),
        "conversation": str(m.conversation_id),
        "sequence": int(m.sequence),
        "role": str(m.role),
        "content": str(m.content),
        "execution": uuid_text(m.execution_id),
        "prompt_tokens": int(m.prompt_tokens),
        "completion_tokens": int(m.completion_tokens),
        "total_tokens": int(m.total_tokens),
        "cached_prompt_tokens": int(m.cached_prompt_tokens),
        "reasoning_tokens": int(m.reasoning_tokens),
        "cost": usd(m.cost),
        "provider_used": str(m.provider_used),
        "model_used": str(m.model_used),
        "finish_reason": str(m.finish_reason),
        "response_time_ms": int(m.response_time_ms),
        "usage_estimated": bool(m.usage_estimated),
        "usage_raw": m.usage_raw,
        "tool_calls": m.tool_calls,
        "error_message": str(m.error_message),
        "metadata": m.metadata,
        "created_at": moment(m.created_at),
    }
