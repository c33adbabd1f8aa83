"""The pass-through of /v1/chat/completions to an upstream that speaks OpenAI's protocol (the `openai` provider's
server, not routed; docs/api/gateway.md#a-call-is-a-run): the body goes on as the client sent it and the answer
comes back as the upstream gave it, a stream's chunks relayed as they arrive. No graph runs and no client library is
involved; the call is still a run with the records of any other gateway call, written by the run's own recorder.

A call is three steps on the request's thread: `passthrough_open` (the run planned and its start recorded), the
upstream call (on the gateway's upstream loop, gateway.upstream: the thread waits for a call answered whole; a
stream's chunks are relayed from there to the server's loop as they arrive), then `_ended` (the LLM call and the
run's end; a stream's once its upstream has ended). A call answered whole with no hard budget over it is one write,
after the upstream's answer: its run, start, LLM call and end in one transaction. A stream, or a call a hard budget
reserves for, is two: its run with its reservation, start and model call marked as started before the upstream is
asked (what a crash mid-call leaves for the recovery sweep), then the LLM call and the run's end.
"""
from __future__ import annotations

import copy
import http.client
import json
import logging
import time
from dataclasses import dataclass, field, replace

import aiohttp
from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpResponseBase, JsonResponse

from budgets.models import Budget
from core.db import connections_give_back
from core.errors import ProviderError, RunError
from core.money import usd
from core.tracing import tracing_on
from engine.provider_failures import answered_error_failure, error_object, provider_failure, safe_url, upstream_facts
from engine.routing import routing_table
from engine.runtime import CallStarted, RunContext
from engine.usage import (Usage, estimate_openai_prompt_tokens, openai_usage_readable, usage_cut_short,
                          usage_from_openai)
from gateway.errors import execution_failure
from gateway.relay import StreamRelay, budget_stop, text_or_empty
from gateway.services import IGNORED, usage_body
from gateway.upstream import StreamedBody, upstream_call, upstream_post, upstream_post_whole, upstream_timeout
from workflows.ending import execution_finish
from workflows.models import WorkflowExecution
from workflows.recorder import ExecutionRecorder, run_recorder
from workflows.runner import run_end
from workflows.services.runs import RunPlan, plan_budgets, run_plan, run_row, run_write

logger = logging.getLogger(__name__)
Mode, Status = WorkflowExecution.Mode, WorkflowExecution.Status
OPENAI_URL = "https://api.openai.com/v1"
_OUTPUT_CHARS = 500  # a model node's output summary (engine.nodes.MAX_OUTPUT_CHARS)
# What a call that got no (whole) answer raises: through aiohttp (a stream), through http.client (a whole call).
_UPSTREAM_ERRORS = (aiohttp.ClientError, OSError, http.client.HTTPException)


def passthrough_upstream(*, provider: str, model: str, conversation_id) -> str | None:
    """The base URL a call goes straight to, or None when it takes the run path: another provider (its adapter
    translates), a model routed through deployments (their routing, cool-downs and fallbacks), a call kept in a
    conversation."""
    if provider != "openai" or conversation_id:
        return None
    table = routing_table()
    if table is not None and model in table.routes:
        return None
    return (settings.OPENAI_BASE_URL or OPENAI_URL).rstrip("/")


@dataclass
class Passing:
    """A call written and on its way upstream: its run, its recorder and what the upstream is sent."""

    execution: WorkflowExecution
    recorder: ExecutionRecorder
    ctx: RunContext
    nodes: dict
    url: str
    body: bytes
    stream: bool
    include_usage: bool  # the client asked for the usage chunk (else it is asked for upstream, and kept back)
    model: str  # as the client asked for it
    requested_model: str  # as priced
    started: float = field(default_factory=time.monotonic)
    prompt_tokens: int = 0
    text: list = field(default_factory=list)
    tool_text: list = field(default_factory=list)
    spans: object | None = None  # the run's OpenTelemetry spans (workflows.run_spans) when tracing is on
    call: CallStarted | None = None  # its model call, as the recorder is told of it
    plan: RunPlan | None = None  # a call written whole after its answer (_written_whole); None: written already
    alone: bool = False  # written whole, with no conversation and no budget: nothing to write but its own rows

    def so_far(self) -> dict:
        return {"text": "".join(self.text), "tool_call_text": "".join(self.tool_text)}


