"""The embeddings, legacy completions and Responses API requests, validated like every request (unknown fields
refused, a 400 naming them); the last two are then read as the chat completion request they are
(gateway.chat_request, which validates that)."""
from __future__ import annotations

from rest_framework import serializers

from conversations.services import MAX_MESSAGE_CHARS
from core.api.serializers import StrictSerializer
from gateway.chat_request import REASONING_EFFORTS, SERVICE_TIERS, chat_request_validated, function_errors


class StringField(serializers.CharField):
    """Text as sent: a number or a boolean is refused, not turned into text (OpenAI's `arguments` is a string)."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """A JSON boolean, as OpenAI takes one: "true", 1 or "yes" is refused, naming the field, not read as true."""

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class StrictIntegerField(serializers.IntegerField):
    """A JSON number, as OpenAI takes one: "5" (a text) or true is refused, naming the field."""

    def to_internal_value(self, data):
        if isinstance(data, (str, bool)):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictFloatField(serializers.FloatField):
    """A JSON number, as OpenAI takes one: "0.5" (a text) or true is refused, naming the field."""

    def to_internal_value(self, data):
        if isinstance(data, (str, bool)):
            self.fail("invalid")
        return super().to_internal_value(data)


class EmbeddingsSerializer(StrictSerializer):
    """OpenAI's embeddings request: a text, a list of texts, or token arrays (for a server that reads them)."""

    model = serializers.CharField(max_length=255, trim_whitespace=False)  # (gateway_model reads it)
    input = serializers.JSONField(help_text="a text, a list of texts, a token array or a list of token arrays")
    encoding_format = serializers.ChoiceField(choices=("float", "base64"), default="float")
    dimensions = StrictIntegerField(required=False, allow_null=True, min_value=1, max_value=8192)
    user = serializers.CharField(required=False, allow_null=True, max_length=256)

    def validate_input(self, value):
        """The inputs, as a list (a text or one token array is a list of one)."""
        if isinstance(value, str) or (isinstance(value, list) and value and all(_token(t) for t in value)):
            value = [value]
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_EMBEDDING_INPUTS:
            raise serializers.ValidationError(f"a text, or a list of 1 to {MAX_EMBEDDING_INPUTS} texts")
        for item in value:
            if isinstance(item, str):
                if not item or len(item) > MAX_MESSAGE_CHARS:
                    raise serializers.ValidationError(f"each text has 1 to {MAX_MESSAGE_CHARS} characters")
            elif not (isinstance(item, list) and item and all(_token(t) for t in item)):
                raise serializers.ValidationError("each input is a text or a token array (integers)")
        return value


MAX_EMBEDDING_INPUTS = 2048


