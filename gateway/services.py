"""The OpenAI-compatible gateway (/v1/chat/completions, /v1/responses, /v1/completions, /v1/embeddings, /v1/models):
a call is a run like any other.

Each chat call (a Responses or legacy completions call is read as one) runs, through workflows' one run path (run_plan → run_write → the runner with its recorder), a built-in
one-node graph (start → model → end) whose model node takes the request's messages, tools and parameters: so a
call has its execution (`workflow_type = "gateway"`), its node, its LLM call with the provider's usage priced by
the one usage path, its events and audit rows, and (with X-Chatter-Conversation) the exchange in a conversation
with its aggregates. An embeddings call runs the embeddings graph (start → embedding → end) the same way. This
module turns an OpenAI request into a run request and a run into OpenAI's answer."""
from __future__ import annotations

import copy
import itertools
import json
import time
from typing import TYPE_CHECKING, AsyncIterator, NamedTuple

from channels.db import database_sync_to_async

from analytics.selectors import priced_models
from core.errors import InvalidInput, NotFound
from gateway.errors import execution_failure
from gateway.limits import key_admit
from gateway.serializers import ChatCompletionSerializer, media_parts
from workflows.engine.providers import (
    PROVIDERS,
    provider_check,
    provider_models_served,
    providers_configured,
)
from workflows.engine.routing import routing_table
from workflows.models import WorkflowExecution
from workflows.pricing import HOW_TO_PRICE, price_for_call
from workflows.selectors import execution_get
from workflows.services.run_requests import GatewayRequest
from workflows.services.runs import execution_run_now, execution_start_streamed

if TYPE_CHECKING:
    from analytics.models import ModelPrice

GATEWAY_GRAPH = {
    "nodes": [{"id": "start", "type": "start"}, {"id": "model", "type": "model"}, {"id": "end", "type": "end"}],
    "edges": [{"source": "start", "target": "model"}, {"source": "model", "target": "end"}],
}
# Parameters passed through to the provider as they came (`n` > 1: one call for all the choices, its usage theirs).
PASSED_THROUGH = ("top_p", "stop", "presence_penalty", "frequency_penalty", "seed", "user", "response_format",
                  "parallel_tool_calls", "logprobs", "top_logprobs", "logit_bias", "n", "reasoning_effort",
                  "verbosity", "prediction", "modalities")
# What only OpenAI's hosted service means: accepted, not sent on, and named in the IGNORED_HEADER of the answer.
IGNORED = ("store", "metadata", "service_tier", "safety_identifier", "prompt_cache_key", "prompt_cache_retention",
           "prompt_cache_options", "moderation")
# Providers that take image, audio and file parts (LangChain's chat models pass OpenAI's parts on).
MEDIA_PROVIDERS = ("openai", "anthropic")


def gateway_ignored(request: dict) -> list[str]:
    """The parameters of a request that were accepted and not acted on."""
    ignored = [name for name in IGNORED if request.get(name) is not None]
    if "include_obfuscation" in (request.get("stream_options") or {}):
        ignored.append("stream_options.include_obfuscation")
    return ignored


def _routed_models() -> list[tuple[str, str, object]]:
    """The model names of the deployments file (CHATTER_DEPLOYMENTS) that are priced: (provider, name, price since).
    Its fallbacks are model names of the file too."""
    table = routing_table()
    if table is None:
        return []
    routed = []
    for route in table.routes.values():
        price = price_for_call(provider=route.provider, model=route.name)
        if price is not None:
            routed.append((route.provider, route.name, price.effective_from))
    return routed


def gateway_model_list() -> list[dict]:
    """The models this installation can call, OpenAI-shaped: the model names its deployments file routes (each
    served by its deployments, then its fallbacks'), then those of a configured provider, served by its server (the
    local models; an OpenAI-compatible server's own /models); each priced. A server that cannot say what it serves
    is taken to serve its provider's priced models (analytics.selectors.priced_models)."""
    models = _routed_models()
    routed = {name for _, name, _ in models}
    for provider in providers_configured():
        served = provider_models_served(provider)
        if served is None:
            models += [(provider, model["model"], model["since"]) for model in priced_models(providers=[provider])]
            continue
        for name in sorted(served):
            price = price_for_call(provider=provider, model=name)
            if price is not None:
                models.append((provider, name, price.effective_from))
    return [{"id": name, "object": "model", "created": int(since.timestamp()), "owned_by": provider}
            for index, (provider, name, since) in enumerate(models) if index < len(routed) or name not in routed]