def passthrough_open(*, run_request, request: dict, raw: bytes, base_url: str) -> Passing | WorkflowExecution:
    """The call's run, planned (the run path's own plan: bad input raises here), with its start recorded. A call
    answered whole with no hard budget over it is written whole once the upstream has answered (_written_whole):
    nothing of it is in the database while it waits. Any other (a stream, whose answer leaves before its end is
    written; a call a hard budget reserves for) is written now, in this thread, with its start events and its
    model call marked as started, in one transaction (run_write: the limit of runs at once, budgets reserved): what
    a crash mid-call leaves for the recovery sweep to account for. Returns the call on its way, or the ended run
    when its start already ended it (a hard budget that cannot cover it)."""
    stream = bool(request.get("stream"))
    plan = run_plan(run_request, mode=Mode.STREAM if stream else Mode.SYNC)
    budgets = plan_budgets(plan)
    if not stream and not any(budget.mode == Budget.Mode.HARD for budget in budgets):
        passing = _started(run_row(plan, status=Status.RUNNING), plan, request=request, raw=raw, base_url=base_url)
        passing.plan, passing.alone = plan, not budgets and plan.conversation_id is None and not plan.chat
        if passing.spans is not None:
            passing.spans.call_started(passing.recorder.open.index, passing.call)
        return passing
    opened: list[Passing] = []
    refusals: list[RunError] = []

    def start(execution: WorkflowExecution) -> None:  # in the run's creating transaction, once its row is in
        passing = _started(execution, plan, request=request, raw=raw, base_url=base_url)
        opened.append(passing)
        passing.recorder.heartbeat_start()
        try:
            passing.recorder.model_call_started(passing.nodes["model"], passing.call)
        except RunError as refused:  # (its write is made: the run ends, failed, after the commit)
            refusals.append(refused)

    run_write(replace(plan, request=replace(run_request, on_written=start)), status=Status.RUNNING)
    (passing,) = opened
    if refusals:  # a hard budget that cannot cover the call: ended, no call made
        passing.recorder.node_finished(passing.nodes["model"], status="failed", output={}, error=str(refusals[0]),
                                       error_type=refusals[0].error_type)
        return _ended(passing, usage=None, reported_model="", error=refusals[0], content="", ending={})
    return passing


def _started(execution: WorkflowExecution, plan: RunPlan, *, request: dict, raw: bytes, base_url: str) -> Passing:
    """The call on its way: its recorder (with its spans when tracing is on, as the run path's: workflows.runner),
    what the upstream is sent, and its start recorded up to its model node's start (held, not written)."""
    stream = bool(request.get("stream"))
    include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
    spans = None
    if tracing_on():
        from workflows.run_spans import RunSpans

        spans = RunSpans(execution)
    recorder = run_recorder(execution, fresh=True, prices=plan.prices, spans=spans)
    nodes = {node.type: node for node in plan.graph.nodes}
    body = _upstream_body(raw, request, model=execution.model, stream=stream, include_usage=include_usage,
                          max_tokens=execution.config.get("max_tokens"))
    passing = Passing(execution, recorder, RunContext(config=execution.config, hooks=recorder), nodes,
                      f"{base_url}/chat/completions", body, stream, include_usage, model=request["model"],
                      requested_model=execution.model,
                      prompt_tokens=estimate_openai_prompt_tokens(request["messages"]), spans=spans)
    passing.call = CallStarted(execution.provider, execution.model, passing.prompt_tokens, passing.so_far,
                               execution.config.get("max_tokens"), temperature=request.get("temperature"),
                               choices=request.get("n") or 1)
    recorder.started({"workflow_type": execution.workflow_type, "template": None, "definition": None,
                      "conversation_id": None, "provider": execution.provider, "model": execution.model})
    recorder.node_started(nodes["start"])
    recorder.node_finished(nodes["start"], status="completed", output={})
    recorder.node_started(nodes["model"])
    return passing


