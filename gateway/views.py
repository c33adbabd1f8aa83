"""/v1/chat/completions, /v1/responses, /v1/completions, /v1/embeddings and /v1/models: OpenAI's API over
Chatter's runs (gateway.services). Authenticated by an API key with the `gateway` scope (`Authorization: Bearer
<key>`), held to its gateway limits (gateway.limits); errors in OpenAI's shape
{"error": {"message", "type", "code", "param"}}, made from the one error handler's answer."""
from __future__ import annotations

from typing import Any, AsyncIterator

from django.http import HttpRequest, HttpResponseBase, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.exceptions import APIException
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.exceptions import ErrorShape, exception_response
from core.api.schema import OPENAI_REFERENCE
from core.api.sse import EVENT_STREAM, EventStreamNegotiation, event_stream_response, frame
from core.api.throttling import RunThrottle
from core.errors import ChatterError
from core.money import usd
from keys.auth import ApiKeyBearerAuthentication, ApiKeyScope, ApiTokenAuthentication, request_api_key
from gateway.embeddings import embeddings_body, embeddings_run
from gateway.errors import execution_failure, openai_error, refusal_headers
from gateway.passthrough import passthrough_open, passthrough_stream, passthrough_upstream, passthrough_whole
from gateway.responses import response_body, response_chat_request, response_events
from gateway.chat_request import ChatCompletionRequest, chat_request_validated
from gateway.serializers import CompletionSerializer, EmbeddingsSerializer, ResponsesSerializer
from gateway.services import (
    completion_body,
    completion_chunks,
    gateway_admit,
    gateway_complete,
    gateway_ignored,
    gateway_model_get,
    gateway_model_list,
    gateway_run_request,
    gateway_stream,
    text_completion_body,
    text_completion_chunks,
)
from workflows.models import WorkflowExecution

CONVERSATION_HEADER = "X-Chatter-Conversation"
EXECUTION_HEADER = "X-Chatter-Execution"
SERVED = ("POST /v1/chat/completions, POST /v1/completions, POST /v1/responses, POST /v1/embeddings, "
          "GET /v1/models and GET /v1/models/{model}")  # what unknown_url lists
REQUEST_ID_HEADER = "X-Request-Id"  # the run's id too, where OpenAI's clients look for it
COST_HEADER = "X-Chatter-Cost"  # the call's cost in USD, exact (8 places), as stored
# The same figure where LiteLLM's SDK reads an upstream's cost (its proxy's header): its completion_cost() reads
# `usage.cost` of a chat completion, but an embeddings response's usage has no cost to it.
LITELLM_COST_HEADER = "x-litellm-response-cost"
IGNORED_HEADER = "X-Chatter-Ignored"  # the parameters accepted and not acted on (only OpenAI's service means them)


class OpenAIErrors(ErrorShape):
    """OpenAI's error shape on the project's one error path (which decides status, code, message, headers and the
    side effects: the audit of refusals, the rollback): {"error": {"message", "type", "code", "param"}}, `param`
    the first field at fault."""

    def chatter_error(self, exc: ChatterError) -> tuple[int, Any]:
        status, body = super().chatter_error(exc)
        return status, self._openai(status, body["error"])

    def refusal_headers(self, exc: ChatterError, *, status: int) -> dict[str, str]:
        return refusal_headers(status=status, code=exc.code)  # (a hard budget that refuses a call at its start)

    def api_error(self, exc: APIException) -> tuple[int, Any]:
        status, body = super().api_error(exc)
        return status, self._openai(status, body["error"])

    def server_error(self) -> Any:
        return openai_error(status=500, code="server_error", message="internal server error")

    def error_page(self, *, status: int, code: str, message: str) -> Any:
        return openai_error(status=status, code=code, message=message)

    @staticmethod
    def _openai(status: int, error: dict) -> dict:
        details = error.get("details") or []
        param = next((item["path"] for item in details if item.get("path")), None)
        code, message = error["code"], error["message"]
        if status == 401:
            code = "invalid_api_key"
        if code == "validation_error" and details:  # say what is wrong, not only that something is
            message = "; ".join(f"{item['path'] or 'request'}: {item['message']}" for item in details[:5])
        return openai_error(status=status, code=code, message=message, param=param)


