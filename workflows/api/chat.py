"""POST /api/v1/chat/ (docs/api/rest.md): one chat turn, a run of a template or definition in a conversation. Thin:
validate, then start the run and answer in the run's mode like POST /executions/."""
from __future__ import annotations

from collections.abc import Callable, Mapping

from django.http import HttpResponseBase
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.views import APIView

from conversations.services import MAX_MESSAGE_CHARS
from core.api.serializers import StrictSerializer
from core.api.sse import EventStreamNegotiation
from core.api.throttling import RunThrottle
from engine.config import CHECKPOINTS, config_errors
from keys.auth import request_api_key
from workflows.api.views import RUN_RESPONSES, run_response
from workflows.models import WorkflowExecution
from workflows.services.run_requests import ChatRequest

# The chat fields that become the run's config (same names as the config keys).
CHAT_CONFIG_FIELDS = (
    "provider", "model", "temperature", "max_tokens", "system_prompt", "enable_memory", "memory_window",
    "enable_tools", "allowed_tools", "max_tool_calls", "enable_retrieval", "checkpoints",
)


def config_key(name: str):
    """A field validator running the engine's one config validator on one key (ranges, choices, tools)."""

    def validate(value) -> None:
        errors = config_errors({name: value})
        if errors:
            raise serializers.ValidationError([error["message"] for error in errors])

    return validate


# ChatSerializer's fields by name, each a new one at each call of its maker (nothing of a field is shared).
CHAT_FIELDS: dict[str, Callable[[], serializers.Field]] = {
    "message": lambda: serializers.CharField(max_length=MAX_MESSAGE_CHARS, trim_whitespace=False),
    "conversation_id": lambda: serializers.UUIDField(required=False, allow_null=True),
    "template": lambda: serializers.CharField(required=False, allow_null=True, max_length=100,
                                              help_text="template key or id; default universal_chat"),
    "definition_id": lambda: serializers.UUIDField(required=False, allow_null=True),
    "provider": lambda: serializers.CharField(required=False, validators=[config_key("provider")]),
    "model": lambda: serializers.CharField(required=False, validators=[config_key("model")]),
    "temperature": lambda: serializers.FloatField(required=False, allow_null=True,
                                                  validators=[config_key("temperature")]),
    "max_tokens": lambda: serializers.IntegerField(required=False, allow_null=True,
                                                   validators=[config_key("max_tokens")]),
    "system_prompt": lambda: serializers.CharField(required=False, allow_null=True, allow_blank=True,
                                                   trim_whitespace=False, validators=[config_key("system_prompt")]),
    "enable_memory": lambda: serializers.BooleanField(required=False),
    "memory_window": lambda: serializers.IntegerField(required=False, validators=[config_key("memory_window")]),
    "enable_tools": lambda: serializers.BooleanField(required=False),
    "allowed_tools": lambda: serializers.ListField(child=serializers.CharField(), required=False,
                                                   validators=[config_key("allowed_tools")]),
    "max_tool_calls": lambda: serializers.IntegerField(required=False, validators=[config_key("max_tool_calls")]),
    "enable_retrieval": lambda: serializers.BooleanField(required=False),
    "checkpoints": lambda: serializers.ChoiceField(choices=CHECKPOINTS, required=False, allow_null=True,
                                                   help_text="when the run saves its state; default: at pauses"),
    "stream": lambda: serializers.BooleanField(default=False),
    "background": lambda: serializers.BooleanField(default=False),
}
# What a request is validated with whatever it sends: the one required field and those with a default.
_ALWAYS = ("message", "stream", "background")


class ChatSerializer(StrictSerializer):
    """POST /chat/. The config fields are validated like any run config, and reported per field."""

    def get_fields(self) -> dict[str, serializers.Field]:
        # Its fields are made for each request by their constructors (CHAT_FIELDS): DRF's own get_fields() makes
        # them by deep copies of declared fields, which costs a third more CPU on every chat turn (0.56-0.79
        # against 0.39-0.61 ms, loaded; bench/RESULTS.md, "Issue 48, items 2 and 3"). A request's input is
        # validated by the fields it sends and those it cannot leave out (a typical turn: 3 fields of 20); an
        # unknown name is refused as by every serializer (StrictFieldsMixin), and the schema reads them all.
        data = getattr(self, "initial_data", None)
        names = CHAT_FIELDS if not isinstance(data, Mapping) else [
            name for name in CHAT_FIELDS if name in data or name in _ALWAYS]
        return {name: CHAT_FIELDS[name]() for name in names}

    def validate_message(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("This field may not be blank.", code="blank")
        return value

    def validate(self, attrs: dict) -> dict:
        if attrs.get("template") is not None and attrs.get("definition_id") is not None:
            raise serializers.ValidationError({"definition_id": ["give template or definition_id, not both"]})
        if attrs.get("stream") and attrs.get("background"):
            raise serializers.ValidationError({"background": ["a run is streamed or in the background, not both"]})
        config = {name: attrs.pop(name) for name in CHAT_CONFIG_FIELDS if name in attrs}
        return {**attrs, "config": config}


class ChatView(APIView):
    """One chat turn: 201 {"execution", "conversation", "messages": [user, assistant]}, or with
    `"stream": true` the run's events as SSE, or with `"background": true` 202 and the pending run."""

    throttle_classes = (RunThrottle,)
    throttle_scope = "runs"
    key_scope = "chat"  # what an API key needs (keys.auth.ApiKeyScope)
    content_negotiation_class = EventStreamNegotiation

    @extend_schema(request=ChatSerializer, responses=RUN_RESPONSES)
    def post(self, request: Request) -> HttpResponseBase:
        serializer = ChatSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        mode = WorkflowExecution.Mode.SYNC
        if data["background"]:
            mode = WorkflowExecution.Mode.BACKGROUND
        elif data["stream"]:
            mode = WorkflowExecution.Mode.STREAM
        return run_response(ChatRequest(
            owner=request.user, mode=mode, api_key=request_api_key(request),
            message=data["message"], template=data.get("template"), definition_id=data.get("definition_id"),
            conversation_id=data.get("conversation_id"), config=data["config"],
        ))
