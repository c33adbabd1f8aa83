"""Conversations, messages and documents over the API. Money is rendered as strings (Decimal)."""
from __future__ import annotations

from rest_framework import serializers

from conversations.models import Conversation, Document, Message
from conversations.services import MAX_DOCUMENT_CHARS
from core.api.serializers import StrictFieldsMixin, StrictSerializer


class ConversationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Conversation
        fields = (
            "id", "title", "status", "created_at", "updated_at", "last_message_at",
            "message_count", "prompt_tokens", "completion_tokens", "total_tokens", "total_cost", "metadata",
        )
        read_only_fields = fields


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


class MessageSerializer(serializers.ModelSerializer):
    class Meta:
        model = Message
        fields = (
            "id", "conversation", "sequence", "role", "content", "execution",
            "prompt_tokens", "completion_tokens", "total_tokens", "cached_prompt_tokens", "reasoning_tokens",
            "cost", "provider_used", "model_used", "finish_reason", "response_time_ms", "usage_estimated",
            "usage_raw", "tool_calls", "error_message", "metadata", "created_at",
        )
        read_only_fields = fields

