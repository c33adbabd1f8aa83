"""Chatter's messages in LangGraph's message format (LangChain messages as JSON), and LangGraph input read back
into one chat turn."""
from __future__ import annotations

from core.errors import InvalidInput
from core.money import usd
from engine.chat_messages import content_text

_TYPES = {"user": "human", "assistant": "ai", "system": "system", "tool": "tool"}
_ROLES = {"human": "user", "user": "user", "ai": "assistant", "assistant": "assistant", "system": "system",
          "tool": "tool"}


def usage_metadata(*, prompt_tokens: int, completion_tokens: int, cached_prompt_tokens: int = 0,
                   reasoning_tokens: int = 0) -> dict:
    return {"input_tokens": prompt_tokens, "output_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "input_token_details": {"cache_read": cached_prompt_tokens},
            "output_token_details": {"reasoning": reasoning_tokens}}


def message_dict(message) -> dict:
    """A conversations.Message as LangChain's JSON of a message; an assistant's carries its usage, and its cost
    in response_metadata (Chatter's figures: the same as on the message row)."""
    kind = _TYPES[message.role]
    data = {"content": message.content, "additional_kwargs": {}, "response_metadata": {}, "type": kind,
            "name": None, "id": str(message.pk)}
    if kind == "ai":
        data["tool_calls"] = [{"name": call.get("name"), "args": call.get("args") or {}, "id": None,
                               "type": "tool_call"} for call in message.tool_calls or []]
        data["invalid_tool_calls"] = []
        data["usage_metadata"] = usage_metadata(
            prompt_tokens=message.prompt_tokens, completion_tokens=message.completion_tokens,
            cached_prompt_tokens=message.cached_prompt_tokens, reasoning_tokens=message.reasoning_tokens)
        data["response_metadata"] = {
            "model_provider": message.provider_used, "model_name": message.model_used,
            "finish_reason": message.finish_reason or None, "cost": usd(message.cost),
            "usage_estimated": message.usage_estimated, "execution_id": str(message.execution_id),
        }
    return data


def ai_message_of_run(execution) -> dict:
    """A run without a thread keeps no message: its answer, as its row holds it."""
    return {"content": (execution.output_data or {}).get("content") or "", "additional_kwargs": {},
            "response_metadata": {"model_provider": execution.provider, "model_name": execution.model,
                                  "cost": usd(execution.cost), "execution_id": str(execution.pk)},
            "type": "ai", "name": None, "id": f"run-{execution.pk}", "tool_calls": [], "invalid_tool_calls": [],
            "usage_metadata": usage_metadata(prompt_tokens=execution.prompt_tokens,
                                             completion_tokens=execution.completion_tokens)}


def _text(content) -> str:
    """A message's content as the turn's text: a list of content parts as a model reads it (content_text)."""
    if isinstance(content, str) or isinstance(content, list) and all(isinstance(part, (str, dict))
                                                                      for part in content):
        return content_text(content)
    raise InvalidInput("a message's content must be text or a list of content parts (strings or objects)")


def input_messages(run_input) -> list[dict]:
    """The messages of a run's input ({"messages": [...]}, one message or a string), as {role, content}."""
    if run_input is None:
        return []
    if not isinstance(run_input, dict):
        raise InvalidInput("input must be an object such as {\"messages\": [...]}")
    raw = run_input.get("messages", [])
    if isinstance(raw, (str, dict)):
        raw = [raw]
    if not isinstance(raw, list):
        raise InvalidInput("input.messages must be a list of messages")
    messages = []
    for item in raw:
        if isinstance(item, str):
            item = {"role": "user", "content": item}
        if not isinstance(item, dict):
            raise InvalidInput("each message must be an object with role (or type) and content")
        role = _ROLES.get(str(item.get("role") or item.get("type") or "").lower())
        if role is None:
            raise InvalidInput(f"unknown message role {item.get('role') or item.get('type')!r}")
        messages.append({"role": role, "content": _text(item.get("content", ""))})
    return messages


def turn_of(messages: list[dict]) -> tuple[str | None, str | None]:
    """The turn a run's input asks for: its last user message, and its system message (the run's system
    prompt) if it gives one."""
    user = [m["content"] for m in messages if m["role"] == "user"]
    system = [m["content"] for m in messages if m["role"] == "system"]
    return (user[-1] if user else None), (system[-1] if system else None)


def input_as_dicts(messages: list[dict]) -> list[dict]:
    """Input messages (not stored: a run without a thread) in LangGraph's format."""
    return [{"content": m["content"], "additional_kwargs": {}, "response_metadata": {}, "type": _TYPES[m["role"]],
             "name": None, "id": None} for m in messages]


def question_interrupt(question: dict) -> dict:
    """A waiting run's question (output_data.input_required) as the SDK's Interrupt, read from the run's row."""
    value = question["value"] if "value" in question else {
        key: item for key, item in question.items() if key != "interrupt_id"}
    found = {"value": value, "id": question["interrupt_id"]}
    if isinstance(question.get("schema"), dict):
        found["response_schema"] = question["schema"]
    return found