OPENAI_ERRORS = OpenAIErrors()


def gateway_exception_handler(exc: Exception, context: dict) -> Response | None:
    return exception_response(exc, context, shape=OPENAI_ERRORS)


def _openai(operation_id: str, reference: str) -> dict:
    """An operation of OpenAI's API: its id here, and OpenAI's reference page for it (the request's and the
    answer's shape, which the gateway keeps)."""
    return {"operation_id": operation_id,
            "external_docs": {"url": f"{OPENAI_REFERENCE}/{reference}", "description": "OpenAI's API reference"}}


def _openai_object(name: str) -> OpenApiResponse:
    return OpenApiResponse(OpenApiTypes.OBJECT, f"OpenAI's {name} object, as its API reference gives it")


class GatewayView(APIView):
    authentication_classes = (ApiKeyBearerAuthentication, ApiTokenAuthentication)  # keys only, no session
    permission_classes = (IsAuthenticated, ApiKeyScope)
    key_scope = key_scope_read = "gateway"

    def get_exception_handler(self):
        return gateway_exception_handler


class ModelsView(GatewayView):
    """The models the gateway can call: those with a price in force, of a provider this installation is set up
    for, that the key may call (its `allowed_models`)."""

    @extend_schema(responses={200: _openai_object("list of model")}, **_openai("v1_models_list", "models/list"))
    def get(self, request: Request) -> Response:
        return Response({"object": "list", "data": gateway_model_list(request_api_key(request))})


class ModelView(GatewayView):
    """One model the gateway can call (and the key may); any other is a 404 `model_not_found` saying which there
    are."""

    @extend_schema(responses={200: _openai_object("model")}, **_openai("v1_models_retrieve", "models/retrieve"))
    def get(self, request: Request, model: str) -> Response:
        return Response(gateway_model_get(model, request_api_key(request)))


async def _sse(chunks: AsyncIterator[dict], *, named: bool = False) -> AsyncIterator[str]:
    """OpenAI's frames: data only, then `[DONE]`; `named`, as the Responses API sends its events: each frame
    named by its event's type, and no `[DONE]`."""
    try:
        async for chunk in chunks:
            yield frame(chunk, event=chunk.get("type") if named else None)
        if not named:
            yield "data: [DONE]\n\n"
    finally:
        await chunks.aclose()  # a client that went away: the feed's subscription goes (the run goes on)


def _streamable(whole: str, chunk: str) -> dict:
    """The responses of a call that may be streamed: a `whole` object, or SSE of `chunk` objects."""
    return {200: _openai_object(whole),
            (200, EVENT_STREAM): OpenApiResponse(OpenApiTypes.STR, f"stream: OpenAI's {chunk} objects as SSE")}


class GatewayRunView(GatewayView):
    """A view whose calls are runs: under the `runs` throttle of the user, streamed when asked."""

    throttle_classes = (RunThrottle,)
    throttle_scope = "runs"
    content_negotiation_class = EventStreamNegotiation


