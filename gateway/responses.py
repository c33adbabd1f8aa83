"""The Responses API (POST /v1/responses): its items as a chat request, a run as its response and stream."""
from __future__ import annotations

import copy
import itertools
import json
from typing import AsyncIterator

from core.errors import InvalidInput, NotFound
from gateway.errors import execution_failure
from gateway.chat_request import chat_request_validated
from gateway.services import answered_model, execution_ended, tool_call_fragment, usage_body
from workflows.models import WorkflowExecution
from workflows.selectors import execution_get

RESPONSE_PREFIX = "resp_"
_PART_TYPES = {"input_text": "text", "output_text": "text", "text": "text"}


def _chat_content(content):
    """A Responses message's content as chat content: its text parts as text, its images as image_url parts."""
    if isinstance(content, str) or not isinstance(content, list):
        return content
    parts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _PART_TYPES:
            parts.append({"type": "text", "text": part.get("text")})
        elif kind == "input_image":
            parts.append({"type": "image_url", "image_url": {"url": part.get("image_url"),
                                                              **({"detail": part["detail"]} if part.get("detail") else {})}})
        else:
            parts.append(part)  # refused by the chat request's validation, naming it
    return parts


def _chat_messages(items) -> list[dict]:
    """Responses input items as chat messages: messages as they are, a run of function_call items as one assistant
    message with those tool calls, a function_call_output as the tool message answering its call."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list):
        raise InvalidInput("input is a text or a list of items", details=[
            {"path": "input", "code": "invalid", "message": "a text or a list of items"}])
    messages: list[dict] = []
    for index, item in enumerate(items):
        kind = item.get("type", "message") if isinstance(item, dict) else None
        if kind == "message" and "role" in item:
            messages.append({"role": item["role"], "content": _chat_content(item.get("content"))})
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments")}}
            if messages and messages[-1]["role"] == "assistant" and messages[-1].get("tool_calls"):
                messages[-1]["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"),
                             "content": output if isinstance(output, str) else json.dumps(output)})
        else:
            raise InvalidInput(f"input.{index}: an item this gateway does not take ({kind!r})", details=[
                {"path": f"input.{index}.type", "code": "unsupported_item",
                 "message": "message, function_call or function_call_output"}])
    return messages


def _response_previous(*, owner, response_id: str) -> list[dict]:
    """The conversation a previous response ended: its run's messages and its reply. Another user's response, or
    one that did not complete, is not found."""
    previous = execution_get(user=owner, execution_id=response_id.removeprefix(RESPONSE_PREFIX)) if \
        response_id.startswith(RESPONSE_PREFIX) else None
    if previous is None or previous.workflow_type != WorkflowExecution.Type.GATEWAY or \
            previous.status != WorkflowExecution.Status.COMPLETED or "messages" not in previous.input_data:
        raise NotFound(f"Previous response with id '{response_id}' not found.", code="previous_response_not_found",
                       details=[{"path": "previous_response_id", "code": "not_found", "message": "no such response"}])
    output = previous.output_data
    calls = output.get("tool_calls") or []
    return [*previous.input_data["messages"],
            {"role": "assistant", "content": output.get("content") or ("" if not calls else None),
             **({"tool_calls": calls} if calls else {})}]


def response_chat_request(*, owner, request: dict) -> dict:
    """The chat completion request a Responses request is (validated as any chat request is): the previous
    response's conversation, then the input items; tools, tool choice and text format in the chat API's shape."""
    messages = _chat_messages(request["input"])
    if request.get("previous_response_id"):
        messages = _response_previous(owner=owner, response_id=request["previous_response_id"]) + messages
    chat = {"model": request["model"], "messages": messages}
    for name in ("temperature", "top_p", "parallel_tool_calls", "user", "store", "metadata", "service_tier", "stream",
                 "stream_options"):
        if request.get(name) is not None:
            chat[name] = request[name]
    if request.get("max_output_tokens"):
        chat["max_completion_tokens"] = request["max_output_tokens"]
    if request.get("tools"):
        chat["tools"] = [{"type": "function", "function": {
            key: tool[key] for key in ("name", "description", "parameters", "strict") if key in tool}}
            for tool in request["tools"]]
    choice = request.get("tool_choice")
    if choice is not None:
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}} if isinstance(
            choice, dict) else choice
    text_format = (request.get("text") or {}).get("format") or {}
    if text_format.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif text_format.get("type") == "json_schema":
        chat["response_format"] = {"type": "json_schema", "json_schema": {
            key: text_format[key] for key in ("name", "schema", "strict", "description") if key in text_format}}
    if (request.get("reasoning") or {}).get("effort"):
        chat["reasoning_effort"] = request["reasoning"]["effort"]
    return chat_request_validated(chat)


def _response(execution: WorkflowExecution, *, model: str, request: dict, status: str, output: list[dict],
              usage: dict | None = None, error: dict | None = None) -> dict:
    """The Responses API's response object of a gateway run, in any of its states."""
    return {
        "id": f"{RESPONSE_PREFIX}{execution.pk}", "object": "response",
        "created_at": int(execution.created_at.timestamp()), "status": status, "model": model,
        "output": output, "error": error, "incomplete_details": None,
        "previous_response_id": request.get("previous_response_id"), "instructions": request.get("instructions"),
        "tools": request.get("tools") or [], "tool_choice": request.get("tool_choice") or "auto",
        "parallel_tool_calls": request.get("parallel_tool_calls", True), "temperature": request.get("temperature"),
        "top_p": request.get("top_p"), "max_output_tokens": request.get("max_output_tokens"),
        "text": request.get("text") or {"format": {"type": "text"}}, "metadata": request.get("metadata") or {},
        "usage": usage,
    }


