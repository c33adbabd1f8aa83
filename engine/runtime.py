"""What a running graph can touch: its config, its limits, and the hooks that record it.

The engine package knows nothing of the database or HTTP. `RunHooks` (engine.hooks) is the seam: the
workflows services implement it with rows and events; a bare run (benchmarks) uses `NullHooks`.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Sequence

from langchain_core.messages import AIMessage, BaseMessage

from engine.chat_messages import choice_as_openai, content_text, tool_choice_for
from engine.deadlines import call_deadline
from engine.retries import retry_wait_s
from engine.errors import LimitExceeded, OwnWorkFailed, ProviderError, RunCancelled, RunError
from engine.graph import Node
from engine.hooks import Attempt, CallStarted, LLMCall, RunHooks
from engine.provider_failures import deployment_fault, provider_failure, upstream_facts
from engine.providers import USAGE_REPORTED_IN_PARTS, RawUsageReports, chat_model, embeddings_create, usage_copied_into
from engine.reranking import rerank_create
from engine.routing import (
    Deployment,
    Skipped,
    deployment_cool_down,
    deployment_tokens_count,
    route_deployments,
    routing_table,
)
from engine.settings import settings
from engine.streamed_reply import StreamedReply
from engine.tools import TOOLS
from engine.usage import (
    Price,
    Usage,
    estimate_input_tokens,
    estimate_prompt_tokens,
    estimate_rerank_tokens,
    estimate_tokens,
    priced,
    streamed_so_far,
    usage_cut_short,
    usage_from_embeddings,
    usage_from_message,
    usage_from_openai,
    usage_from_rerank,
)


BACK_OFF_POLL_S = 0.25  # how soon a cancel ends a retry's back-off


class RunInterrupted(RunError):
    """The run was ended from outside while it still ran (the recovery sweep found its worker gone or its
    time long past), or ends so now: its usage so far is kept, error_type `interrupted`."""

    error_type = "interrupted"
    code = "interrupted"


@dataclass(frozen=True)
class _Target:
    """Where one attempt of a call goes: the provider's own server (deployment None), or a deployment."""
    provider: str  # what the call is recorded and priced under
    model: str  # the model name asked for (priced by it)
    price: Price | None  # its price, read as the target is chosen (RunContext._target)
    deployment: Deployment | None = None


