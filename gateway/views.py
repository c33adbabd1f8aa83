"""/v1/chat/completions and /v1/models: OpenAI's API over Chatter's runs (gateway.services). Authenticated by an
API key with the `gateway` scope (`Authorization: Bearer <key>`); errors in OpenAI's shape
{"error": {"message", "type", "code", "param"}}, made from the one error handler's answer."""
from __future__ import annotations

from typing import AsyncIterator

from django.http import HttpRequest, HttpResponseBase, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chatter_project.api.exceptions import api_exception_handler
from chatter_project.api.sse import EVENT_STREAM, EventStreamNegotiation, event_stream_response, frame
from chatter_project.api.throttling import RunThrottle
from chatter_project.auth import ApiKeyBearerAuthentication, ApiKeyScope, ApiTokenAuthentication, request_api_key
from gateway.serializers import ChatCompletionSerializer
from gateway.services import (
    completion_body,
    completion_chunks,
    gateway_complete,
    gateway_model_list,
    gateway_stream,
)
from workflows.models import WorkflowExecution

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error"}
CONVERSATION_HEADER = "X-Chatter-Conversation"
EXECUTION_HEADER = "X-Chatter-Execution"


def openai_error(*, status: int, code: str, message: str, param: str | None = None) -> dict:
    error_type = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    if code == "budget_exceeded":
        error_type = "insufficient_quota"
    return {"error": {"message": message, "type": error_type, "code": code, "param": param}}


def gateway_exception_handler(exc: Exception, context: dict) -> Response | None:
    """The project's one handler decides status, code, message and side effects (audit of refusals, rollback);
    this only reshapes its answer the way OpenAI's clients read errors (`param`: the first field at fault)."""
    response = api_exception_handler(exc, context)
    if response is None:
        return None
    error = response.data["error"]
    details = error.get("details") or []
    param = next((item["path"] for item in details if item.get("path")), None)
    code, message = error["code"], error["message"]
    if response.status_code == 401:
        code = "invalid_api_key"
    if code == "validation_error" and details:  # say what is wrong, not only that something is
        message = "; ".join(f"{item['path'] or 'request'}: {item['message']}" for item in details[:5])
    response.data = openai_error(status=response.status_code, code=code, message=message, param=param)
    return response


class GatewayView(APIView):
    authentication_classes = (ApiKeyBearerAuthentication, ApiTokenAuthentication)  # keys only, no session
    permission_classes = (IsAuthenticated, ApiKeyScope)
    key_scope = key_scope_read = "gateway"

    def get_exception_handler(self):
        return gateway_exception_handler


class ModelsView(GatewayView):
    """The models the gateway can call: those with a price in force, of a provider this installation is set up
    for."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT}, operation_id="v1_models_list")
    def get(self, request: Request) -> Response:
        return Response({"object": "list", "data": gateway_model_list()})


async def _sse(chunks: AsyncIterator[dict]) -> AsyncIterator[str]:
    try:
        async for chunk in chunks:
            yield frame(chunk)  # OpenAI's frames: data only
        yield "data: [DONE]\n\n"
    finally:
        await chunks.aclose()  # a client that went away: the feed's subscription goes (the run goes on)


class ChatCompletionsView(GatewayView):
    """OpenAI's chat completions: a run of the gateway graph, sync (a chat.completion) or streamed (SSE of
    chat.completion.chunk objects, then `[DONE]`). `X-Chatter-Conversation: <id>` appends the exchange (the last
    user message and the reply) to one of your conversations. The run's id is in the X-Chatter-Execution header."""

    throttle_classes = (RunThrottle,)
    throttle_scope = "runs"
    content_negotiation_class = EventStreamNegotiation

    @extend_schema(request=ChatCompletionSerializer, responses={
        200: OpenApiTypes.OBJECT,
        (200, EVENT_STREAM): OpenApiResponse(OpenApiTypes.STR, "stream: chat.completion.chunk objects as SSE")},
        operation_id="v1_chat_completions_create")
    def post(self, request: Request) -> HttpResponseBase:
        serializer = ChatCompletionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        run = {"owner": request.user, "api_key": request_api_key(request), "request": data,
               "conversation_id": request.headers.get(CONVERSATION_HEADER) or None}
        if data["stream"]:
            execution, feed = gateway_stream(**run)
            include_usage = bool((data.get("stream_options") or {}).get("include_usage"))
            return event_stream_response(_sse(completion_chunks(
                execution, feed, model=data["model"], include_usage=include_usage)),
                headers={EXECUTION_HEADER: str(execution.pk)})
        execution = gateway_complete(**run)
        headers = {EXECUTION_HEADER: str(execution.pk)}
        if execution.status != WorkflowExecution.Status.COMPLETED:
            return Response(openai_error(status=502, code=execution.error_type or "error",
                                         message=execution.error_message or "the call failed"),
                            status=502, headers=headers)
        return Response(completion_body(execution, model=data["model"]), headers=headers)


@csrf_exempt
def unknown_url(request: HttpRequest, path: str = "") -> JsonResponse:
    """Any other URL under /v1/, whatever the method: OpenAI's 404 `unknown_url`, so its clients read it."""
    return JsonResponse(openai_error(
        status=404, code="unknown_url",
        message=f"Unknown request URL: {request.method} {request.path}. The gateway serves POST "
                f"/v1/chat/completions and GET /v1/models."), status=404)