def _response_usage(execution: WorkflowExecution) -> dict:
    """The run's usage as stored (usage_body), in the Responses API's names, with its cost."""
    usage = usage_body(execution)
    return {"input_tokens": usage["prompt_tokens"], "input_tokens_details": usage["prompt_tokens_details"],
            "output_tokens": usage["completion_tokens"], "output_tokens_details": usage["completion_tokens_details"],
            "total_tokens": usage["total_tokens"], "cost": usage["cost"]}


def _message_item(execution_id, text: str, *, status: str = "completed") -> dict:
    return {"type": "message", "id": f"msg_{execution_id.hex}", "status": status, "role": "assistant",
            "content": [_text_part(text)] if status == "completed" else []}


def _text_part(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _call_item(call_id: str, name: str, arguments: str, *, status: str = "completed") -> dict:
    return {"type": "function_call", "id": f"fc_{call_id}", "call_id": call_id, "name": name,
            "arguments": arguments, "status": status}


def response_body(execution: WorkflowExecution, *, model: str, request: dict) -> dict:
    """A finished (completed) gateway run as the Responses API's response: its text as an output message, its tool
    calls as function_call items, the usage as stored with its cost."""
    output = execution.output_data or {}
    items = [_message_item(execution.pk, output["content"])] if output.get("content") else []
    items += [_call_item(call["id"], call["function"]["name"], call["function"]["arguments"])
              for call in output.get("tool_calls") or []]
    return _response(execution, model=answered_model(execution, asked=model), request=request, status="completed",
                     output=items,
                     usage=_response_usage(execution))


async def response_events(execution: WorkflowExecution, feed: AsyncIterator[dict], *, model: str,
                          request: dict) -> AsyncIterator[dict]:
    """The run's feed as the Responses API's stream events, numbered by `sequence_number` from 0: the response
    created and in progress; the output message (added, its text part, a delta per token, done) and each function
    call (added, a delta per fragment as the provider streamed it, done), one item after the other; then the
    response completed as response_body answers it (the usage as stored, with its cost). A run that fails or is
    cancelled ends the stream with `response.failed`: its error, the items so far, the usage it recorded."""
    numbers = itertools.count()
    items: list[dict] = []  # the output items in the order they were added (their output_index)
    positions: dict = {}  # the provider's index of a tool call (or its id) → its place in the stream
    open_item: dict | None = None  # the item being streamed: others are added after it is done

    def event(kind: str, **fields) -> dict:
        return {"type": kind, "sequence_number": next(numbers), **fields}

    def add(item: dict) -> list[dict]:
        nonlocal open_item
        done = close()
        items.append(item)
        open_item = item
        added = [event("response.output_item.added", output_index=len(items) - 1, item=copy.deepcopy(item))]
        if item["type"] == "message":
            added.append(event("response.content_part.added", item_id=item["id"], output_index=len(items) - 1,
                               content_index=0, part=_text_part("")))
            item["content"] = [_text_part("")]
        return done + added

    def delta(text: str) -> dict:
        index = items.index(open_item)
        if open_item["type"] == "message":
            open_item["content"][0]["text"] += text
            return event("response.output_text.delta", item_id=open_item["id"], output_index=index,
                         content_index=0, delta=text, logprobs=[])
        open_item["arguments"] += text
        return event("response.function_call_arguments.delta", item_id=open_item["id"], output_index=index,
                     delta=text)

    def close() -> list[dict]:
        nonlocal open_item
        item, open_item = open_item, None
        if item is None:
            return []
        index, item["status"] = items.index(item), "completed"
        if item["type"] == "message":
            part = item["content"][0]
            done = [event("response.output_text.done", item_id=item["id"], output_index=index, content_index=0,
                          text=part["text"], logprobs=[]),
                    event("response.content_part.done", item_id=item["id"], output_index=index, content_index=0,
                          part=dict(part))]
        else:
            done = [event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                          arguments=item["arguments"])]
        return done + [event("response.output_item.done", output_index=index, item=copy.deepcopy(item))]

    try:
        started = _response(execution, model=model, request=request, status="in_progress", output=[])
        yield event("response.created", response=started)
        yield event("response.in_progress", response=started)
        async for envelope in feed:
            kind, data = envelope["event"], envelope["data"]
            if kind == "token":
                if open_item is None or open_item["type"] != "message":
                    for added in add(_message_item(execution.pk, "", status="in_progress")):
                        yield added
                yield delta(data["text"])
            elif kind == "tool_call_delta":
                fragment = tool_call_fragment(data, positions)
                if "id" in fragment:  # a call's first fragment
                    for added in add(_call_item(fragment["id"], fragment["function"]["name"], "",
                                                status="in_progress")):
                        yield added
                if fragment["function"]["arguments"]:
                    yield delta(fragment["function"]["arguments"])
            elif kind == "workflow_completed":
                ended = await execution_ended(execution.pk)
                body = response_body(ended, model=model, request=request)
                streamed = {(item["type"], item.get("call_id")) for item in items}
                for item in body["output"]:  # what the provider gave whole: whole here too
                    if (item["type"], item.get("call_id")) not in streamed:
                        whole = item["content"][0]["text"] if item["type"] == "message" else item["arguments"]
                        for added in add({**item, "status": "in_progress", **(
                                {"content": []} if item["type"] == "message" else {"arguments": ""})}):
                            yield added
                        if whole:
                            yield delta(whole)
                for done in close():
                    yield done
                stored = {(item["type"], item.get("call_id")): item for item in body["output"]}
                body["output"] = [stored.get((item["type"], item.get("call_id")), item) for item in items]
                yield event("response.completed", response=body)
            elif kind in ("workflow_failed", "workflow_cancelled"):
                ended = await execution_ended(execution.pk)
                if open_item is not None:
                    open_item["status"] = "incomplete"
                said = execution_failure(ended, model=model).body["error"]
                error = {"code": said["code"], "message": said["message"]}
                yield event("response.failed", response=_response(
                    ended, model=model, request=request, status="failed", output=items,
                    usage=_response_usage(ended), error=error))
    finally:
        await feed.aclose()