def gateway_model_get(model: str) -> dict:
    """One model of gateway_model_list, by id (`provider/model` too); else the 404 gateway_model explains."""
    provider, name, _ = gateway_model(model)
    listed = next(entry for entry in gateway_model_list() if (entry["owned_by"], entry["id"]) == (provider, name))
    return {**listed, "id": model}


class ResolvedModel(NamedTuple):
    """The provider and model a call goes to, and the price in force read to know it is priced."""
    provider: str
    model: str
    price: ModelPrice


def gateway_model(model: str) -> ResolvedModel:
    """The provider and model for a requested model: `provider/model`, or the first configured provider that prices
    `model`. A model no configured provider prices is a 404 model_not_found that says which models there are, why
    a priced one cannot be called (its provider is not set up) and how to price another."""
    provider, _, name = model.partition("/")
    table = routing_table()
    route = table.routes.get(name if name else model) if table is not None else None
    if route is not None and (not name or provider == route.provider):
        if (price := price_for_call(provider=route.provider, model=route.name)) is not None:
            return ResolvedModel(route.provider, route.name, price)
        raise NotFound(f"The model `{model}` is routed to deployments ({', '.join(d.label for d in route.deployments)}) "
                       f"but has no price, so its calls could not be accounted for. To call it, {HOW_TO_PRICE}.",
                       code="model_not_found",
                       details=[{"path": "model", "code": "model_not_found", "message": "routed, not priced"}])
    configured = providers_configured()
    candidates = [(provider, name)] if name and provider in PROVIDERS else [(p, model) for p in PROVIDERS]
    # What a server serves is known without a query (provider_models_served): a provider that does not serve the
    # model is passed over before its price is read, so a call reads one price here, not one per provider.
    for provider, name in candidates:
        if provider in configured and _served(provider, name) and \
                (price := price_for_call(provider=provider, model=name)) is not None:
            return ResolvedModel(provider, name, price)
    not_served = [p for p, n in candidates if p in configured and not _served(p, n)
                  and price_for_call(provider=p, model=n) is not None]
    callable_ = [entry["id"] for entry in gateway_model_list()]
    message = (f"The model `{model}` does not exist or you do not have access to it. "
               f"Models you can call: {', '.join(callable_) or 'none'} (GET /v1/models).")
    if not_served:
        message += f" `{model}` is priced, but {not_served[0]}'s server does not serve it (its /models)."
    elsewhere = [p for p, n in candidates if p not in configured and price_for_call(provider=p, model=n) is not None]
    if elsewhere:
        message += f" `{model}` is priced for {elsewhere[0]}, which is not set up here: {_setup_needed(elsewhere[0])}."
    raise NotFound(f"{message} To call another model, {HOW_TO_PRICE}.",
                   code="model_not_found",
                   details=[{"path": "model", "code": "model_not_found", "message": "no configured provider prices it"}])


def _served(provider: str, name: str) -> bool:
    served = provider_models_served(provider)
    return served is None or name in served


def _setup_needed(provider: str) -> str:
    try:
        provider_check(provider)
    except InvalidInput as unusable:
        return unusable.message
    return f"provider {provider!r} needs its API key"


def _last_user_text(messages: list[dict]) -> str | None:
    for message in reversed(messages):
        if message["role"] == "user":
            content = message.get("content")
            if isinstance(content, list):
                return "".join(part.get("text", "") for part in content if isinstance(part, dict))
            return content
    return None


def gateway_admit(*, api_key, model: str) -> tuple[ResolvedModel, dict[str, str]]:
    """The (provider, model) a call asks for (gateway_model), if its key may call it now (gateway.limits.key_admit:
    403, 429), and the x-ratelimit-* headers of the key's limits."""
    resolved = gateway_model(model)
    return resolved, key_admit(api_key=api_key, model=resolved[1])