def _upstream_body(raw: bytes, request: dict, *, model: str, stream: bool, include_usage: bool,
                   max_tokens: int | None) -> bytes:
    """The body as the client sent it; changed (and so encoded again) only where it must be: the model's name
    without its provider, the parameters only OpenAI's service means left out, a stream's usage asked for, and the
    completion bounded by what a hard budget reserved."""
    changes: dict = {}
    if request["model"] != model:
        changes["model"] = model
    dropped = [name for name in IGNORED if request.get(name) is not None]
    options = request.get("stream_options") or {}
    if stream and (not include_usage or "include_obfuscation" in options):  # (obfuscation: OpenAI's own, ignored)
        changes["stream_options"] = {**{k: v for k, v in options.items() if k != "include_obfuscation"},
                                     "include_usage": True}
    if max_tokens and not (request.get("max_tokens") or request.get("max_completion_tokens")):
        changes["max_completion_tokens"] = max_tokens
    if not changes and not dropped:
        return raw
    body = json.loads(raw)
    for name in dropped:
        body.pop(name, None)
    body.update(changes)
    return json.dumps(body, separators=(",", ":")).encode()


def _ended(passing: Passing, *, usage: Usage | None, reported_model: str, error: RunError | None, content: str,
           ending: dict, message_id: str = "") -> WorkflowExecution:
    """The call's end, on the request's thread: its LLM call recorded and priced (the run's one recording path),
    the model and end nodes closed, the run ended: one transaction (workflows.runner.run_end)."""
    recorder, ctx, nodes = passing.recorder, passing.ctx, passing.nodes
    try:
        if usage is not None:
            ctx.call_recorded(nodes["model"], provider=passing.execution.provider, reported_model=reported_model,
                              requested_model=passing.requested_model, usage=usage, started=passing.started,
                              message_id=message_id, finish_reason=ending.get("finish_reason") or "")
    except RunError as exc:  # past the run's max_total_tokens: the call is recorded, the run fails
        error = error or exc
    if recorder.open is not None:
        if error is None:
            recorder.node_finished(nodes["model"], status="completed", output={
                "content": content[:_OUTPUT_CHARS],
                "tool_calls": [call["function"]["name"] for call in ending.get("tool_calls") or []]})
        else:
            recorder.node_finished(nodes["model"], status="failed", output={}, error=error.message,
                                   error_type=error.error_type)
    if error is None:
        recorder.node_started(nodes["end"])
        recorder.node_finished(nodes["end"], status="completed", output={})
    recorder.forget()
    ctx.partial_text = content
    if passing.plan is not None:
        ended = _written_whole(passing, error=error, ending=ending)
    else:
        ended = run_end(execution=passing.execution, recorder=recorder, ctx=ctx, state=None, error=error,
                        ending=ending)
    if passing.spans is not None:
        passing.spans.ended(ended)
    return ended


def _written_whole(passing: Passing, *, error: RunError | None, ending: dict) -> WorkflowExecution:
    """A call not written before its upstream answered, written now whole: its row (inserted as it ends), its
    start, its LLM call and its end in one transaction, its creation's (run_write; its end execution_finish's,
    without a savepoint); a call `alone` by its end alone (on PostgreSQL one statement). Never seen in progress,
    it is not counted by the limit of runs at once. It is tried once: should that write fail (nothing of it is
    then written, and the recorder holds what it held), or the database ask for it again (a conflict), the call
    is written as any other: its run, then its end by run_end (which ends it from its rows if its end cannot be
    written)."""
    execution, recorder, ctx, plan = passing.execution, passing.recorder, passing.ctx, passing.plan
    tries: list[WorkflowExecution] = []

    def finish(written: WorkflowExecution) -> None:  # in the run's creating transaction, which it inserts
        tries.append(written)
        if len(tries) > 1:  # (what the first try wrote, rolled back, the recorder no longer holds)
            raise RunError("the call's one write was rolled back", error_type="internal_error")
        recorder.reserved(written.budget_holds)
        execution_finish(execution=written, recorder=recorder, ctx=ctx, state=None, error=error, ending=ending,
                         savepoint=passing.alone, insert=True)  # (alone: its own transaction, or statement)

    try:
        with recorder.kept_on_failure():  # (a failure, even at the commit, leaves it holding what it held)
            if passing.alone:
                finish(copy.copy(execution))
            else:
                run_write(replace(plan, request=replace(plan.request, on_written=finish)), status=Status.RUNNING,
                          row=copy.copy(execution), inserted_as_ended=True)
        return tries[0]
    except Exception:  # noqa: BLE001 - whatever refused the one write, the call is still written and ended
        logger.exception("gateway pass-through: the one write of %s failed; written in two", execution.pk)
    written, _ = run_write(plan, status=Status.RUNNING, row=execution)
    recorder.reserved(written.budget_holds)
    return run_end(execution=written, recorder=recorder, ctx=ctx, state=None, error=error, ending=ending)


