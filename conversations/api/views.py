"""Conversations and chat turns over the API (SPEC §7). Thin: validate, call a service, render."""
from __future__ import annotations

from django.http import HttpResponseBase
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from chatter_project.api.sse import EventStreamNegotiation
from conversations.api.serializers import (
    ChatSerializer,
    ConversationSerializer,
    MessageSerializer,
)
from conversations.models import Conversation
from conversations.selectors import conversation_list, message_list
from workflows.api.serializers import RunResultSerializer
from workflows.api.views import run_response
from workflows.models import WorkflowExecution
from workflows.services import execution_create


class ChatView(APIView):
    """One chat turn: 201 {"execution", "conversation", "messages": [user, assistant]}, or with
    `"stream": true` the run's events as SSE."""

    throttle_classes = (ScopedRateThrottle,)
    throttle_scope = "runs"
    content_negotiation_class = EventStreamNegotiation

    @extend_schema(request=ChatSerializer, responses={201: RunResultSerializer})
    def post(self, request: Request) -> HttpResponseBase:
        serializer = ChatSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        mode = WorkflowExecution.Mode.SYNC
        if data["background"]:
            mode = WorkflowExecution.Mode.BACKGROUND
        elif data["stream"]:
            mode = WorkflowExecution.Mode.STREAM
        execution = execution_create(
            owner=request.user, chat=True, mode=mode,
            message=data["message"], template=data.get("template"), definition_id=data.get("definition_id"),
            conversation_id=data.get("conversation_id"), config=data["config"],
        )
        return run_response(execution)


class ConversationViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    queryset = Conversation.objects.none()  # the real one, per user, is get_queryset()
    serializer_class = ConversationSerializer
    filterset_fields = ("status",)
    ordering_fields = ("created_at", "updated_at", "last_message_at", "message_count", "total_tokens", "total_cost")
    ordering = ("-created_at",)

    def get_queryset(self):
        # Restricted to the owner: another user's conversation is a 404 (never a 403).
        return conversation_list(user=self.request.user)

    @extend_schema(responses=MessageSerializer(many=True))
    @action(detail=True, methods=["get"])
    def messages(self, request: Request, pk: str) -> Response:
        conversation = self.get_object()
        page = self.paginate_queryset(message_list(conversation=conversation))
        return self.get_paginated_response(MessageSerializer(page, many=True).data)