def gateway_run_request(*, owner, api_key, request: dict, resolved: ResolvedModel, conversation_id=None,
                        instructions: str | None = None) -> GatewayRequest:
    """The run request (workflows.services.runs) for a validated chat completion request, of the (provider, model)
    gateway_admit resolved; `instructions` (the Responses API's) are the run's system prompt, kept apart from its
    messages."""
    provider, model, price = resolved
    if provider not in MEDIA_PROVIDERS:
        for index, message in enumerate(request["messages"]):
            if media_parts(message.get("content")):
                raise InvalidInput(
                    f"provider {provider!r} takes text only: messages.{index}.content has "
                    f"{', '.join(sorted(set(media_parts(message['content']))))} parts",
                    details=[{"path": f"messages.{index}.content", "code": "unsupported_content",
                              "message": f"{provider} takes text parts only"}])
    config = {
        "provider": provider, "model": model, "system_prompt": instructions or None, "enable_memory": False,
        "enable_tools": False,
        "enable_retrieval": False, "temperature": request.get("temperature"),
        "max_tokens": request.get("max_completion_tokens") or request.get("max_tokens"),
        "reply_whole": not request.get("stream"),
    }
    if request.get("tools"):
        config["client_tools"] = request["tools"]
        config["tool_choice"] = request.get("tool_choice")
    params = {name: request[name] for name in PASSED_THROUGH if request.get(name) is not None}
    if provider == "openai" and "response_format" in params:
        # In the request's body as it came: given `response_format`, LangChain's ChatOpenAI parses the reply itself
        # through the SDK, which refuses tools that are not `strict`; a gateway relays, and the client parses.
        params["extra_body"] = {"response_format": params.pop("response_format")}
    if params:
        config["model_params"] = params
    return GatewayRequest(
        owner=owner, api_key=api_key, graph=GATEWAY_GRAPH, config=config, messages=request["messages"],
        message=_last_user_text(request["messages"]), conversation_id=conversation_id,
        prices_read={(provider, model): price})


def answered_model(execution: WorkflowExecution, *, asked: str) -> str:
    """The model an answer names: the one asked for, or, after a fallback, the model name whose deployment
    answered (as OpenAI names the model that answered)."""
    answered = (execution.output_data or {}).get("answered_model")
    return answered if answered and answered != asked.split("/", 1)[-1] else asked


def completion_id(execution_id) -> str:
    return f"chatcmpl-{execution_id.hex}"


def usage_body(execution: WorkflowExecution) -> dict:
    """The call's usage as Chatter stored it on the execution (the sum of its LLM calls): OpenAI's fields, their
    details (cached prompt tokens, reasoning tokens), and the call's cost in USD (`cost`, as OpenRouter and
    LiteLLM read it; exact in the X-Chatter-Cost header)."""
    output = execution.output_data or {}
    return {"prompt_tokens": execution.prompt_tokens, "completion_tokens": execution.completion_tokens,
            "total_tokens": execution.total_tokens,
            "prompt_tokens_details": {"cached_tokens": output.get("cached_prompt_tokens") or 0},
            "completion_tokens_details": {"reasoning_tokens": output.get("reasoning_tokens") or 0},
            "cost": float(execution.cost)}


def _legacy(message: dict, finish_reason: str) -> tuple[dict, str]:
    """A message with tool calls as the legacy `functions` API answers it: its first call as `function_call`."""
    calls = message.pop("tool_calls", None)
    if not calls:
        return message, finish_reason
    return {**message, "function_call": calls[0]["function"]}, "function_call"


def _choices(output: dict, *, legacy: bool) -> list[dict]:
    calls = output.get("tool_calls") or []
    first = {"index": 0, "message": {"role": "assistant", "content": output.get("content") or (None if calls else ""),
                                     **({"tool_calls": calls} if calls else {})},
             "finish_reason": output.get("finish_reason") or "stop", "logprobs": output.get("logprobs")}
    choices = [first, *({**choice, "message": dict(choice["message"])} for choice in output.get("more_choices", []))]
    for choice in choices:
        choice["message"]["refusal"] = None
        if legacy:
            choice["message"], choice["finish_reason"] = _legacy(choice["message"], choice["finish_reason"])
    return choices


def completion_body(execution: WorkflowExecution, *, model: str, legacy: bool = False) -> dict:
    """A finished (completed) gateway run as OpenAI's chat.completion object: a choice per choice asked for (`n`),
    with its logprobs when asked for; `legacy`: tool calls as the legacy `function_call`."""
    output = execution.output_data or {}
    return {
        "id": completion_id(execution.pk), "object": "chat.completion",
        "created": int(execution.created_at.timestamp()), "model": answered_model(execution, asked=model),
        "choices": _choices(output, legacy=legacy),
        "usage": usage_body(execution), "system_fingerprint": output.get("system_fingerprint"),
    }


