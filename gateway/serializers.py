"""The chat completion request, validated like every request (unknown fields refused, a 400 naming them).

Every parameter of OpenAI's chat completions API is read here into one of three kinds (gateway.services decides
what each does): passed through to the upstream, accepted and ignored (what only OpenAI's hosted service means),
or refused with a 400 naming it (what this gateway cannot honour: audio output). The legacy `functions` /
`function_call` (and `function` messages) are read as the tools they became."""
from __future__ import annotations

from rest_framework import serializers

from conversations.services import MAX_MESSAGE_CHARS
from core.api.serializers import StrictFieldsMixin, StrictSerializer

MAX_MESSAGES = 1000
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
# Content parts a message may carry besides text, passed through to a provider that takes them.
MEDIA_PARTS = {"image_url": "url", "input_audio": "data", "file": None}
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority")


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


def _function_errors(function: dict) -> dict:
    """What is wrong with a function tool's definition, by field, as OpenAI checks it: its name a text, its
    description a text, its parameters a JSON Schema object, `strict` a boolean."""
    errors = {}
    if not isinstance(function.get("name"), str):
        errors["name"] = ["a text"]
    if function.get("description") is not None and not isinstance(function["description"], str):
        errors["description"] = ["a text"]
    if function.get("parameters") is not None and not isinstance(function["parameters"], dict):
        errors["parameters"] = ["a JSON Schema object"]
    if function.get("strict") is not None and not isinstance(function["strict"], bool):
        errors["strict"] = ["a boolean"]
    return errors


class ChatFunctionCallSerializer(StrictFieldsMixin, serializers.Serializer):
    name = StringField(max_length=64)
    # As the model wrote it, valid JSON or not (OpenAI hands it over either way; a client sends it back).
    arguments = StringField(allow_blank=True, trim_whitespace=False, max_length=MAX_MESSAGE_CHARS)


class ChatToolCallSerializer(StrictFieldsMixin, serializers.Serializer):
    id = StringField(max_length=128)
    type = serializers.ChoiceField(choices=["function"], default="function")
    function = ChatFunctionCallSerializer()
    index = StrictIntegerField(required=False, min_value=0, help_text="ignored (a streamed call's position)")


def _part_ok(part) -> bool:
    """A content part as OpenAI has them: text, or an image, audio or file part with its object."""
    if not isinstance(part, dict):
        return False
    kind = part.get("type")
    if kind == "text":
        return isinstance(part.get("text"), str)
    if kind not in MEDIA_PARTS or not isinstance(part.get(kind), dict):
        return False
    required = MEDIA_PARTS[kind]
    return required is None or isinstance(part[kind].get(required), str)


def media_parts(content) -> list[str]:
    """The kinds of the non-text parts of a message's content."""
    return [part["type"] for part in content if part["type"] != "text"] if isinstance(content, list) else []


class ChatMessageSerializer(StrictFieldsMixin, serializers.Serializer):
    role = serializers.ChoiceField(choices=ROLES)
    content = serializers.JSONField(required=False, allow_null=True,
                                    help_text="text, or a list of parts: text, image_url, input_audio, file")
    name = serializers.CharField(required=False, max_length=64)
    tool_calls = serializers.ListField(child=ChatToolCallSerializer(), required=False, max_length=128)
    tool_call_id = serializers.CharField(required=False, max_length=128)
    function_call = ChatFunctionCallSerializer(required=False, allow_null=True, help_text="legacy: a tool call")
    refusal = serializers.CharField(required=False, allow_null=True)

    def validate_content(self, value):
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, list) and all(_part_ok(part) for part in value):
            return value
        raise serializers.ValidationError(
            "content must be text or a list of parts ({type: text, text}, {type: image_url, image_url: {url}}, "
            "{type: input_audio, input_audio: {data, format}}, {type: file, file: {…}})")

    def validate(self, attrs: dict) -> dict:
        if attrs.get("function_call"):  # legacy: the one tool call of an assistant message
            if attrs.get("tool_calls") or attrs["role"] != "assistant":
                raise serializers.ValidationError({"function_call": ["only on an assistant message without tool_calls"]})
            attrs["tool_calls"] = [{"id": "", "type": "function", "function": attrs.pop("function_call")}]
        attrs.pop("function_call", None)
        if attrs["role"] == "function" and not attrs.get("name"):
            raise serializers.ValidationError({"name": ["a function message names its function"]})
        if media_parts(attrs.get("content")) and attrs["role"] != "user":
            raise serializers.ValidationError({"content": ["only a user message has image, audio or file parts"]})
        content = attrs.get("content")
        size = len(content) if isinstance(content, str) else sum(len(p.get("text", "")) for p in content or [])
        if size > MAX_MESSAGE_CHARS:
            raise serializers.ValidationError({"content": [f"at most {MAX_MESSAGE_CHARS} characters"]})
        if content is None and not (attrs["role"] == "assistant" and attrs.get("tool_calls")):
            raise serializers.ValidationError({"content": ["required, unless an assistant message has tool_calls"]})
        if attrs["role"] == "tool" and not attrs.get("tool_call_id"):
            raise serializers.ValidationError({"tool_call_id": ["a tool message needs tool_call_id"]})
        if attrs.get("tool_calls") and attrs["role"] != "assistant":
            raise serializers.ValidationError({"tool_calls": ["only an assistant message has tool_calls"]})
        ids = [call["id"] for call in attrs.get("tool_calls") or [] if call["id"]]
        if len(set(ids)) != len(ids):
            raise serializers.ValidationError({"tool_calls": ["each tool call needs an id of its own"]})
        for call in attrs.get("tool_calls") or []:
            call.pop("index", None)
        attrs.pop("refusal", None)
        return {name: value for name, value in attrs.items() if value is not None or name == "content"}


