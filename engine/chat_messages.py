"""Chat messages in OpenAI's shape (what the gateway takes and answers) and in LangChain's (what the engine runs).

Tool-call `arguments` stay as the model wrote them. OpenAI hands them over as a string even when it is not valid
JSON, and a client sends that string back in its next call; LangChain parses them into `tool_calls`, repairing a
truncated object on the way, and keeps the unparsable ones apart in `invalid_tool_calls`. So both are read, and
the strings as sent are what leave."""
from __future__ import annotations

import json
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, convert_to_messages
from langchain_core.messages.tool import invalid_tool_call, tool_call


def content_text(content: str | list) -> str:
    """A message's content as a text model reads it. A list of content parts (OpenAI's `{"type": "text", "text"}`,
    LangChain's blocks, bare strings) is its text parts one after the other, as they are: Anthropic splits a reply's
    text into blocks where it likes (around a citation, a server tool's result), and its SDK (`get_final_text`) and
    LangChain (`message.text`) read them so. Then the text of a reply streamed part by part is the text of its parts
    streamed, and the same as its text answered whole. Each other part (an image, audio, a file) is named by its type
    in brackets on a line of its own (`[image_url]`): it is there, as the token estimate counts it (engine.usage),
    but no text. A reply's tool calls as parts (Anthropic's `tool_use`, and the `input_json_delta` fragments of its
    input in a streamed chunk) are left out: the message carries them as its tool_calls. (A part that is none of
    these, as a tool of one's own may return, is its text.) A streamed chunk's content reads the same way: the text
    it adds."""
    if isinstance(content, str):
        return content
    pieces: list[str] = []
    named_last = False
    for part in content:
        if isinstance(part, dict) and part.get("type") in _CALL_PARTS:
            continue
        named = isinstance(part, dict) and not isinstance(part.get("text"), str)
        if pieces and (named or named_last):
            pieces.append("\n")
        pieces.append(f"[{part.get('type') or 'part'}]" if named else part["text"] if isinstance(part, dict)
                      else part if isinstance(part, str) else str(part))
        named_last = named
    return "".join(pieces)


_CALL_PARTS = ("tool_use", "tool_call", "server_tool_use", "input_json_delta")


def json_object(text: str | bytes) -> dict | None:
    """`text` as an object when it is one in strict JSON, else None: a tool call's arguments (LangChain's tool calls
    need an object), an upstream's answer or stream event."""
    try:
        parsed = json.loads(text)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def messages_from_openai(messages: list[dict[str, Any]]) -> list[BaseMessage]:
    """OpenAI chat messages (validated: gateway.serializers) as LangChain messages. `content` may be missing or null
    beside `tool_calls`; arguments that are no JSON object become an invalid tool call, relayed as they came."""
    converted: list[BaseMessage] = []
    for message in messages:
        if message["role"] != "assistant" or not message.get("tool_calls"):
            converted += convert_to_messages([{**message, "content": message.get("content") or ""}])
            continue
        calls, invalid = [], []
        for call in message["tool_calls"]:
            name, arguments = call["function"]["name"], call["function"]["arguments"]
            args = json_object(arguments)
            if args is None:
                invalid.append(invalid_tool_call(name=name, args=arguments, id=call["id"], error=None))
            else:
                calls.append(tool_call(name=name, args=args, id=call["id"]))
        converted.append(AIMessage(content=message.get("content") or "", tool_calls=calls, invalid_tool_calls=invalid,
                                   **({"name": message["name"]} if message.get("name") else {})))
    return converted


def tool_calls_streamed(message: AIMessageChunk) -> list[dict]:
    """The tool calls of a streamed reply, OpenAI-shaped, each with its argument fragments joined as they came."""
    return [{"id": chunk.get("id") or "", "type": "function",
             "function": {"name": chunk.get("name") or "", "arguments": chunk.get("args") or ""}}
            for chunk in message.tool_call_chunks]


def tool_calls_as_sent(reply: AIMessage) -> list[dict]:
    """A reply's tool calls, OpenAI-shaped, with their arguments as the model sent them: those the streamed reply
    kept (engine.runtime), else the parsed and the unparsable ones LangChain made of them."""
    kept = reply.additional_kwargs.get("tool_calls")
    if isinstance(kept, list) and kept:
        return kept
    return [*({"id": call["id"], "type": "function",
               "function": {"name": call["name"], "arguments": json.dumps(call["args"])}} for call in reply.tool_calls),
            *({"id": call["id"], "type": "function",
               "function": {"name": call["name"] or "", "arguments": call["args"] or ""}}
              for call in reply.invalid_tool_calls)]


def choice_as_openai(reply: AIMessage, *, index: int = 0) -> dict:
    """A reply as one of OpenAI's choices: its message, how it ended, its logprobs when the provider gave them."""
    calls = tool_calls_as_sent(reply)
    content = content_text(reply.content)
    return {"index": index, "message": {"role": "assistant", "content": content or (None if calls else ""),
                                        **({"tool_calls": calls} if calls else {})},
            "finish_reason": reply.response_metadata.get("finish_reason") or ("tool_calls" if calls else "stop"),
            "logprobs": reply.response_metadata.get("logprobs")}


def tool_choice_for(provider: str, choice: str | dict | None) -> str | dict | None:
    """OpenAI's `tool_choice` (what the gateway takes) as `provider`'s chat model's bind_tools takes it. LangChain's
    ChatAnthropic reads a bare string as a tool's name (or its own "auto" and "any"), so OpenAI's "required" is its
    "any", "none" its {"type": "none"}, and a named function the function's name; the others take OpenAI's values."""
    if provider != "anthropic" or choice is None:
        return choice
    if isinstance(choice, dict):
        return (choice.get("function") or {}).get("name") or choice.get("name") or choice
    return {"required": "any", "none": {"type": "none"}}.get(choice, choice)
