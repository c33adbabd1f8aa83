"""/api/v1/prompts/: prompts by name (yours only: another user's is a 404), their versions and labels. Thin:
validate, call one service or selector, render."""
from __future__ import annotations

from django.db.models import Prefetch
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from core.api.viewsets import OwnedViewSet
from prompts.api.filters import PromptFilter
from prompts.api.serializers import (
    PromptCreateSerializer,
    PromptLabelSerializer,
    PromptLabelWriteSerializer,
    PromptSerializer,
    PromptUpdateSerializer,
    PromptVersionSerializer,
    PromptVersionWriteSerializer,
    ResolvedPromptSerializer,
)
from prompts.models import Prompt, PromptLabel
from prompts.selectors import prompt_get, prompt_label_get, prompt_list, prompt_version_get
from prompts.services import (
    prompt_create,
    prompt_delete,
    prompt_label_delete,
    prompt_label_set,
    prompt_resolve,
    prompt_update,
    prompt_version_create,
)


class ResolveQuerySerializer(serializers.Serializer):
    label = serializers.RegexField(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$", required=False)
    version = serializers.IntegerField(min_value=1, max_value=2**31 - 1, required=False)


def _ip(request: Request) -> str | None:
    return request.META.get("REMOTE_ADDR")


class PromptViewSet(mixins.ListModelMixin, OwnedViewSet):
    queryset = Prompt.objects.none()
    serializer_class = PromptSerializer
    filterset_class = PromptFilter
    lookup_field = "name"
    lookup_value_regex = "[^/]+"
    ordering_fields = ("name", "created_at", "updated_at")
    ordering = ("name",)
    not_found = "prompt not found"

    def get_queryset(self):
        return prompt_list(user=self.request.user).prefetch_related(
            Prefetch("labels", queryset=PromptLabel.objects.select_related("version")))

    def get_object(self) -> Prompt:
        return prompt_get(user=self.request.user, name=self.kwargs["name"])

    def retrieve(self, request: Request, name: str) -> Response:
        return Response(PromptSerializer(self.get_queryset().get(pk=self.get_object().pk)).data)

    @extend_schema(request=PromptCreateSerializer, responses={201: PromptSerializer})
    def create(self, request: Request) -> Response:
        serializer = PromptCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        prompt = prompt_create(owner=request.user, name=data["name"], description=data["description"],
                               type=data["type"], content=data["prompt"], config=data["config"],
                               labels=data.get("labels", []), commit_message=data["commit_message"], ip=_ip(request))
        return Response(PromptSerializer(self.get_queryset().get(pk=prompt.pk)).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=PromptUpdateSerializer, responses=PromptSerializer)
    def partial_update(self, request: Request, name: str) -> Response:
        prompt = self.get_object()
        serializer = PromptUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        prompt_update(prompt=prompt, description=serializer.validated_data["description"])
        return Response(PromptSerializer(self.get_queryset().get(pk=prompt.pk)).data)

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, name: str) -> Response:
        prompt_delete(prompt=self.get_object(), actor=request.user, ip=_ip(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(methods=["GET"], responses=PromptVersionSerializer(many=True))
    @extend_schema(methods=["POST"], request=PromptVersionWriteSerializer, responses={201: PromptVersionSerializer})
    @action(detail=True, methods=["get", "post"], filter_backends=[])
    def versions(self, request: Request, name: str) -> Response:
        """GET: the versions, newest first (paginated); POST: save a new version (`latest` moves to it)."""
        prompt = self.get_object()
        if request.method == "GET":
            page = self.paginate_queryset(prompt.versions.select_related("prompt").order_by("-version"))
            return self.get_paginated_response(PromptVersionSerializer(page, many=True).data)
        serializer = PromptVersionWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        version = prompt_version_create(prompt=prompt, type=data["type"], content=data["prompt"],
                                        config=data["config"], labels=data.get("labels", []),
                                        commit_message=data["commit_message"], actor=request.user, ip=_ip(request))
        return Response(PromptVersionSerializer(version).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses=PromptVersionSerializer)
    @action(detail=True, methods=["get"], url_path=r"versions/(?P<number>[0-9]{1,9})", filter_backends=[],
            pagination_class=None)
    def version(self, request: Request, name: str, number: str) -> Response:
        return Response(PromptVersionSerializer(prompt_version_get(prompt=self.get_object(),
                                                                   version=int(number))).data)

    @extend_schema(parameters=[ResolveQuerySerializer], responses=ResolvedPromptSerializer)
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None)
    def resolve(self, request: Request, name: str) -> Response:
        """Fetch by label (default `production`; a split draws by weight) or by `version`."""
        query = ResolveQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        resolved = prompt_resolve(user=request.user, name=name, **query.validated_data)
        return Response({**PromptVersionSerializer(resolved.version).data, "label": resolved.label})

    @extend_schema(methods=["PUT"], request=PromptLabelWriteSerializer, responses=PromptLabelSerializer)
    @extend_schema(methods=["DELETE"], responses={204: None})
    @action(detail=True, methods=["put", "delete"], url_path=r"labels/(?P<label>[A-Za-z0-9][A-Za-z0-9_.-]{0,99})",
            filter_backends=[], pagination_class=None)
    def label(self, request: Request, name: str, label: str) -> Response:
        """PUT points the label at `version` or at a `split` (a rollback is a PUT to an older version); DELETE
        removes it. Moves are audited; protected labels are staff's."""
        prompt = self.get_object()
        if request.method == "DELETE":
            prompt_label_delete(label=prompt_label_get(prompt=prompt, name=label), actor=request.user,
                                ip=_ip(request))
            return Response(status=status.HTTP_204_NO_CONTENT)
        serializer = PromptLabelWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        moved = prompt_label_set(prompt=prompt, name=label, actor=request.user, ip=_ip(request),
                                 **serializer.validated_data)
        return Response(PromptLabelSerializer(moved).data)