def gateway_complete(*, request: dict, **run) -> WorkflowExecution:
    """Run a non-streamed call here, to its end."""
    return execution_run_now(gateway_run_request(request=request, **run))


def gateway_stream(*, request: dict, **run) -> tuple[WorkflowExecution, AsyncIterator[dict]]:
    """Start a streamed call on the runner's threads: its execution and its feed. The run goes on whether or not
    the feed is read to its end, so a client that disconnects mid-stream is billed for all the provider did."""
    return execution_start_streamed(gateway_run_request(request=request, **run))


@database_sync_to_async
def _ended(execution_id) -> WorkflowExecution:
    return WorkflowExecution.objects.get(pk=execution_id)


def _tool_call_delta(data: dict, positions: dict) -> dict:
    """One tool-call fragment as OpenAI streams it: the call's id, type and name with its first fragment."""
    key = data.get("index") if data.get("index") is not None else data.get("id")
    first = key not in positions
    index = positions.setdefault(key, len(positions))
    return {"index": index, **({"id": data.get("id") or "", "type": "function"} if first else {}),
            "function": {**({"name": data.get("name") or ""} if first else {}), "arguments": data["arguments"]}}


async def completion_chunks(execution: WorkflowExecution, feed: AsyncIterator[dict], *, model: str,
                            include_usage: bool, legacy: bool = False) -> AsyncIterator[dict]:
    """The run's feed as OpenAI's chat.completion.chunk objects: a role chunk, a chunk per token and per tool-call
    fragment as the provider streamed them, the finish reason (with the reply's logprobs, when asked for) when the
    run ends, the other choices of a call for several (`n`), whole, then (include_usage) the usage as stored; a
    run that fails ends the stream with an error object. `legacy`: tool calls as the legacy `function_call`."""
    created = int(time.time())
    positions: dict = {}  # the provider's index of a tool call (or its id) → its index in this stream, from 0
    streamed_text = False
    reply = {"model": model, "system_fingerprint": None}  # as the reply's first token, or its end, tells them

    def chunk(delta: dict | None, finish_reason: str | None = None, *, index: int = 0, logprobs=None,
              **extra) -> dict:
        choices = [] if delta is None else [{"index": index, "delta": delta, "logprobs": logprobs,
                                              "finish_reason": finish_reason}]
        return {"id": completion_id(execution.pk), "object": "chat.completion.chunk", "created": created,
                "model": reply["model"], "system_fingerprint": reply["system_fingerprint"], "choices": choices,
                **({"usage": None} if include_usage else {}), **extra}

    def told(said: dict) -> None:
        if said.get("model") and said["model"] != model.split("/", 1)[-1]:
            reply["model"] = said["model"]
        reply["system_fingerprint"] = said.get("system_fingerprint") or reply["system_fingerprint"]

    def calls_delta(calls: list[dict]) -> dict:
        if legacy:
            return {"function_call": calls[0]["function"]} if calls and calls[0]["index"] == 0 else {}
        return {"tool_calls": calls}

    opened = False  # the role chunk goes first, once the reply (or the run's end) says which model answered
    try:
        async for envelope in feed:
            event = envelope["event"]
            if event == "workflow_completed":
                ended = await _ended(execution.pk)
                told({"model": (ended.output_data or {}).get("answered_model"),
                      "system_fingerprint": (ended.output_data or {}).get("system_fingerprint")})
            elif event == "token":
                told(envelope["data"].get("reply") or {})
            if not opened and event in ("token", "tool_call_delta", "workflow_completed"):
                opened = True
                yield chunk({"role": "assistant", "content": ""})
            if event == "token":
                streamed_text = True
                yield chunk({"content": envelope["data"]["text"]})
            elif event == "tool_call_delta":
                delta = calls_delta([_tool_call_delta(envelope["data"], positions)])
                if delta:
                    yield chunk(delta)
            elif event == "workflow_completed":
                first, *others = _choices(ended.output_data or {}, legacy=False)
                if first["message"]["content"] and not streamed_text:  # a reply that came whole (`n` > 1)
                    yield chunk({"content": first["message"]["content"]})
                calls = first["message"].get("tool_calls") or []
                if calls and not positions:  # a provider that gave them whole: whole here too
                    yield chunk(calls_delta([{"index": index, **call} for index, call in enumerate(calls)]))
                finish = "function_call" if legacy and calls else first["finish_reason"]
                yield chunk({}, finish, logprobs=first["logprobs"])
                for other in others:
                    message, finish = _legacy(other["message"], other["finish_reason"]) if legacy else (
                        other["message"], other["finish_reason"])
                    yield chunk(message, index=other["index"], logprobs=other["logprobs"])
                    yield chunk({}, finish, index=other["index"])
                if include_usage:
                    yield chunk(None, usage=usage_body(ended))
            elif event in ("workflow_failed", "workflow_cancelled"):
                yield execution_failure(await _ended(execution.pk), model=model).body
    finally:
        await feed.aclose()