def _token(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class CompletionSerializer(StrictSerializer):
    """OpenAI's legacy completions request: one prompt, read as a chat completion of one user message."""

    model = serializers.CharField(max_length=255, trim_whitespace=False)  # (gateway_model reads it)
    prompt = serializers.JSONField(help_text="a text (or a list of one text)")
    stream = StrictBooleanField(default=False)
    stream_options = serializers.DictField(required=False, allow_null=True)
    max_tokens = StrictIntegerField(required=False, allow_null=True, min_value=1, max_value=200_000)
    temperature = StrictFloatField(required=False, allow_null=True, min_value=0, max_value=2)
    top_p = StrictFloatField(required=False, allow_null=True, min_value=0, max_value=1)
    n = StrictIntegerField(required=False, allow_null=True, min_value=1, max_value=128)
    stop = serializers.JSONField(required=False, allow_null=True)
    seed = StrictIntegerField(required=False, allow_null=True)
    user = serializers.CharField(required=False, allow_null=True, max_length=256)
    presence_penalty = StrictFloatField(required=False, allow_null=True, min_value=-2, max_value=2)
    frequency_penalty = StrictFloatField(required=False, allow_null=True, min_value=-2, max_value=2)
    logit_bias = serializers.DictField(child=StrictIntegerField(min_value=-100, max_value=100), required=False,
                                       allow_null=True)
    logprobs = StrictIntegerField(required=False, allow_null=True, min_value=0, max_value=5)
    echo = StrictBooleanField(default=False)
    best_of = StrictIntegerField(required=False, allow_null=True, min_value=1, max_value=1,
                                       help_text="only 1: a chat model has no server-side best-of")
    suffix = serializers.CharField(required=False, allow_null=True, allow_blank=True,
                                   help_text="refused: a chat model does not insert text")

    def validate_prompt(self, value):
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if not isinstance(value, str) or len(value) > MAX_MESSAGE_CHARS:
            raise serializers.ValidationError(
                f"one prompt, a text of at most {MAX_MESSAGE_CHARS} characters (send several prompts as several calls)")
        return value

    def validate_suffix(self, value):
        if value:
            raise serializers.ValidationError("a chat model cannot insert text before a suffix")
        return value

    def as_chat(self) -> dict:
        """The chat completion request this is (validated as any other: gateway.chat_request)."""
        data = dict(self.validated_data)
        logprobs = data.pop("logprobs", None)
        for name in ("prompt", "echo", "best_of", "suffix"):
            data.pop(name, None)
        chat = {key: value for key, value in data.items() if value is not None}
        if logprobs is not None:
            chat.update(logprobs=True, top_logprobs=logprobs)
        return chat_request_validated({**chat, "messages": [{"role": "user", "content": self.validated_data["prompt"]}]})


class ResponsesSerializer(StrictSerializer):
    """OpenAI's Responses API request, for text and function tools: its `input` items read as chat messages (see
    gateway.responses.response_chat_request); the hosted tools (web search, file search, …) are refused, naming them."""

    model = serializers.CharField(max_length=255, trim_whitespace=False)  # (gateway_model reads it)
    input = serializers.JSONField(help_text="a text, or a list of input items (messages, function calls and outputs)")
    instructions = serializers.CharField(required=False, allow_null=True, allow_blank=True,
                                         max_length=MAX_MESSAGE_CHARS)
    previous_response_id = serializers.CharField(required=False, allow_null=True, max_length=64)
    tools = serializers.ListField(child=serializers.DictField(), required=False, allow_null=True, max_length=128)
    tool_choice = serializers.JSONField(required=False, allow_null=True)
    parallel_tool_calls = StrictBooleanField(required=False, allow_null=True)
    max_output_tokens = StrictIntegerField(required=False, allow_null=True, min_value=1, max_value=200_000)
    temperature = StrictFloatField(required=False, allow_null=True, min_value=0, max_value=2)
    top_p = StrictFloatField(required=False, allow_null=True, min_value=0, max_value=1)
    stream = StrictBooleanField(default=False)
    stream_options = serializers.DictField(child=StrictBooleanField(), required=False, allow_null=True,
                                           help_text="include_obfuscation: accepted and ignored")
    text = serializers.DictField(required=False, allow_null=True)
    reasoning = serializers.DictField(required=False, allow_null=True)
    user = serializers.CharField(required=False, allow_null=True, max_length=256)
    # What only OpenAI's hosted service means: accepted, named in X-Chatter-Ignored (every response is kept: a run).
    store = StrictBooleanField(required=False, allow_null=True)
    metadata = serializers.DictField(child=serializers.CharField(max_length=512, allow_blank=True), required=False,
                                     allow_null=True)
    service_tier = serializers.ChoiceField(choices=SERVICE_TIERS, required=False, allow_null=True)
    truncation = serializers.ChoiceField(choices=("disabled",), required=False, allow_null=True)
    include = serializers.ListField(child=serializers.CharField(max_length=100), required=False, allow_null=True)

    def validate_input(self, value):
        if value == [] or value is None:
            raise serializers.ValidationError("a text, or at least one input item")
        return value

    def validate_stream_options(self, value):
        if set(value or {}) - {"include_obfuscation"}:
            raise serializers.ValidationError("include_obfuscation (a boolean)")
        return value

    def validate_tools(self, value):
        for index, tool in enumerate(value or []):
            if tool.get("type") != "function":
                raise serializers.ValidationError({index: {"type": [
                    "only function tools ({type: function, name, parameters}): hosted tools are OpenAI's"]}})
            if errors := function_errors(tool):
                raise serializers.ValidationError({index: errors})
        return value

    def validate_tool_choice(self, value):
        if value is None or value in ("none", "auto", "required") or (
                isinstance(value, dict) and value.get("type") == "function" and isinstance(value.get("name"), str)):
            return value
        raise serializers.ValidationError('none, auto, required, or {"type": "function", "name"}')

    def validate_text(self, value):
        kind = ((value or {}).get("format") or {}).get("type", "text")
        if set(value or {}) - {"format", "verbosity"} or kind not in ("text", "json_object", "json_schema"):
            raise serializers.ValidationError('{"format": {"type": "text" | "json_object" | "json_schema", …}}')
        return value

    def validate_reasoning(self, value):
        if set(value or {}) - {"effort", "summary"} or (value or {}).get("effort") not in (None, *REASONING_EFFORTS):
            raise serializers.ValidationError('{"effort": "low" | "medium" | "high" | …}')
        return value