class ChatCompletionSerializer(StrictSerializer):
    model = serializers.CharField(max_length=255)
    messages = serializers.ListField(child=ChatMessageSerializer(), allow_empty=False, max_length=MAX_MESSAGES)
    stream = StrictBooleanField(default=False)
    stream_options = serializers.DictField(required=False, allow_null=True)
    tools = serializers.ListField(child=serializers.DictField(), required=False, allow_null=True, max_length=128)
    tool_choice = serializers.JSONField(required=False, allow_null=True)
    functions = serializers.ListField(child=serializers.DictField(), required=False, allow_null=True, max_length=128,
                                      help_text="legacy: tools")
    function_call = serializers.JSONField(required=False, allow_null=True, help_text="legacy: tool_choice")
    temperature = StrictFloatField(required=False, allow_null=True, min_value=0, max_value=2)
    max_tokens = StrictIntegerField(required=False, allow_null=True, min_value=1, max_value=200_000)
    max_completion_tokens = StrictIntegerField(required=False, allow_null=True, min_value=1, max_value=200_000)
    top_p = StrictFloatField(required=False, allow_null=True, min_value=0, max_value=1)
    presence_penalty = StrictFloatField(required=False, allow_null=True, min_value=-2, max_value=2)
    frequency_penalty = StrictFloatField(required=False, allow_null=True, min_value=-2, max_value=2)
    seed = StrictIntegerField(required=False, allow_null=True)
    stop = serializers.JSONField(required=False, allow_null=True)
    user = serializers.CharField(required=False, allow_null=True, max_length=256)
    n = StrictIntegerField(required=False, allow_null=True, min_value=1, max_value=128)
    response_format = serializers.DictField(required=False, allow_null=True)
    parallel_tool_calls = StrictBooleanField(required=False, allow_null=True)
    logprobs = StrictBooleanField(required=False, allow_null=True)
    top_logprobs = StrictIntegerField(required=False, allow_null=True, min_value=0, max_value=20)
    logit_bias = serializers.DictField(child=StrictIntegerField(min_value=-100, max_value=100), required=False,
                                       allow_null=True)
    reasoning_effort = serializers.ChoiceField(choices=REASONING_EFFORTS, required=False, allow_null=True)
    verbosity = serializers.ChoiceField(choices=("low", "medium", "high"), required=False, allow_null=True)
    prediction = serializers.DictField(required=False, allow_null=True)
    modalities = serializers.ListField(child=serializers.ChoiceField(choices=("text", "audio")), required=False,
                                       allow_null=True)
    audio = serializers.DictField(required=False, allow_null=True, help_text="refused: no audio output here")
    # What only OpenAI's hosted service means: accepted, not sent on, named in the X-Chatter-Ignored header.
    store = StrictBooleanField(required=False, allow_null=True)
    metadata = serializers.DictField(child=serializers.CharField(max_length=512, allow_blank=True), required=False,
                                     allow_null=True)
    service_tier = serializers.ChoiceField(choices=SERVICE_TIERS, required=False, allow_null=True)
    safety_identifier = serializers.CharField(required=False, allow_null=True, max_length=256)
    prompt_cache_key = serializers.CharField(required=False, allow_null=True, max_length=256)
    prompt_cache_retention = serializers.CharField(required=False, allow_null=True, max_length=32)
    prompt_cache_options = serializers.DictField(required=False, allow_null=True)
    moderation = serializers.JSONField(required=False, allow_null=True)

    def validate_messages(self, value):
        """As OpenAI has it: the tool calls of an assistant message are answered, each, by the tool messages that
        follow it, and a tool message answers one of them."""
        _legacy_function_messages(value)
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
        for index, tool in enumerate(value or []):
            function = tool.get("function")
            if tool.get("type") != "function" or not isinstance(function, dict):
                raise serializers.ValidationError("each tool must be {type: function, function: {name, …}}")
            if errors := _function_errors(function):
                raise serializers.ValidationError({index: {"function": errors}})
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
        unknown = set(value or {}) - {"include_usage", "include_obfuscation"}
        if unknown or not all(isinstance(flag, bool) for flag in (value or {}).values()):
            raise serializers.ValidationError("include_usage and include_obfuscation (booleans)")
        return value

    def validate_logit_bias(self, value):
        if any(not token.isdigit() for token in value or {}):
            raise serializers.ValidationError("keys are token ids (digits)")
        return value

    def validate_prediction(self, value):
        if value is not None and (value.get("type") != "content" or not isinstance(value.get("content"), (str, list))):
            raise serializers.ValidationError('{"type": "content", "content": text or text parts}')
        return value

    def validate_modalities(self, value):
        if value and "audio" in value:
            raise serializers.ValidationError("audio output cannot be relayed by this gateway: ask for [\"text\"]")
        return value

    def validate_audio(self, value):
        if value is not None:
            raise serializers.ValidationError("audio output cannot be relayed by this gateway")
        return value

    def validate(self, attrs: dict) -> dict:
        """The legacy `functions` / `function_call` as the tools / tool_choice they became (`legacy_functions`
        says to answer in their shape too); `top_logprobs` needs `logprobs`, as OpenAI has it."""
        if attrs.get("top_logprobs") and not attrs.get("logprobs"):
            raise serializers.ValidationError({"top_logprobs": ["needs logprobs: true"]})
        if attrs.get("functions") is not None or attrs.get("function_call") is not None:
            if attrs.get("tools") is not None or attrs.get("tool_choice") is not None:
                raise serializers.ValidationError({"functions": ["give tools or the legacy functions, not both"]})
            attrs["tools"] = [{"type": "function", "function": function} for function in attrs.get("functions") or []]
            attrs["tool_choice"] = _tool_choice_of(attrs.get("function_call"))
            self.validate_tools(attrs["tools"])
            attrs["legacy_functions"] = True
        attrs.pop("functions", None)
        attrs.pop("function_call", None)
        return attrs