class ChatCompletionsView(GatewayRunView):
    """OpenAI's chat completions: a run of the gateway graph, sync (a chat.completion) or streamed (SSE of
    chat.completion.chunk objects, then `[DONE]`). `X-Chatter-Conversation: <id>` appends the exchange (the last
    user message and the reply) to one of your conversations. The run's id is in the X-Request-Id and
    X-Chatter-Execution headers, its cost (when not streamed) in X-Chatter-Cost and in `usage.cost`; the parameters
    accepted and ignored are named in X-Chatter-Ignored."""

    @extend_schema(request=ChatCompletionRequest, responses=_streamable("chat.completion", "chat.completion.chunk"),
                   **_openai("v1_chat_completions_create", "chat/create"))
    def post(self, request: Request) -> HttpResponseBase:
        raw = request.body  # as the client sent it: what a pass-through call sends on (read before it is parsed)
        data = chat_request_validated(request.data)
        legacy = bool(data.get("legacy_functions"))
        ignored = gateway_ignored(data)
        conversation_id = request.headers.get(CONVERSATION_HEADER) or None
        if not legacy:
            passing = _passing(request, data, raw=raw, conversation_id=conversation_id,
                               **({IGNORED_HEADER: ", ".join(ignored)} if ignored else {}))
            if passing is not None:
                return passing
        return _called(
            request, data, conversation_id=conversation_id,
            whole=lambda execution: completion_body(execution, model=data["model"], legacy=legacy),
            streamed=lambda execution, feed: completion_chunks(
                execution, feed, model=data["model"], legacy=legacy, include_usage=_include_usage(data)),
            **({IGNORED_HEADER: ", ".join(ignored)} if ignored else {}))


class CompletionsView(GatewayRunView):
    """OpenAI's legacy completions: the prompt as the one user message of a chat completion (the same run, the same
    parameters), answered as text_completion objects; `echo` puts the prompt before the text. What a chat model
    cannot do is refused: `suffix`, `best_of` > 1, several prompts in one call."""

    @extend_schema(request=CompletionSerializer, responses=_streamable("text_completion", "text_completion"),
                   **_openai("v1_completions_create", "completions/create"))
    def post(self, request: Request) -> HttpResponseBase:
        serializer = CompletionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.as_chat()
        echo = serializer.validated_data["prompt"] if serializer.validated_data["echo"] else ""
        return _called(
            request, data,
            whole=lambda execution: text_completion_body(completion_body(execution, model=data["model"]), echo=echo),
            streamed=lambda execution, feed: text_completion_chunks(completion_chunks(
                execution, feed, model=data["model"], include_usage=_include_usage(data)), echo=echo))


def _passing(request: Request, data: dict, *, raw: bytes, conversation_id, **headers) -> HttpResponseBase | None:
    """A chat completion that goes straight to its upstream (gateway.passthrough), written and ready to send; None
    when it takes the run path."""
    resolved, limits = gateway_admit(api_key=request_api_key(request), model=data["model"])
    base_url = passthrough_upstream(provider=resolved.provider, model=resolved.model,
                                    conversation_id=conversation_id)
    if base_url is None:
        request.gateway_admitted = (resolved, limits)
        return None
    headers.update(limits)
    run_request = gateway_run_request(owner=request.user, api_key=request_api_key(request), request=data,
                                      resolved=resolved)
    opened = passthrough_open(run_request=run_request, request=data, raw=raw, base_url=base_url)
    if isinstance(opened, WorkflowExecution):  # ended at its start (a budget that cannot cover it)
        return _answer(opened, lambda: None, model=data["model"], **headers)
    call = passthrough_stream if opened.stream else passthrough_whole
    return call(opened, headers=_run_headers(opened.execution, **headers))


def _validated(serializer_class, request: Request) -> dict:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _called(request: Request, data: dict, *, whole, streamed, conversation_id=None, instructions=None,
            named: bool = False, **headers) -> HttpResponseBase:
    """Run a validated chat completion request: to its end and answered with `whole(execution)`, or streamed as
    `streamed(execution, feed)` (`named`: frames named by their type, see _sse); `instructions`: the Responses
    API's system prompt."""
    admitted = getattr(request, "gateway_admitted", None)  # the pass-through's check let it in, counted
    resolved, limits = admitted or gateway_admit(api_key=request_api_key(request), model=data["model"])
    headers.update(limits)
    run = {"owner": request.user, "api_key": request_api_key(request), "request": data, "resolved": resolved,
           "conversation_id": conversation_id, "instructions": instructions}
    if data["stream"]:
        execution, feed = gateway_stream(**run)
        if feed is None:  # failed before the reply's first word: answered whole, with the failure's status
            return _answer(execution, lambda: None, model=data["model"], **headers)
        return _streamed(execution, streamed(execution, feed), named=named, **headers)
    execution = gateway_complete(**run)
    return _answer(execution, lambda: whole(execution), model=data["model"], **headers)