_close = sync_to_async(_ended, thread_sensitive=True)  # a stream's end, from the server's loop


USER_AGENT = "chatter-gateway"  # what the upstream sees calling, whole (http.client) or streamed (aiohttp)


def _headers(passing: Passing) -> dict:
    headers = {"Authorization": f"Bearer {settings.OPENAI_API_KEY or ''}", "Content-Type": "application/json",
               "Accept-Encoding": "identity", "User-Agent": USER_AGENT}
    return headers if passing.spans is None else {**headers, **passing.spans.outbound_headers()}


def _status_failure(passing: Passing, status: int, headers, content: bytes) -> ProviderError:
    """An upstream's error answer as the run's failure, with the facts a caller's answer is made of."""
    try:
        said = json.loads(content)
    except ValueError:
        said = None
    facts = upstream_facts(status=status, headers=headers, body=said)
    said_text = (facts["error"] or {}).get("message") or content[:200].decode(errors="replace")
    return ProviderError(f"openai call to {safe_url(passing.url)} failed: HTTP {status}: {said_text}",
                         error_type="provider_rate_limited" if status == 429 else "provider_error", upstream=facts)


def _failure(passing: Passing, exc: Exception, *, mid_stream: bool = False) -> ProviderError:
    return provider_failure(exc, provider="openai", timeout_s=settings.CHATTER_PROVIDER_TIMEOUT_S,
                            mid_stream=mid_stream, url=passing.url)


def _ending(message: dict, choice: dict, body: dict) -> dict:
    calls = message.get("tool_calls") or []
    return {"finish_reason": text_or_empty(choice.get("finish_reason")) or ("tool_calls" if calls else "stop"),
            **({"tool_calls": calls} if calls else {}),
            **{name: value for name, value in (("logprobs", choice.get("logprobs")),
                                               ("system_fingerprint", text_or_empty(body.get("system_fingerprint"))))
               if value}}


def passthrough_whole(passing: Passing, *, headers: dict) -> HttpResponseBase:
    """A call answered whole: the upstream's answer, with the run's id as its id and the stored cost in its usage;
    an upstream's error as gateway.errors answers a failed call."""
    error = None
    connections_give_back()  # (its planning's reads done: no pooled connection is held while the upstream answers)
    try:
        status, upstream_headers, content = upstream_post_whole(passing.url, data=passing.body,
                                                                headers=_headers(passing))
        if status >= 400:
            error = _status_failure(passing, status, upstream_headers, content)
        else:
            body = json.loads(content)
            if isinstance(body, dict) and "error" in body and not body.get("choices"):  # an error, answered 200
                error = answered_error_failure(error_object(body) or {}, provider="openai", url=passing.url)
            else:
                choice, message = _completion_read(body)
    except (*_UPSTREAM_ERRORS, ValueError) as exc:
        error = _failure(passing, exc)
    except _NotACompletion as exc:
        error = ProviderError(f"openai call answered something that is not a chat completion ({exc})",
                              error_type="provider_error", upstream=upstream_facts(status=502))
    if error is not None:
        ended = _ended(passing, usage=None, reported_model="", error=error, content="", ending={})
        return failure_response(ended, model=passing.model, headers=headers)
    content = message.get("content") or ""
    reported = body.get("usage")
    usage = usage_from_openai(reported) if openai_usage_readable(reported) else usage_cut_short(
        prompt_tokens=passing.prompt_tokens, streamed={"text": content})
    # Under a hard budget, a reply past what it reserved stops the run, as the run path's does (recorded in full).
    stopped = budget_stop(passing.recorder, content) if passing.recorder.budget.hard else None
    ended = _ended(passing, usage=usage, reported_model=text_or_empty(body.get("model")) or passing.requested_model,
                   error=stopped, content=content, ending=_ending(message, choice, body),
                   message_id=text_or_empty(body.get("id")))
    if ended.status != Status.COMPLETED:
        return failure_response(ended, model=passing.model, headers=headers)
    body.update(id=f"chatcmpl-{ended.pk.hex}", model=passing.model)
    body["usage"] = {**(reported if isinstance(reported, dict) else {}), **usage_body(ended)}
    return JsonResponse(body, headers={**headers, **cost_headers(ended)})