def _legacy_logprobs(logprobs: dict | None, *, offset: int = 0) -> dict | None:
    """Chat logprobs in the legacy completions' shape: tokens, their logprobs, the top ones as {token: logprob}, and
    each token's offset in the text."""
    if not logprobs or not logprobs.get("content"):
        return None
    entries, offsets = logprobs["content"], []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry["token"])
    return {"tokens": [entry["token"] for entry in entries],
            "token_logprobs": [entry["logprob"] for entry in entries],
            "top_logprobs": [{top["token"]: top["logprob"] for top in entry.get("top_logprobs") or []}
                             for entry in entries],
            "text_offset": offsets}


def text_completion_body(chat: dict, *, echo: str = "") -> dict:
    """A chat.completion (completion_body) as the legacy text_completion it answers; `echo`: the prompt, echoed."""
    return {"id": chat["id"].replace("chatcmpl-", "cmpl-", 1), "object": "text_completion",
            "created": chat["created"], "model": chat["model"],
            "choices": [{"index": choice["index"], "text": echo + (choice["message"]["content"] or ""),
                         "logprobs": _legacy_logprobs(choice["logprobs"], offset=len(echo)),
                         "finish_reason": choice["finish_reason"]} for choice in chat["choices"]],
            "usage": chat["usage"]}


async def text_completion_chunks(chunks: AsyncIterator[dict], *, echo: str = "") -> AsyncIterator[dict]:
    """Chat completion chunks (completion_chunks) as the legacy text_completion chunks; `echo`: the prompt first."""
    opening = True
    try:
        async for chunk in chunks:
            if "error" in chunk:
                yield chunk
                continue
            choices = [{"index": choice["index"], "text": (choice["delta"] or {}).get("content") or "",
                        "logprobs": _legacy_logprobs(choice["logprobs"]), "finish_reason": choice["finish_reason"]}
                       for choice in chunk["choices"]]
            if opening:  # the chat stream's first chunk: the assistant's role, no text
                opening = False
                if not echo:
                    continue
                choices[0]["text"] = echo
            elif chunk["choices"] and not any(c["text"] or c["finish_reason"] or c["logprobs"] for c in choices):
                continue  # a chunk of nothing a text completion has (a tool call)
            yield {"id": chunk["id"].replace("chatcmpl-", "cmpl-", 1), "object": "text_completion",
                   "created": chunk["created"], "model": chunk["model"], "choices": choices,
                   **({"usage": chunk["usage"]} if "usage" in chunk else {})}
    finally:
        await chunks.aclose()


# --- the Responses API (POST /v1/responses): its items as chat messages, a run as its response -------------------
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
    serializer = ChatCompletionSerializer(data=chat)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


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
                fragment = _tool_call_delta(data, positions)
                if "id" in fragment:  # a call's first fragment
                    for added in add(_call_item(fragment["id"], fragment["function"]["name"], "",
                                                status="in_progress")):
                        yield added
                if fragment["function"]["arguments"]:
                    yield delta(fragment["function"]["arguments"])
            elif kind == "workflow_completed":
                ended = await _ended(execution.pk)
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
                ended = await _ended(execution.pk)
                if open_item is not None:
                    open_item["status"] = "incomplete"
                said = execution_failure(ended, model=model).body["error"]
                error = {"code": said["code"], "message": said["message"]}
                yield event("response.failed", response=_response(
                    ended, model=model, request=request, status="failed", output=items,
                    usage=_response_usage(ended), error=error))
    finally:
        await feed.aclose()