@dataclass
class RunContext:
    config: dict
    hooks: RunHooks
    started: float = field(default_factory=time.monotonic)
    usage: Usage = field(default_factory=Usage)
    llm_calls: int = 0
    tool_calls: int = 0
    # Text streamed by the model call in progress: the partial reply kept when a run ends early.
    partial_text: str = ""
    # Parallel branches run on LangGraph's threads: the run's counters change one at a time.
    counting: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    # --- limits and cancellation: checked at every node and token boundary ---------------------------
    def checkpoint(self) -> None:
        if self.hooks.cancel_requested():
            raise RunCancelled("the run was cancelled")
        elapsed = time.monotonic() - self.started
        if elapsed > self.config["timeout_s"]:
            self._exceed("timeout_s", self.config["timeout_s"])

    def backed_off(self, seconds: float) -> None:
        """Wait `seconds` before a call is made again, checking for a cancel every BACK_OFF_POLL_S (a Retry-After may
        be a minute)."""
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0:
            time.sleep(min(left, BACK_OFF_POLL_S))
            if self.hooks.cancel_requested():
                raise RunCancelled("the run was cancelled")

    def remaining_s(self) -> float:
        return max(0.1, self.config["timeout_s"] - (time.monotonic() - self.started))

    @property
    def deadline(self) -> float:
        """When the run's time is up (a time.monotonic() reading)."""
        return self.started + self.config["timeout_s"]

    def _call_timeout_s(self, limit_s: float | None = None) -> float:
        """How long one provider request may wait (`limit_s`: a deployment's own timeout), at most what is left of the
        run. Its retries are held to the run's deadline too (engine.deadlines)."""
        return min(self.remaining_s(), limit_s or settings.provider_timeout_s)

    def _exceed(self, limit: str, value: Any) -> None:
        self.hooks.limit_exceeded(limit, value)
        raise LimitExceeded(limit, value)

    def tool_budget_left(self) -> int:
        return self.config["max_tool_calls"] - self.tool_calls

    def tool_cost_add(self, cost: Decimal) -> None:
        """A priced tool call's cost counts in the run's usage, as an LLM call's does."""
        if cost:
            with self.counting:
                self.usage += Usage(cost=cost)

    def claim_tool_calls(self, count: int, *, node_limit: int) -> None:
        with self.counting:
            if self.tool_calls + count <= min(self.config["max_tool_calls"], node_limit):
                self.tool_calls += count
                return
        self._exceed("max_tool_calls", min(self.config["max_tool_calls"], node_limit))

    # --- the one LLM call path ------------------------------------------------------------------------
    def call_model(self, node: Node, prompt: Sequence[BaseMessage], *,
                   tools: Sequence[str | dict] = ()) -> AIMessage:
        """`tools`: what the model may call, built-ins by name and MCP tools as OpenAI function schemas."""
        cfg = node.config
        provider = cfg.get("provider") or self.config["provider"]
        model_name = cfg.get("model") or (self.config["model"] if provider == self.config["provider"] else None)
        model_name = model_name or settings.provider_default_models[provider]
        raw_usage = RawUsageReports()
        max_tokens = _first(cfg.get("max_tokens"), self.config["max_tokens"])
        self.partial_text = ""
        streamed = StreamedReply(usage_in_parts=provider in USAGE_REPORTED_IN_PARTS, raw_usage=raw_usage)
        prompt_tokens = estimate_prompt_tokens(prompt)
        # Before the call waits: what it sends is known (and written with the run's write before it waits).
        temperature = _first(cfg.get("temperature"), self.config["temperature"])
        choices = (self.config.get("model_params") or {}).get("n") or 1
        self.hooks.model_call_started(node, CallStarted(provider, model_name, prompt_tokens, streamed.so_far,
                                                        max_tokens, temperature=temperature, choices=choices))
        skipped: list[Skipped] = []
        faults: list[tuple[int | None, float]] = []  # the failed attempts' statuses and cooldowns
        targets = self._targets(provider, model_name, skipped)
        target = next(targets, None)
        last_failure = None
        retries = 0  # the engine's own, of a provider's own server (engine.retries)
        while target is not None:
            self.checkpoint()
            deployment = target.deployment
            timeout_s = self._call_timeout_s(deployment.timeout_s if deployment else None)
            chat = model = chat_model(
                provider=target.provider,
                model=target.model,
                temperature=temperature,
                max_tokens=max_tokens,
                timeout_s=timeout_s,
                deployment=deployment,
            )
            params = dict(self.config.get("model_params") or {})
            if tools or self.config.get("client_tools"):  # the gateway's client tools: the client runs them
                from langchain_core.runnables import RunnableBinding  # (loads LangSmith: not at a process's start)

                model = self._tools_bound(chat, tools, deployment.provider if deployment else provider)
                # The call answered whole sends what the binding would: the tools in the provider's own shape (a
                # model that holds its tools itself, the local one, is called as it is).
                if isinstance(model, RunnableBinding):
                    params.update(model.kwargs)
                else:
                    chat = model
            if self.config.get("model_params"):
                model = model.bind(**self.config["model_params"])
            streamed.usage_in_parts = (deployment.provider if deployment else provider) in USAGE_REPORTED_IN_PARTS
            started = time.monotonic()
            try:
                # Whole, in one response: a reply the client asked for whole (the gateway's, not streamed), and
                # `n` > 1 choices (LangChain streams one).
                if self.config.get("reply_whole") or (params.get("n") or 1) > 1:
                    reply = self._call_whole(node, chat, prompt, params, target, started, raw_usage)
                    self._attempted(node, target, started)
                    return reply
                with usage_copied_into(raw_usage), call_deadline(self.deadline):
                    for chunk in model.stream(list(prompt)):
                        streamed.add(chunk)
                        text = content_text(chunk.content)  # a list of parts when the model has tools (Anthropic)
                        try:  # the run's own work between the chunks: not the provider's failure when it fails
                            if text:
                                first = not self.partial_text
                                self.partial_text += text
                                self.hooks.token(node, text, message_id=streamed.message_id, reply=_answered(
                                    target, raw_usage.system_fingerprint) if first else None)
                            for delta in chunk.tool_call_chunks:  # passed on as they come, like text (the gateway's)
                                self.hooks.tool_call_delta(node, delta, message_id=streamed.message_id)
                            self.checkpoint()
                        except RunError:
                            raise
                        except Exception as exc:  # noqa: BLE001 - its hooks' (a write, an event): the run's own
                            raise OwnWorkFailed(exc) from exc
                if not streamed.finished:  # a stream that ended without saying why was cut short (the provider's)
                    raise ProviderError(f"{target.provider} stream ended before its finish reason",
                                        error_type="provider_error", upstream=upstream_facts(status=None))
            except RunError as exc:
                self._record_cut_short(node, target, prompt, prompt_tokens, streamed, started)
                self._attempted(node, target, started, error=exc)
                raise
            except Exception as exc:  # noqa: BLE001 - any provider/client failure ends the run, or this attempt
                failure = provider_failure(exc, provider=deployment.provider if deployment else provider,
                                           timeout_s=timeout_s, mid_stream=bool(streamed.chunks),
                                           answered_error=raw_usage.error)
                run_timed_out = failure.error_type == "provider_timeout" and time.monotonic() >= self.deadline
                wait = None if deployment is not None or streamed.chunks else retry_wait_s(
                    exc, provider=target.provider, retries_taken=retries, time_left=self.deadline - time.monotonic())
                if wait is not None:  # nothing received: made again, with what is left of the run
                    retries += 1
                    self.backed_off(wait)
                    continue
                # A request that waited out what was left of the run is the run's end, not the deployment's fault.
                fault = deployment_fault(exc) if deployment is not None and not run_timed_out else None
                faults += self._attempted(node, target, started, error=failure, fault=fault)
                # Another deployment is tried only when this one answered nothing yet: nothing was streamed to the
                # client and nothing was consumed (a reply that broke off is the call, recorded as such).
                if fault is not None and not streamed.chunks:
                    last_failure = failure
                    target = next(targets, None)
                    if target is not None:
                        continue
                    raise self._routes_exhausted(model_name, failure, skipped, faults) from exc
                self._record_cut_short(node, target, prompt, prompt_tokens, streamed, started)
                if run_timed_out:
                    # The request waited out what was left of the run: the run's timeout is what ended it.
                    self._exceed("timeout_s", self.config["timeout_s"])
                raise failure from exc
            self._attempted(node, target, started)
            reply, call = self._record_reply(node, target, prompt, streamed, started)
            if deployment is not None:
                deployment_tokens_count(deployment, call.usage.total_tokens)
            return reply
        raise self._routes_exhausted(model_name, last_failure, skipped, faults)

    def _tools_bound(self, chat, tools: Sequence[str | dict], provider: str):
        """`chat` bound to the node's tools (built-ins by name), or else to the client's tools and its tool_choice, as
        the provider's chat model converts them (engine.chat_messages.tool_choice_for)."""
        if tools:
            return chat.bind_tools([TOOLS[tool] if isinstance(tool, str) else tool for tool in tools])
        choice = tool_choice_for(provider, self.config.get("tool_choice"))
        return chat.bind_tools(self.config["client_tools"], **({"tool_choice": choice} if choice else {}))

    def _targets(self, provider: str, model_name: str, skipped: list[Skipped]):
        """Where the call goes, in the order to try: the provider's own server; or, for a model the deployments
        file routes, its deployments (engine.routing), then its fallbacks'."""
        table = routing_table()
        route = table.route_for(provider, model_name) if table is not None else None
        if route is None:
            yield self._target(provider, model_name)
            return
        for deployment in route_deployments(route, table=table, skipped=skipped):
            yield self._target(table.routes[deployment.route].provider, deployment.route, deployment)

    def _target(self, provider: str, model: str, deployment: Deployment | None = None) -> _Target:
        """A call's target with its price, read before the call waits: the call's end (or its break) then books its
        usage asking the hooks for nothing, so what they read being out of reach by then (a database down) never
        loses a call that was made."""
        return _Target(provider, model, self.hooks.price(provider, model), deployment)

    def _attempted(self, node: Node, target: _Target, started: float, *, error: Exception | None = None,
                   fault: tuple | None = None) -> list[tuple[int | None, float]]:
        """A routed call's attempt, recorded on the run; a deployment at fault is cooled down for every process.
        Returns [(its HTTP status, its cooldown)] for a deployment cooled down, else []."""
        deployment = target.deployment
        if deployment is None:
            return []
        status, retry_after = fault if fault is not None else (None, None)
        cooldown = deployment_cool_down(deployment, table=routing_table(), retry_after_s=retry_after) \
            if fault is not None else None
        self.hooks.provider_attempted(node, Attempt(
            deployment=deployment.label, model=target.model, provider=deployment.provider, ok=error is None,
            duration_ms=int((time.monotonic() - started) * 1000),
            error_type=getattr(error, "error_type", "") or ("error" if error is not None else ""),
            error=str(getattr(error, "message", "") or error or "")[:2000], status_code=status, cooldown_s=cooldown))
        return [(status, cooldown)] if cooldown is not None else []

    @staticmethod
    def _routes_exhausted(model_name: str, failure: ProviderError | None, skipped: list[Skipped],
                          faults: list[tuple[int | None, float]]) -> ProviderError:
        """The call's end when no deployment answered: every one left out (`provider_unavailable`), or every one tried
        failed. Its upstream facts say when one may take a call again (the shortest cooldown) where the deployments
        are rate limited or all left out: a wait, not a failure; else they are the last failure's."""
        left_out = "; ".join(f"{s.deployment.label} {s.why}" for s in skipped)
        shortest = min([s.retry_after_s for s in skipped] + [cooldown for _, cooldown in faults], default=None)
        if failure is None:
            return ProviderError(f"no deployment of {model_name!r} (or its fallbacks) can take the call now: "
                                 f"{left_out}", error_type="provider_unavailable",
                                 upstream={"status": None, "timed_out": False, "retry_after_s": shortest,
                                           "error": None, "unavailable": True})
        upstream = failure.upstream
        if any(status == 429 for status, _ in faults):
            upstream = {"status": 429, "timed_out": False, "retry_after_s": shortest, "error": None}
        return ProviderError(f"every deployment of {model_name!r} (and its fallbacks) failed; the last: "
                             f"{failure.message}" + (f" (left out: {left_out})" if left_out else ""),
                             error_type=failure.error_type, upstream=upstream)

    def _call_whole(self, node, chat, prompt, params, target: _Target, started, raw: RawUsageReports) -> AIMessage:
        """A call answered in one response (not streamed): the first choice is the reply, any others (the gateway's
        `n` > 1) ride in its metadata, OpenAI-shaped; the usage the provider reported counts them all. Its text
        reaches the run's watchers as one token event. Tool calls keep their arguments as the model sent them
        (where the streamed reply keeps them: engine.chat_messages.tool_calls_as_sent)."""
        with usage_copied_into(raw), call_deadline(self.deadline):
            result = chat.generate([list(prompt)], **params)
        messages = [generation.message for generation in result.generations[0]]
        if not messages:  # an answer with no choice: what it reported is recorded, and the call failed
            self._record(node, target, (result.llm_output or {}).get("model_name") or target.model,
                         usage_from_openai((result.llm_output or {}).get("token_usage") or {}), started)
            raise ProviderError(f"{target.provider} call answered no choice", error_type="provider_error",
                                upstream=upstream_facts(status=None))
        for index, (message, sent) in enumerate(zip(messages, raw.tool_calls)):
            if sent and (message.tool_calls or message.invalid_tool_calls):
                messages[index] = message.model_copy(
                    update={"additional_kwargs": {**message.additional_kwargs, "tool_calls": sent}})
        first, *others = messages
        # What the answer said of itself (its model, its system_fingerprint), which LangChain copies into the reply's
        # metadata only when there is one choice.
        metadata = {**(result.llm_output or {}), **first.response_metadata}
        if others:
            metadata["more_choices"] = [choice_as_openai(message, index=index)
                                        for index, message in enumerate(others, start=1)]
        reply = first.model_copy(update={"response_metadata": metadata})
        stopped = None  # the run stopped by its text (a hard budget's bound): raised once the call is recorded
        text = content_text(reply.content)
        if text:
            self.partial_text = text
            try:
                self.hooks.token(node, text, message_id=reply.id,
                                 reply=_answered(target, metadata.get("system_fingerprint")))
            except RunError as exc:
                stopped = exc
            except Exception as exc:  # noqa: BLE001 - its hooks' (a write, an event): the run's own
                stopped = OwnWorkFailed(exc)
        usage = usage_from_message(reply, prompt=prompt, raw=(result.llm_output or {}).get("token_usage"))
        if target.deployment is not None:
            deployment_tokens_count(target.deployment, usage.total_tokens)
        try:
            self._record(node, target, metadata.get("model_name") or target.model, usage, started,
                         message_id=reply.id, finish_reason=metadata.get("finish_reason") or "")
        except RunError:
            if stopped is None:
                raise
        if stopped is not None:
            raise stopped
        return reply

    def embed(self, node: Node, inputs: list, *, dimensions: int | None = None, provider: str | None = None,
              model: str | None = None) -> list[list[float]]:
        """One embeddings call of the run's provider and model (or `provider` and `model`: a collection's, for a
        query searched), recorded like every LLM call: its usage (the tokens read, no completion) priced by the one
        usage path."""
        provider, model_name = provider or self.config["provider"], model or self.config["model"]
        prompt_tokens = estimate_input_tokens(inputs)

        def call(target: _Target, deployment, timeout_s: float) -> tuple[list[list[float]], str, Usage]:
            embedded = embeddings_create(provider=target.provider, model=target.model, inputs=inputs,
                                         dimensions=dimensions, timeout_s=timeout_s, deployment=deployment)
            return embedded.vectors, embedded.model, usage_from_embeddings(embedded.usage, estimate=prompt_tokens)

        return self._call_answered_whole(node, provider, model_name, prompt_tokens, call, kind="embedding",
                                         operation="embeddings")

    def rerank(self, node: Node, query: str, documents: list[str], *, provider: str, model: str,
               top_n: int) -> list[tuple[int, float]]:
        """One rerank call (a provider's /rerank): the `top_n` of `documents` most relevant to `query`, as (index,
        relevance score), most relevant first; recorded like every LLM call, of kind `rerank` (the tokens the server
        read, no completion)."""
        estimate = estimate_rerank_tokens(query, documents)

        def call(target: _Target, deployment, timeout_s: float) -> tuple[list[tuple[int, float]], str, Usage]:
            reranked = rerank_create(provider=target.provider, model=target.model, query=query, documents=documents,
                                     top_n=top_n, timeout_s=timeout_s, deployment=deployment)
            return reranked.scores, reranked.model, usage_from_rerank(reranked.usage, estimate=estimate)

        return self._call_answered_whole(node, provider, model, estimate, call, kind="rerank", operation="rerank")

    def _call_answered_whole(self, node: Node, provider: str, model_name: str, prompt_tokens: int, call, *,
                             kind: str, operation: str):
        """A call whose answer comes whole (embeddings, rerank) on the model's deployments in turn (or its provider's
        own server): `call(target, deployment, timeout_s)` -> (result, the model the server reported, its Usage),
        recorded as an LLM call of `kind` and returned; the last failure raised when none answered."""
        self.hooks.model_call_started(node, CallStarted(provider, model_name, prompt_tokens,
                                                        lambda: streamed_so_far(None), 0, operation=operation))
        skipped: list[Skipped] = []
        faults: list[tuple[int | None, float]] = []
        failure = None
        for target in self._targets(provider, model_name, skipped):
            self.checkpoint()
            deployment = target.deployment
            timeout_s = self._call_timeout_s(deployment.timeout_s if deployment else None)
            started = time.monotonic()
            try:
                with call_deadline(self.deadline):
                    result, reported_model, usage = call(target, deployment, timeout_s)
            except Exception as exc:  # noqa: BLE001 - any provider/client failure ends the run, or this attempt
                failure = provider_failure(exc, provider=deployment.provider if deployment else provider,
                                           timeout_s=timeout_s)
                run_timed_out = failure.error_type == "provider_timeout" and time.monotonic() >= self.deadline
                fault = deployment_fault(exc) if deployment is not None and not run_timed_out else None
                faults += self._attempted(node, target, started, error=failure, fault=fault)
                if fault is not None:  # a call answered whole: nothing was consumed, try the next
                    continue
                if run_timed_out:
                    self._exceed("timeout_s", self.config["timeout_s"])
                raise failure from exc
            self._attempted(node, target, started)
            self._record(node, target, reported_model, usage, started, kind=kind)
            if deployment is not None:
                deployment_tokens_count(deployment, usage.total_tokens)
            return result
        raise self._routes_exhausted(model_name, failure, skipped, faults)

    def call_target(self, provider: str, model: str) -> _Target:
        """Where a call made by code Chatter does not drive goes, its price read as the call starts, as every call's
        is (_target): call_recorded then books its end reading nothing."""
        return self._target(provider, model)

    def call_recorded(self, node: Node, *, reported_model: str, usage: Usage, started: float,
                      target: _Target | None = None, provider: str = "", requested_model: str = "",
                      message_id: str | None = None, finish_reason: str = "") -> LLMCall:
        """A call made by code Chatter does not drive (a Python graph's chat models, seen through LangChain's
        callbacks: engine.python_graphs; the gateway's pass-through): priced and recorded like every other call, at
        its `target` (call_target, as it started), or else at its provider's `requested_model`."""
        return self._record(node, target or self._target(provider, requested_model), reported_model, usage, started,
                            message_id=message_id, finish_reason=finish_reason)

    def _record_reply(self, node, target: _Target, prompt, streamed, started) -> tuple[AIMessage, LLMCall]:
        reply = streamed.reply()
        usage = usage_from_message(reply, prompt=prompt, raw=streamed.raw_usage.report_for(reply.usage_metadata))
        return reply, self._record(node, target, streamed.model_name or target.model, usage, started,
                                   message_id=reply.id,
                                   finish_reason=(reply.response_metadata or {}).get("finish_reason") or "")

    def _record_cut_short(self, node, target: _Target, prompt, prompt_tokens, streamed, started) -> None:
        """A call that ended early still costs what it consumed: the provider's own report when one arrived
        before the break; else, once the server answered at all (it read the prompt), an estimate over the prompt
        and whatever it streamed, text or tool-call fragments (flagged); else (no answer) nothing."""
        if streamed.usage:
            self._record_reply(node, target, prompt, streamed, started)
            return
        if not streamed.chunks:
            return
        usage = usage_cut_short(prompt_tokens=prompt_tokens, streamed=streamed.so_far())
        self._record(node, target, streamed.model_name or target.model, usage, started)

    def _record(self, node, target: _Target, reported_model, usage, started, message_id: str | None = None,
                finish_reason: str = "", kind: str = "chat") -> LLMCall:
        # Priced by the model asked for (its price let the run start; a server may report another name, e.g. a
        # llama.cpp server its model file's path), as recompute_costs re-prices it; a routed call by the model name
        # whose deployment served it (a fallback's own).
        usage = priced(usage, target.price)
        call = LLMCall(target.provider, reported_model, target.model, usage, int((time.monotonic() - started) * 1000),
                       deployment=target.deployment.label if target.deployment else "", message_id=message_id or "",
                       finish_reason=finish_reason, kind=kind)
        with self.counting:
            self.usage += usage
            self.llm_calls += 1
            total_tokens = self.usage.total_tokens
        self.hooks.llm_called(node, call)
        limit = self.config["max_total_tokens"]
        if limit is not None and total_tokens > limit:
            self._exceed("max_total_tokens", limit)
        return call


def _answered(target: _Target, system_fingerprint: str | None) -> dict:
    """What a reply's first token says of the reply: the model name that answered, its upstream's fingerprint."""
    return {"model": target.model, **({"system_fingerprint": system_fingerprint} if system_fingerprint else {})}


def _first(*values):
    return next((v for v in values if v is not None), None)