class EmbeddingsView(GatewayRunView):
    """OpenAI's embeddings: a run of the embeddings graph (its one LLM call the provider's embeddings call), its
    usage and cost as stored; `local-embed-1` is the offline `local` provider's deterministic model."""

    @extend_schema(request=EmbeddingsSerializer, responses={200: _openai_object("list of embedding")},
                   **_openai("v1_embeddings_create", "embeddings/create"))
    def post(self, request: Request) -> HttpResponseBase:
        data = _validated(EmbeddingsSerializer, request)
        resolved, headers = gateway_admit(api_key=request_api_key(request), model=data["model"])
        execution = embeddings_run(owner=request.user, api_key=request_api_key(request), texts=data["input"],
                                   dimensions=data.get("dimensions"), resolved=resolved)
        if data.get("user") is not None:
            headers[IGNORED_HEADER] = "user"
        return _answer(execution, lambda: embeddings_body(execution, model=data["model"],
                                                          encoding_format=data["encoding_format"]),
                       model=data["model"], **headers)


def _run_headers(execution: WorkflowExecution, **headers) -> dict:
    return {EXECUTION_HEADER: str(execution.pk), REQUEST_ID_HEADER: str(execution.pk), **headers}


class ResponsesView(GatewayRunView):
    """OpenAI's Responses API for text and function tools: the input items as the messages of a chat completion run
    (`instructions` its system prompt), answered as a response, or streamed (`stream`: SSE of the Responses API's
    events, ending with `response.completed` or `response.failed`); `previous_response_id` goes on from a response
    of yours (its run's messages and reply come first). `X-Chatter-Conversation` keeps the exchange, as for chat."""

    @extend_schema(request=ResponsesSerializer, responses=_streamable("response", "response stream event"),
                   **_openai("v1_responses_create", "responses/create"))
    def post(self, request: Request) -> HttpResponseBase:
        data = _validated(ResponsesSerializer, request)
        chat = response_chat_request(owner=request.user, request=data)
        ignored = gateway_ignored(chat)
        return _called(
            request, chat, conversation_id=request.headers.get(CONVERSATION_HEADER) or None,
            instructions=data.get("instructions"), named=True,
            whole=lambda execution: response_body(execution, model=data["model"], request=data),
            streamed=lambda execution, feed: response_events(execution, feed, model=data["model"], request=data),
            **({IGNORED_HEADER: ", ".join(ignored)} if ignored else {}))


def _include_usage(data: dict) -> bool:
    return bool((data.get("stream_options") or {}).get("include_usage"))


def _streamed(execution: WorkflowExecution, chunks: AsyncIterator[dict], *, named: bool = False,
              **headers) -> HttpResponseBase:
    return event_stream_response(_sse(chunks, named=named), headers=_run_headers(execution, **headers))


def _answer(execution: WorkflowExecution, body, *, model: str, **headers) -> Response:
    """A call run to its end: `body()` when it completed, else the answer gateway.errors makes of its failure; the
    run's id and cost in the headers either way."""
    cost = usd(execution.cost)
    headers = {**_run_headers(execution, **headers), COST_HEADER: cost, LITELLM_COST_HEADER: cost}
    if execution.status != WorkflowExecution.Status.COMPLETED:
        failed = execution_failure(execution, model=model)
        return Response(failed.body, status=failed.status, headers={**headers, **failed.headers})
    return Response(body(), headers=headers)


@csrf_exempt
def unknown_url(request: HttpRequest, path: str = "") -> JsonResponse:
    """Any other URL under /v1/, whatever the method: OpenAI's 404 `unknown_url`, so its clients read it."""
    return JsonResponse(openai_error(
        status=404, code="unknown_url",
        message=f"Unknown request URL: {request.method} {request.path}. The gateway serves {SERVED}."), status=404)
