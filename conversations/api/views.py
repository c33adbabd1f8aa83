"""Conversations and documents over the API (docs/api/rest.md). Thin: validate, call a service, render. (Chat turns,
which run workflows, are workflows.api.chat's.)"""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import generics, mixins, status
from rest_framework.request import Request
from rest_framework.response import Response

from conversations.api.filters import ConversationFilter, DocumentFilter, MessageFilter
from core.api.viewsets import OwnedViewSet
from core.errors import NotFound
from keys.auth import request_api_key
from conversations.api.serializers import (
    ConversationSerializer,
    ConversationWriteSerializer,
    DocumentSerializer,
    MessageSerializer,
)
from conversations.models import Conversation, Document, Message
from conversations.selectors import conversation_list, document_list, message_list
from conversations.services import (
    conversation_create,
    conversation_delete,
    conversation_update,
    document_create,
    document_delete,
)


class ConversationViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OwnedViewSet):
    key_scope = "chat"  # what an API key needs to write here (keys.auth.ApiKeyScope)
    queryset = Conversation.objects.none()  # the real one, per user, is get_queryset()
    serializer_class = ConversationSerializer
    filterset_class = ConversationFilter
    ordering_fields = ("created_at", "updated_at", "last_message_at", "message_count", "total_tokens", "total_cost")
    ordering = ("-created_at",)
    not_found = "conversation not found"

    def get_queryset(self):
        return conversation_list(user=self.request.user)

    @extend_schema(request=ConversationWriteSerializer, responses={201: ConversationSerializer})
    def create(self, request: Request) -> Response:
        serializer = ConversationWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        conversation = conversation_create(owner=request.user, **serializer.validated_data)
        return Response(ConversationSerializer(conversation).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=ConversationWriteSerializer, responses=ConversationSerializer)
    def partial_update(self, request: Request, pk: str) -> Response:
        conversation = self.get_object()
        serializer = ConversationWriteSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        conversation = conversation_update(conversation=conversation, **serializer.validated_data)
        return Response(ConversationSerializer(conversation).data)

    def destroy(self, request: Request, pk: str) -> Response:
        conversation_delete(conversation=self.get_object(), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MessageListView(generics.ListAPIView):
    """GET /conversations/<id>/messages/: a conversation's messages with every token and cost field, in order."""

    queryset = Message.objects.none()
    serializer_class = MessageSerializer
    filterset_class = MessageFilter
    ordering_fields = ("sequence", "created_at")
    ordering = ("sequence",)

    def get_queryset(self):
        conversation = conversation_list(user=self.request.user).filter(pk=self.kwargs["pk"]).first()
        if conversation is None:
            raise NotFound("conversation not found")
        return message_list(conversation=conversation)


class DocumentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OwnedViewSet):
    key_scope = "chat"
    """What `retrieval` nodes search: only the owner's documents."""

    queryset = Document.objects.none()
    serializer_class = DocumentSerializer
    filterset_class = DocumentFilter
    ordering_fields = ("created_at", "title")
    ordering = ("-created_at",)
    not_found = "document not found"

    def get_queryset(self):
        return document_list(user=self.request.user)

    def create(self, request: Request) -> Response:
        serializer = DocumentSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        document = document_create(owner=request.user, api_key=request_api_key(request),
                                   **serializer.validated_data)
        return Response(DocumentSerializer(document).data, status=status.HTTP_201_CREATED)

    def destroy(self, request: Request, pk: str) -> Response:
        document_delete(document=self.get_object(), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