def _tool_choice_of(function_call):
    if function_call is None or function_call in ("none", "auto"):
        return function_call
    if isinstance(function_call, dict) and isinstance(function_call.get("name"), str):
        return {"type": "function", "function": {"name": function_call["name"]}}
    raise serializers.ValidationError({"function_call": ['none, auto, or {"name": "…"}']})


def _legacy_function_messages(messages: list[dict]) -> None:
    """Legacy messages as tool messages: an assistant's `function_call` gets an id, and the `function` message
    after it (its result, by name) answers it with that id."""
    pending: dict[str, str] = {}  # a legacy call's function name → its id
    for index, message in enumerate(messages):
        for position, call in enumerate(message.get("tool_calls") or []):
            if not call["id"]:
                call["id"] = f"call_legacy_{index}_{position}"
                pending[call["function"]["name"]] = call["id"]
        if message["role"] == "function":
            call_id = pending.pop(message["name"], None)
            if call_id is None:
                raise serializers.ValidationError({index: {"name": ["answers no function_call before it"]}})
            message.update(role="tool", tool_call_id=call_id)
            message.pop("name")


class EmbeddingsSerializer(StrictSerializer):
    """OpenAI's embeddings request: a text, a list of texts, or token arrays (for a server that reads them)."""

    model = serializers.CharField(max_length=255)
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

    model = serializers.CharField(max_length=255)
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
        """The chat completion request this is (validated by ChatCompletionSerializer like any other)."""
        data = dict(self.validated_data)
        logprobs = data.pop("logprobs", None)
        for name in ("prompt", "echo", "best_of", "suffix"):
            data.pop(name, None)
        chat = {key: value for key, value in data.items() if value is not None}
        if logprobs is not None:
            chat.update(logprobs=True, top_logprobs=logprobs)
        serializer = ChatCompletionSerializer(data={
            **chat, "messages": [{"role": "user", "content": self.validated_data["prompt"]}]})
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data


class ResponsesSerializer(StrictSerializer):
    """OpenAI's Responses API request, for text and function tools: its `input` items read as chat messages (see
    gateway.responses.response_chat_request); the hosted tools (web search, file search, …) are refused, naming them."""

    model = serializers.CharField(max_length=255)
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

    def validate_stream_options(self, value):
        if set(value or {}) - {"include_obfuscation"}:
            raise serializers.ValidationError("include_obfuscation (a boolean)")
        return value

    def validate_tools(self, value):
        for index, tool in enumerate(value or []):
            if tool.get("type") != "function":
                raise serializers.ValidationError({index: {"type": [
                    "only function tools ({type: function, name, parameters}): hosted tools are OpenAI's"]}})
            if errors := _function_errors(tool):
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
