"""Conversations, messages and chat turns over the API. Money is rendered as strings (Decimal)."""
from __future__ import annotations

from rest_framework import serializers

from chatter_project.api.serializers import StrictFieldsMixin, StrictSerializer
from conversations.models import Conversation, Document, Message
from conversations.services import MAX_DOCUMENT_CHARS, MAX_MESSAGE_CHARS
from workflows.engine.config import config_errors


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


# The chat fields that become the run's config (same names as the config keys, SPEC §7).
CHAT_CONFIG_FIELDS = (
    "provider", "model", "temperature", "max_tokens", "system_prompt", "enable_memory", "memory_window",
    "enable_tools", "allowed_tools", "max_tool_calls", "enable_retrieval",
)


def config_key(name: str):
    """A field validator running the engine's one config validator on one key (ranges, choices, tools)."""

    def validate(value) -> None:
        errors = config_errors({name: value})
        if errors:
            raise serializers.ValidationError([error["message"] for error in errors])

    return validate


class ChatSerializer(StrictSerializer):
    """POST /chat/. The config fields are validated like any run config, and reported per field."""

    message = serializers.CharField(max_length=MAX_MESSAGE_CHARS, trim_whitespace=False)
    conversation_id = serializers.UUIDField(required=False, allow_null=True)
    template = serializers.CharField(required=False, allow_null=True, max_length=100,
                                     help_text="template key or id; default universal_chat")
    definition_id = serializers.UUIDField(required=False, allow_null=True)
    provider = serializers.CharField(required=False, validators=[config_key("provider")])
    model = serializers.CharField(required=False, validators=[config_key("model")])
    temperature = serializers.FloatField(required=False, allow_null=True, validators=[config_key("temperature")])
    max_tokens = serializers.IntegerField(required=False, allow_null=True, validators=[config_key("max_tokens")])
    system_prompt = serializers.CharField(required=False, allow_null=True, allow_blank=True, trim_whitespace=False,
                                          validators=[config_key("system_prompt")])
    enable_memory = serializers.BooleanField(required=False)
    memory_window = serializers.IntegerField(required=False, validators=[config_key("memory_window")])
    enable_tools = serializers.BooleanField(required=False)
    allowed_tools = serializers.ListField(child=serializers.CharField(), required=False,
                                          validators=[config_key("allowed_tools")])
    max_tool_calls = serializers.IntegerField(required=False, validators=[config_key("max_tool_calls")])
    enable_retrieval = serializers.BooleanField(required=False)
    stream = serializers.BooleanField(default=False)
    background = serializers.BooleanField(default=False)

    def validate_message(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("This field may not be blank.", code="blank")
        return value

    def validate(self, attrs: dict) -> dict:
        if attrs.get("template") is not None and attrs.get("definition_id") is not None:
            raise serializers.ValidationError({"definition_id": ["give template or definition_id, not both"]})
        if attrs.get("stream") and attrs.get("background"):
            raise serializers.ValidationError({"background": ["a run is streamed or in the background, not both"]})
        config = {name: attrs.pop(name) for name in CHAT_CONFIG_FIELDS if name in attrs}
        return {**attrs, "config": config}
