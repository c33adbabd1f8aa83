"""The chat completion request (/v1/chat/completions, and what /v1/completions and /v1/responses are read as),
validated like every request: unknown fields refused, a 400 naming the field at fault.

One pydantic model is the request's one definition (what the schema shows and what is checked). It replaces a DRF
serializer whose ~65 fields DRF built afresh for each request (a deep copy of the declared ones, the messages'
nested ones too): 1.3 of its 1.8 ms of CPU a call, most of the cost of the gateway's validation (bench/RESULTS.md,
B8). pydantic-core checks the same request in about 0.05 ms. Its errors go up as DRF's ValidationError, field by
field (`messages.0.content`), so the one error handler answers them in the surface's shape, as any other.

Every parameter of OpenAI's chat completions API is read here into one of three kinds (gateway.services decides
what each does): passed through to the upstream, accepted and ignored (what only OpenAI's hosted service means),
or refused with a 400 naming it (what this gateway cannot honour: audio output). The legacy `functions` /
`function_call` (and `function` messages) are read as the tools they became."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, StringConstraints
from pydantic import ValidationError as ModelErrors
from rest_framework.exceptions import ErrorDetail, ValidationError

from conversations.services import MAX_MESSAGE_CHARS

MAX_MESSAGES = 1000
# Content parts a message may carry besides text, passed through to a provider that takes them.
MEDIA_PARTS = {"image_url": "url", "input_audio": "data", "file": None}
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority")
Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


def _text(max_length: int, *, trimmed: bool = True, blank: bool = False):
    """A JSON text (a number is not one), of at most `max_length` characters; `trimmed` of surrounding whitespace,
    and then not empty unless `blank`."""
    return Annotated[StrictStr, StringConstraints(strip_whitespace=trimmed, min_length=0 if blank else 1,
                                                  max_length=max_length)]


def _number(kind, low, high):
    return Annotated[kind, Field(ge=low, le=high)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class OpenAIFunctionCall(_Strict):
    name: _text(64)
    # As the model wrote it, valid JSON or not (OpenAI hands it over either way; a client sends it back).
    arguments: _text(MAX_MESSAGE_CHARS, trimmed=False, blank=True)


class OpenAIToolCall(_Strict):
    id: _text(128)
    type: Literal["function"] = "function"
    function: OpenAIFunctionCall
    index: Annotated[StrictInt, Field(ge=0, description="ignored (a streamed call's position)")] | None = None


class OpenAIChatMessage(_Strict):
    role: Role
    content: Any = Field(None, description="text, or a list of parts: text, image_url, input_audio, file")
    name: _text(64) | None = None
    tool_calls: Annotated[list[OpenAIToolCall], Field(max_length=128)] | None = None
    tool_call_id: _text(128) | None = None
    function_call: OpenAIFunctionCall | None = Field(None, description="legacy: a tool call")
    refusal: StrictStr | None = None


Temperature, TopP, Penalty = _number(StrictFloat, 0, 2), _number(StrictFloat, 0, 1), _number(StrictFloat, -2, 2)
Tokens = _number(StrictInt, 1, 200_000)


class ChatCompletionRequest(_Strict):
    """OpenAI's chat completion request."""

    model: _text(255, trimmed=False)  # as sent: gateway.services.gateway_model refuses one with spaces around it
    messages: Annotated[list[OpenAIChatMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    stream: StrictBool = False
    stream_options: dict[str, Any] | None = None
    tools: Annotated[list[dict[str, Any]], Field(max_length=128)] | None = None
    tool_choice: Any = None
    functions: Annotated[list[dict[str, Any]], Field(max_length=128, description="legacy: tools")] | None = None
    function_call: Any = Field(None, description="legacy: tool_choice")
    temperature: Temperature | None = None
    max_tokens: Tokens | None = None
    max_completion_tokens: Tokens | None = None
    top_p: TopP | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    seed: StrictInt | None = None
    stop: Any = None
    user: _text(256) | None = None
    n: _number(StrictInt, 1, 128) | None = None
    response_format: dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None
    logprobs: StrictBool | None = None
    top_logprobs: _number(StrictInt, 0, 20) | None = None
    logit_bias: dict[str, _number(StrictInt, -100, 100)] | None = None
    reasoning_effort: Literal[REASONING_EFFORTS] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    prediction: dict[str, Any] | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    audio: dict[str, Any] | None = Field(None, description="refused: no audio output here")
    # What only OpenAI's hosted service means: accepted, not sent on, named in the X-Chatter-Ignored header.
    store: StrictBool | None = None
    metadata: dict[str, _text(512, blank=True)] | None = None
    service_tier: Literal[SERVICE_TIERS] | None = None
    safety_identifier: _text(256) | None = None
    prompt_cache_key: _text(256) | None = None
    prompt_cache_retention: _text(32) | None = None
    prompt_cache_options: dict[str, Any] | None = None
    moderation: Any = None


def chat_request_validated(data: Any) -> dict:
    """The chat completion request `data` (parsed JSON) as the gateway reads it: the fields given (and `stream`),
    messages without what is ignored, legacy functions as tools. Raises ValidationError naming each field at
    fault."""
    try:
        given = ChatCompletionRequest.model_validate(data)
    except ModelErrors as exc:
        raise ValidationError(_field_errors(exc)) from None
    request = given.model_dump(exclude_unset=True)
    request.setdefault("stream", False)
    errors: dict = {}
    for index, message in enumerate(request["messages"]):
        try:
            request["messages"][index] = _message(message)
        except ValidationError as exc:
            errors.setdefault("messages", {})[index] = exc.detail
    for name in ChatCompletionRequest.model_fields:  # (in their order, as the first names the `param`)
        if name in request and name in _CHECKS and name not in errors:
            try:
                _CHECKS[name](request[name])
            except ValidationError as exc:
                errors[name] = exc.detail
    if errors:
        raise ValidationError(errors)
    return _legacy(request)


def _field_errors(exc: ModelErrors) -> dict:
    """pydantic's errors as DRF's: {field: {index: {field: [message]}}}, the request's own under non_field_errors."""
    errors: dict = {}
    found = exc.errors(include_url=False, include_context=False, include_input=False)
    unknown = [error for error in found if error["type"] == "extra_forbidden"]
    for error in unknown or found:  # (an unknown field is all that is said, where there is one)
        loc = error["loc"]
        at = errors
        for part in loc[:-1]:
            at = at.setdefault(part, {})
        code, message = _error_of(error)
        at.setdefault(loc[-1] if loc else "non_field_errors", []).append(ErrorDetail(message, code=code))
    return errors


def _error_of(error: dict) -> tuple[str, str]:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "invalid", "unknown or read-only field"
    if kind == "missing":
        return "required", "This field is required."
    if kind == "model_type":
        return "invalid", "Invalid data. Expected an object."
    return kind, error["msg"]


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


def _message(attrs: dict) -> dict:
    """One message as the gateway reads it (its legacy function_call a tool call), or its errors by field."""
    content = attrs.get("content")
    if not (content is None or isinstance(content, str) or (
            isinstance(content, list) and all(_part_ok(part) for part in content))):
        _refuse("content", "content must be text or a list of parts ({type: text, text}, {type: image_url, "
                           "image_url: {url}}, {type: input_audio, input_audio: {data, format}}, {type: file, "
                           "file: {…}})")
    if attrs.get("function_call"):  # legacy: the one tool call of an assistant message
        if attrs.get("tool_calls") or attrs["role"] != "assistant":
            _refuse("function_call", "only on an assistant message without tool_calls")
        attrs["tool_calls"] = [{"id": "", "type": "function", "function": attrs.pop("function_call")}]
    attrs.pop("function_call", None)
    if attrs["role"] == "function" and not attrs.get("name"):
        _refuse("name", "a function message names its function")
    if media_parts(content) and attrs["role"] != "user":
        _refuse("content", "only a user message has image, audio or file parts")
    size = len(content) if isinstance(content, str) else sum(len(p.get("text", "")) for p in content or [])
    if size > MAX_MESSAGE_CHARS:
        _refuse("content", f"at most {MAX_MESSAGE_CHARS} characters")
    if content is None and not (attrs["role"] == "assistant" and attrs.get("tool_calls")):
        _refuse("content", "required, unless an assistant message has tool_calls")
    if attrs["role"] == "tool" and not attrs.get("tool_call_id"):
        _refuse("tool_call_id", "a tool message needs tool_call_id")
    if attrs.get("tool_calls") and attrs["role"] != "assistant":
        _refuse("tool_calls", "only an assistant message has tool_calls")
    ids = [call["id"] for call in attrs.get("tool_calls") or [] if call["id"]]
    if len(set(ids)) != len(ids):
        _refuse("tool_calls", "each tool call needs an id of its own")
    for call in attrs.get("tool_calls") or []:
        call.pop("index", None)
        call.setdefault("type", "function")
    attrs.pop("refusal", None)
    return {name: value for name, value in attrs.items() if value is not None or name == "content"}


def media_parts(content) -> list[str]:
    """The kinds of the non-text parts of a message's content."""
    return [part["type"] for part in content if part["type"] != "text"] if isinstance(content, list) else []


def function_errors(function: dict) -> dict:
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


def _refuse(field: str, message: str):
    raise ValidationError({field: [message]})


def _messages_check(value: list[dict]) -> None:
    """As OpenAI has it: the tool calls of an assistant message are answered, each, by the tool messages that
    follow it, and a tool message answers one of them."""
    _legacy_function_messages(value)
    unanswered: dict[str, int] = {}  # tool call id → the index of its assistant message
    for index, message in enumerate(value):
        if message["role"] == "tool":
            if unanswered.pop(message["tool_call_id"], None) is None:
                raise ValidationError({index: {"tool_call_id": [
                    "matches no unanswered tool call of the assistant message before it"]}})
            continue
        _all_answered(unanswered)
        unanswered = {call["id"]: index for call in message.get("tool_calls") or []}
    _all_answered(unanswered)


def _all_answered(unanswered: dict[str, int]) -> None:
    if unanswered:
        call_id, index = next(iter(unanswered.items()))
        raise ValidationError({index: {"tool_calls": [
            f"tool call {call_id!r} has no tool message answering it (tool_call_id) right after"]}})


def _tools_check(value) -> None:
    for index, tool in enumerate(value or []):
        function = tool.get("function")
        if tool.get("type") != "function" or not isinstance(function, dict):
            raise ValidationError("each tool must be {type: function, function: {name, …}}")
        if errors := function_errors(function):
            raise ValidationError({index: {"function": errors}})


def _check(ok, message: str):
    def check(value) -> None:
        if not ok(value):
            raise ValidationError(message)
    return check


_CHECKS = {
    "messages": _messages_check,
    "tools": _tools_check,
    "tool_choice": _check(lambda value: value is None or value in ("none", "auto", "required") or (
        isinstance(value, dict) and value.get("type") == "function"),
        'none, auto, required, or {"type": "function", "function": {"name"}}'),
    "stop": _check(lambda value: value is None or isinstance(value, str) or (
        isinstance(value, list) and len(value) <= 4 and all(isinstance(v, str) for v in value)),
        "a string or up to 4 strings"),
    "stream_options": _check(lambda value: not set(value or {}) - {"include_usage", "include_obfuscation"} and all(
        isinstance(flag, bool) for flag in (value or {}).values()), "include_usage and include_obfuscation (booleans)"),
    "logit_bias": _check(lambda value: all(token.isdigit() for token in value or {}), "keys are token ids (digits)"),
    "prediction": _check(lambda value: value is None or (value.get("type") == "content" and isinstance(
        value.get("content"), (str, list))), '{"type": "content", "content": text or text parts}'),
    "modalities": _check(lambda value: not value or "audio" not in value,
                         "audio output cannot be relayed by this gateway: ask for [\"text\"]"),
    "audio": _check(lambda value: value is None, "audio output cannot be relayed by this gateway"),
}


def _legacy(request: dict) -> dict:
    """The legacy `functions` / `function_call` as the tools / tool_choice they became (`legacy_functions` says to
    answer in their shape too); `top_logprobs` needs `logprobs`, as OpenAI has it."""
    if request.get("top_logprobs") and not request.get("logprobs"):
        _refuse("top_logprobs", "needs logprobs: true")
    if request.get("functions") is not None or request.get("function_call") is not None:
        if request.get("tools") is not None or request.get("tool_choice") is not None:
            _refuse("functions", "give tools or the legacy functions, not both")
        request["tools"] = [{"type": "function", "function": function} for function in request.get("functions") or []]
        request["tool_choice"] = _tool_choice_of(request.get("function_call"))
        try:
            _tools_check(request["tools"])
        except ValidationError as exc:
            raise ValidationError({"tools": exc.detail}) from None
        request["legacy_functions"] = True
    request.pop("functions", None)
    request.pop("function_call", None)
    return request


def _tool_choice_of(function_call):
    if function_call is None or function_call in ("none", "auto"):
        return function_call
    if isinstance(function_call, dict) and isinstance(function_call.get("name"), str):
        return {"type": "function", "function": {"name": function_call["name"]}}
    _refuse("function_call", 'none, auto, or {"name": "…"}')


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
                raise ValidationError({index: {"name": ["answers no function_call before it"]}})
            message.update(role="tool", tool_call_id=call_id)
            message.pop("name")