class _NotACompletion(Exception):
    """An upstream's 200 whose JSON is not a chat completion (says what is not)."""


def _completion_read(body) -> tuple[dict, dict]:
    """The first choice of an upstream's chat completion, and its message, once what the call's records and its
    answer read of it has its shape: an object with a list of choices, the first with a message (its content a
    text or null, its tool calls a list of calls naming their function); none of either for an empty list."""
    if not isinstance(body, dict):
        raise _NotACompletion("not an object")
    choices = body.get("choices")
    if choices == []:  # no choice, as some servers answer (a filtered reply): relayed, its usage recorded
        return {}, {}
    if not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise _NotACompletion("no choices")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise _NotACompletion("its choice has no message")
    if not isinstance(message.get("content"), (str, type(None))):
        raise _NotACompletion("its message's content is not a text")
    calls = message.get("tool_calls")
    if calls is not None and not (isinstance(calls, list) and all(
            isinstance(call, dict) and isinstance(call.get("function"), dict)
            and isinstance(call["function"].get("name"), str) for call in calls)):
        raise _NotACompletion("its message's tool calls are not calls of functions")
    return choices[0], message


def cost_headers(execution: WorkflowExecution) -> dict:
    from gateway.views import COST_HEADER, LITELLM_COST_HEADER

    cost = usd(execution.cost)
    return {COST_HEADER: cost, LITELLM_COST_HEADER: cost}


def failure_response(ended: WorkflowExecution, *, model: str, headers: dict) -> JsonResponse:
    failed = execution_failure(ended, model=model)
    return JsonResponse(failed.body, status=failed.status, headers={**headers, **cost_headers(ended),
                                                                    **failed.headers})


async def _open(passing: Passing) -> tuple[aiohttp.ClientResponse, StreamedBody | None]:
    """The upstream's answer, and a stream's body, read from the moment the answer opens."""
    response = await upstream_post(passing.url, data=passing.body, headers=_headers(passing),
                                   timeout=upstream_timeout())
    return response, StreamedBody(response) if response.status < 400 else None


async def _read(response: aiohttp.ClientResponse) -> bytes:
    try:
        return await response.read()
    finally:
        response.release()


def passthrough_stream(passing: Passing, *, headers: dict) -> HttpResponseBase:
    """A streamed call: once the upstream answers 200, its chunks as they arrive (the run's id in place of the
    upstream's); the usage chunk (when asked for, with the stored cost) and `[DONE]` after the run's end is
    committed. An upstream's error before the stream, or a stream that fails before the reply's first word, is a
    whole error answer; a stream cut short after it ends with an error object; the call failed and accounted for
    what it produced."""
    from core.api.sse import event_stream_response

    try:
        response, body = upstream_call(_open(passing))
    except _UPSTREAM_ERRORS as exc:
        ended = _ended(passing, usage=None, reported_model="", error=_failure(passing, exc), content="", ending={})
        return failure_response(ended, model=passing.model, headers=headers)
    if response.status >= 400:
        try:
            content = upstream_call(_read(response))
        except _UPSTREAM_ERRORS:
            content = b""
        ended = _ended(passing, usage=None, reported_model="", content="", ending={},
                       error=_status_failure(passing, response.status, response.headers, content))
        return failure_response(ended, model=passing.model, headers=headers)
    # Answered once the reply's first word comes or the call ends: one that failed before it is answered whole, with
    # its status (which OpenAI's clients retry, as they never do an error event in a stream), as the run path does.
    relay = StreamRelay(passing, body, failure=_failure, close=_close)
    failed = relay.first_word_wait(timeout_s=passing.execution.config["timeout_s"])
    if failed is not None:
        ended = _ended(passing, **relay.end_of_call(failed))
        return failure_response(ended, model=passing.model, headers=headers)
    return event_stream_response(relay.frames(), headers=headers)
