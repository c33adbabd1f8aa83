"""The chat completion request, validated like every request (unknown fields refused, a 400 naming them)."""
from __future__ import annotations

from rest_framework import serializers

from chatter_project.api.serializers import StrictFieldsMixin, StrictSerializer
from conversations.services import MAX_MESSAGE_CHARS

MAX_MESSAGES = 1000
ROLES = ("system", "developer", "user", "assistant", "tool")


class StringField(serializers.CharField):
    """Text as sent: a number or a boolean is refused, not turned into text (OpenAI's `arguments` is a string)."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class ChatFunctionCallSerializer(StrictFieldsMixin, serializers.Serializer):
    name = StringField(max_length=64)
    # As the model wrote it, valid JSON or not (OpenAI hands it over either way; a client sends it back).
    arguments = StringField(allow_blank=True, trim_whitespace=False, max_length=MAX_MESSAGE_CHARS)


class ChatToolCallSerializer(StrictFieldsMixin, serializers.Serializer):
    id = StringField(max_length=128)
    type = serializers.ChoiceField(choices=["function"], default="function")
    function = ChatFunctionCallSerializer()
    index = serializers.IntegerField(required=False, min_value=0, help_text="ignored (a streamed call's position)")


class ChatMessageSerializer(StrictFieldsMixin, serializers.Serializer):
    role = serializers.ChoiceField(choices=ROLES)
    content = serializers.JSONField(required=False, allow_null=True, help_text="text, or a list of text parts")
    name = serializers.CharField(required=False, max_length=64)
    tool_calls = serializers.ListField(child=ChatToolCallSerializer(), required=False, max_length=128)
    tool_call_id = serializers.CharField(required=False, max_length=128)
    refusal = serializers.CharField(required=False, allow_null=True)

    def validate_content(self, value):
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, list) and all(
                isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
                for part in value):
            return value
        raise serializers.ValidationError("content must be text or a list of text parts ({type: text, text})")

    def validate(self, attrs: dict) -> dict:
        content = attrs.get("content")
        size = len(content) if isinstance(content, str) else sum(len(p["text"]) for p in content or [])
        if size > MAX_MESSAGE_CHARS:
            raise serializers.ValidationError({"content": [f"at most {MAX_MESSAGE_CHARS} characters"]})
        if content is None and not (attrs["role"] == "assistant" and attrs.get("tool_calls")):
            raise serializers.ValidationError({"content": ["required, unless an assistant message has tool_calls"]})
        if attrs["role"] == "tool" and not attrs.get("tool_call_id"):
            raise serializers.ValidationError({"tool_call_id": ["a tool message needs tool_call_id"]})
        if attrs.get("tool_calls") and attrs["role"] != "assistant":
            raise serializers.ValidationError({"tool_calls": ["only an assistant message has tool_calls"]})
        ids = [call["id"] for call in attrs.get("tool_calls") or []]
        if len(set(ids)) != len(ids):
            raise serializers.ValidationError({"tool_calls": ["each tool call needs an id of its own"]})
        for call in attrs.get("tool_calls") or []:
            call.pop("index", None)
        attrs.pop("refusal", None)
        return {name: value for name, value in attrs.items() if value is not None or name == "content"}


class ChatCompletionSerializer(StrictSerializer):
    model = serializers.CharField(max_length=255)
    messages = serializers.ListField(child=ChatMessageSerializer(), allow_empty=False, max_length=MAX_MESSAGES)
    stream = serializers.BooleanField(default=False)
    stream_options = serializers.DictField(required=False, allow_null=True)
    tools = serializers.ListField(child=serializers.DictField(), required=False, allow_null=True, max_length=128)
    tool_choice = serializers.JSONField(required=False, allow_null=True)
    temperature = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=2)
    max_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=200_000)
    max_completion_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=200_000)
    top_p = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=1)
    presence_penalty = serializers.FloatField(required=False, allow_null=True, min_value=-2, max_value=2)
    frequency_penalty = serializers.FloatField(required=False, allow_null=True, min_value=-2, max_value=2)
    seed = serializers.IntegerField(required=False, allow_null=True)
    stop = serializers.JSONField(required=False, allow_null=True)
    user = serializers.CharField(required=False, allow_null=True, max_length=256)
    n = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=1)
    response_format = serializers.DictField(required=False, allow_null=True)
    parallel_tool_calls = serializers.BooleanField(required=False, allow_null=True)

    def validate_messages(self, value):
        """As OpenAI has it: the tool calls of an assistant message are answered, each, by the tool messages that
        follow it, and a tool message answers one of them."""
        unanswered: dict[str, int] = {}  # tool call id → the index of its assistant message
        for index, message in enumerate(value):
            if message["role"] == "tool":
                if unanswered.pop(message["tool_call_id"], None) is None:
                    raise serializers.ValidationError({index: {"tool_call_id": [
                        "matches no unanswered tool call of the assistant message before it"]}})
                continue
            self._all_answered(unanswered)
            unanswered = {call["id"]: index for call in message.get("tool_calls") or []}
        self._all_answered(unanswered)
        return value

    @staticmethod
    def _all_answered(unanswered: dict[str, int]) -> None:
        if unanswered:
            call_id, index = next(iter(unanswered.items()))
            raise serializers.ValidationError({index: {"tool_calls": [
                f"tool call {call_id!r} has no tool message answering it (tool_call_id) right after"]}})

    def validate_tools(self, value):
        for tool in value or []:
            function = tool.get("function")
            if tool.get("type") != "function" or not isinstance(function, dict) or not isinstance(
                    function.get("name"), str):
                raise serializers.ValidationError("each tool must be {type: function, function: {name, …}}")
        return value

    def validate_tool_choice(self, value):
        if value is None or value in ("none", "auto", "required") or (
                isinstance(value, dict) and value.get("type") == "function"):
            return value
        raise serializers.ValidationError('none, auto, required, or {"type": "function", "function": {"name"}}')

    def validate_stop(self, value):
        if value is None or isinstance(value, str) or (
                isinstance(value, list) and len(value) <= 4 and all(isinstance(v, str) for v in value)):
            return value
        raise serializers.ValidationError("a string or up to 4 strings")

    def validate_stream_options(self, value):
        unknown = set(value or {}) - {"include_usage"}
        if unknown or not isinstance((value or {}).get("include_usage", False), bool):
            raise serializers.ValidationError("only include_usage (a boolean)")
        return value
