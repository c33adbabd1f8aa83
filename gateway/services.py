"""The OpenAI-compatible gateway (/v1/chat/completions, /v1/responses, /v1/completions, /v1/embeddings, /v1/models):
a call is a run like any other.

Each chat call (a Responses or legacy completions call is read as one) runs, through workflows' one run path (run_plan → run_write → the runner with its recorder), a built-in
one-node graph (start → model → end) whose model node takes the request's messages, tools and parameters: so a
call has its execution (`workflow_type = "gateway"`), its node, its LLM call with the provider's usage priced by
the one usage path, its events and audit rows, and (with X-Chatter-Conversation) the exchange in a conversation
with its aggregates. An embeddings call runs the embeddings graph (start → embedding → end) the same way. This
module turns an OpenAI request into a run request and a run into OpenAI's answer (a Responses API's request and
answer: gateway.responses)."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, AsyncIterator, NamedTuple

from channels.db import database_sync_to_async

from analytics.selectors import priced_models
from core.errors import InvalidInput, NotFound
from engine.embeddings_local import LOCAL_EMBEDDING_MODELS
from engine.embeddings_minilm import MINILM_MODEL
from engine.providers import (
    PROVIDERS,
    provider_check,
    provider_models_served,
    providers_configured,
)
from engine.routing import routing_table
from gateway.errors import execution_failure
from gateway.limits import key_admit, key_models_allowed
from gateway.chat_request import media_parts
from workflows.models import WorkflowExecution
from workflows.pricing import HOW_TO_PRICE, price_for_call
from workflows.services.run_requests import GatewayRequest
from workflows.services.runs import execution_run_now, execution_start_answered

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
# The models known to embed only (the offline `local` provider's): not callable as chat models.
EMBEDDING_ONLY = frozenset(("local", name) for name in (*LOCAL_EMBEDDING_MODELS, MINILM_MODEL))
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


def gateway_model_list(api_key=None) -> list[dict]:
    """The models this installation can call, OpenAI-shaped: the model names its deployments file routes (each
    served by its deployments, then its fallbacks'), then those of a configured provider, served by its server (the
    local models; an OpenAI-compatible server's own /models); each priced. A server that cannot say what it serves
    is taken to serve its provider's priced models (analytics.selectors.priced_models). With `api_key`, those of
    them the key may call (its `allowed_models`)."""
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
    allowed = key_models_allowed(api_key)
    return [{"id": name, "object": "model", "created": int(since.timestamp()), "owned_by": provider}
            for index, (provider, name, since) in enumerate(models)
            if (index < len(routed) or name not in routed) and (allowed is None or name in allowed)]


def gateway_model_get(model: str, api_key=None) -> dict:
    """One model of gateway_model_list(api_key), by id (`provider/model` too); else the 404 gateway_model explains
    (a model the key may not call is one it cannot see)."""
    provider, name, _ = gateway_model(model, api_key=api_key, only_allowed=True)
    listed = next(entry for entry in gateway_model_list() if (entry["owned_by"], entry["id"]) == (provider, name))
    return {**listed, "id": model}


class ResolvedModel(NamedTuple):
    """The provider and model a call goes to, and the price in force read to know it is priced."""
    provider: str
    model: str
    price: ModelPrice


def gateway_model(model: str, *, api_key=None, only_allowed: bool = False) -> ResolvedModel:
    """The provider and model for a requested model: `provider/model`, or the first configured provider that prices
    `model`. A model no configured provider prices is a 404 model_not_found that says which models there are (those
    `api_key` may call), why a priced one cannot be called (its provider is not set up) and how to price another;
    `only_allowed` (GET /v1/models/{model}), so is one `api_key` may not call (a call of it is a 403: key_admit).
    A name with spaces around it is no model's, as OpenAI answers it: read trimmed, it passed a key's allow-list and a
    price while the pass-through sent it upstream as it came, where the upstream refused it."""
    if model != model.strip():
        raise NotFound(f"The model `{model}` does not exist or you do not have access to it: its name has spaces "
                       f"around it (`{model.strip()}` has none).", code="model_not_found",
                       details=[{"path": "model", "code": "model_not_found", "message": "spaces around the name"}])
    provider, _, name = model.partition("/")
    table = routing_table()
    route = table.routes.get(name if name else model) if table is not None else None
    allowed = key_models_allowed(api_key) if only_allowed else None
    if route is not None and (not name or provider == route.provider) and (allowed is None or route.name in allowed):
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
        if provider in configured and _served(provider, name) and (allowed is None or name in allowed) and \
                (price := price_for_call(provider=provider, model=name)) is not None:
            return ResolvedModel(provider, name, price)
    not_served = [p for p, n in candidates if p in configured and not _served(p, n)
                  and price_for_call(provider=p, model=n) is not None]
    callable_ = [entry["id"] for entry in gateway_model_list(api_key)]
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
    resolved = gateway_model(model, api_key=api_key)
    return resolved, key_admit(api_key=api_key, model=resolved[1])


def gateway_run_request(*, owner, api_key, request: dict, resolved: ResolvedModel, conversation_id=None,
                        instructions: str | None = None) -> GatewayRequest:
    """The run request (workflows.services.runs) for a validated chat completion request, of the (provider, model)
    gateway_admit resolved; `instructions` (the Responses API's) are the run's system prompt, kept apart from its
    messages."""
    provider, model, price = resolved
    if (provider, model) in EMBEDDING_ONLY:
        said = f"`{model}` is an embeddings model, not a chat model: call it on /v1/embeddings"
        raise InvalidInput(said, details=[{"path": "model", "code": "not_a_chat_model", "message": said}])
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


def gateway_stream(*, request: dict, **run) -> tuple[WorkflowExecution, AsyncIterator[dict] | None]:
    """Start a streamed call on the runner's threads: its execution and its feed, once the reply's first word
    came; no feed when the call failed before it (the run as it ended, answered with its status as OpenAI's API
    and LiteLLM's proxy answer it, so a client retries a 429 and waits out its Retry-After). The run goes on whether
    or not the feed is read to its end, so a client that disconnects mid-stream is billed for all the provider
    did."""
    return execution_start_answered(gateway_run_request(request=request, **run))


@database_sync_to_async
def execution_ended(execution_id) -> WorkflowExecution:
    """The run as it ended (read when its feed says so)."""
    return WorkflowExecution.objects.get(pk=execution_id)


def tool_call_fragment(data: dict, positions: dict) -> dict:
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
                ended = await execution_ended(execution.pk)
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
                delta = calls_delta([tool_call_fragment(envelope["data"], positions)])
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
                yield execution_failure(await execution_ended(execution.pk), model=model).body
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
                        # (a choice's logprobs come whole, with its end: their offsets count from the echoed prompt's)
                        "logprobs": _legacy_logprobs(choice["logprobs"], offset=len(echo)),
                        "finish_reason": choice["finish_reason"]}
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
