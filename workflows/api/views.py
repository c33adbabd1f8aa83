"""Workflows over the API (docs/api/rest.md): templates, definitions, runs (start, list, read, cancel, event log as
JSON or SSE) and schedules. Thin: validate with a serializer, call a service or selector, render; ChatterErrors render
themselves."""
from __future__ import annotations

from django.http import HttpResponseBase
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.sse import (
    EventStreamNegotiation,
    sse_response,
    wants_event_stream,
)
from core.api.throttling import RunThrottle
from core.api.viewsets import OwnedViewSet
from core.errors import NotFound
from engine.graph import validate_graph
from keys.auth import request_api_key
from workflows.api.filters import (
    DefinitionFilter,
    ExecutionFilter,
    ScheduleFilter,
    TemplateFilter,
)
from workflows.api.run_serializers import (
    AcceptedRunSerializer,
    ExecutionDetailSerializer,
    ExecutionSerializer,
    RunResultSerializer,
)
from workflows.api.serializers import (
    CheckpointSerializer,
    ResumeSerializer,
    EXECUTION_EVENT,
    DefinitionSerializer,
    DefinitionUpdateSerializer,
    DefinitionWriteSerializer,
    EventEnvelopeSerializer,
    EventsQuerySerializer,
    ExecutionCreateSerializer,
    FromTemplateSerializer,
    GraphSerializer,
    ScheduleSerializer,
    ScheduleWriteSerializer,
    TemplateSerializer,
    TemplateUpdateSerializer,
    TemplateWriteSerializer,
    ValidationResultSerializer,
)
from workflows.models import (
    WorkflowDefinition,
    WorkflowExecution,
    WorkflowSchedule,
    WorkflowTemplate,
)
from workflows.realtime import execution_feed
from workflows.selectors import (
    definition_list,
    conversation_checkpoint_list,
    execution_checkpoint_list,
    execution_event_list,
    execution_list,
    execution_with_trace,
    schedule_list,
    template_get,
    template_list,
)
from workflows.services.definitions import (
    definition_create,
    definition_delete,
    definition_from_template,
    definition_update,
)
from workflows.services.run_requests import ExecutionRequest, RunRequest
from workflows.services.runs import (
    execution_cancel,
    execution_create,
    execution_run_now,
    execution_start_streamed,
)
from workflows.services.schedules import (
    schedule_create,
    schedule_delete,
    schedule_update,
)
from workflows.services.templates import (
    template_create,
    template_delete,
    template_update,
)
from workflows.services.waiting import NO_ANSWER, execution_resume

# What starting a run answers, by mode (docs/api/rest.md): documented once for POST /chat/ and POST /executions/.
RUN_RESPONSES = {
    201: RunResultSerializer,
    202: OpenApiResponse(AcceptedRunSerializer, "background: the pending run, handed to a worker; poll `links.self` "
                                                "(also the Location header) or follow `links.events`"),
    (200, "text/event-stream"): OpenApiResponse(OpenApiTypes.STR, "stream: the run's events as SSE"),
}


def run_response(run_request: RunRequest) -> HttpResponseBase:
    """Start a run in its mode and answer: 202 with the pending run and where to poll it (a worker runs it), SSE
    of its events while the runner runs it, or 201 with the result of running it here to its end."""
    mode = run_request.mode
    if mode == WorkflowExecution.Mode.BACKGROUND:
        execution = execution_create(run_request)
        body = AcceptedRunSerializer(execution).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["links"]["self"]})
    if mode == WorkflowExecution.Mode.STREAM:
        return sse_response(execution_start_streamed(run_request)[1])
    execution = execution_run_now(run_request)
    return Response(RunResultSerializer(execution).data, status=status.HTTP_201_CREATED)


class ExecutionViewSet(mixins.ListModelMixin, OwnedViewSet):
    queryset = WorkflowExecution.objects.none()  # the real one, per user, is get_queryset()
    serializer_class = ExecutionSerializer
    content_negotiation_class = EventStreamNegotiation
    filterset_class = ExecutionFilter
    ordering_fields = ("created_at", "completed_at", "execution_time_ms", "total_tokens", "cost")
    ordering = ("-created_at",)
    throttle_scope = "runs"
    not_found = "execution not found"

    def get_queryset(self):
        return execution_list(user=self.request.user)

    def get_throttles(self):
        return [RunThrottle()] if self.action == "create" else []

    @extend_schema(request=ExecutionCreateSerializer, responses=RUN_RESPONSES)
    def create(self, request: Request) -> HttpResponseBase:
        serializer = ExecutionCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        run_input = data.get("input") or {}
        return run_response(ExecutionRequest(
            owner=request.user, mode=data["mode"], template=data.get("template"),
            definition_id=data.get("definition_id"), graph=data.get("graph"), message=run_input.get("message"),
            variables=run_input.get("variables"), conversation_id=data.get("conversation_id"),
            config=data.get("config"), api_key=request_api_key(request), from_checkpoint=data.get("from_checkpoint"),
        ))

    @extend_schema(responses=CheckpointSerializer(many=True))
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None)
    def checkpoints(self, request: Request, pk: str) -> Response:
        """The run's graph checkpoints, oldest first: each one a place a new run can be forked from."""
        return Response(CheckpointSerializer(execution_checkpoint_list(execution=self.get_object()), many=True).data)

    @extend_schema(responses=ExecutionDetailSerializer)
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(ExecutionDetailSerializer(execution_with_trace(execution=self.get_object())).data)

    @extend_schema(request=None, responses=ExecutionSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        execution = execution_cancel(execution=self.get_object(), actor=request.user)
        return Response(ExecutionSerializer(execution).data)

    @extend_schema(request=ResumeSerializer, responses={
        200: OpenApiResponse(RunResultSerializer, "sync: the run gone on to its end or to its next question"),
        202: RUN_RESPONSES[202], (200, "text/event-stream"): RUN_RESPONSES[(200, "text/event-stream")],
        400: OpenApiResponse(None, "an answer that breaks its question's schema, or an unknown interrupt id: "
                                   "nothing is written"),
        409: OpenApiResponse(None, "the run is not waiting for input")})
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str) -> HttpResponseBase:
        """Answer a run that waits for input (status `waiting`) and go on with it, in the mode asked for."""
        execution = self.get_object()
        serializer = ResumeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        outcome = execution_resume(execution=execution, actor=request.user, answer=data.get("answer", NO_ANSWER),
                                   answers=data.get("answers"), mode=data["mode"])
        if data["mode"] == WorkflowExecution.Mode.STREAM:
            return sse_response(outcome)
        if data["mode"] == WorkflowExecution.Mode.BACKGROUND:
            body = AcceptedRunSerializer(outcome).data
            return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["links"]["self"]})
        return Response(RunResultSerializer(outcome).data)

    @extend_schema(responses={
        200: EXECUTION_EVENT,
        (200, "text/event-stream"): OpenApiResponse(OpenApiTypes.STR, "the events as SSE, live until the end"),
        204: OpenApiResponse(None, "SSE resumed after the terminal event: nothing will follow"),
    }, parameters=[OpenApiParameter("after", int, description="only events with a larger seq")])
    @action(detail=True, methods=["get"])
    def events(self, request: Request, pk: str) -> HttpResponseBase:
        execution = self.get_object()
        given = {"after": request.query_params.get("after"), "last_event_id": request.headers.get("Last-Event-ID")}
        query = EventsQuerySerializer(data={name: value for name, value in given.items() if value is not None})
        query.is_valid(raise_exception=True)
        after = query.validated_data["after"]
        rows = execution_event_list(execution=execution, after=after)
        if wants_event_stream(request):
            if execution.is_terminal and not rows.exists():
                # Nothing will ever follow: 204 tells an EventSource to stop reconnecting (SSE spec).
                return Response(status=status.HTTP_204_NO_CONTENT)
            return sse_response(execution_feed(execution.pk, after=after))
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(EventEnvelopeSerializer(page, many=True).data)


class ScheduleViewSet(mixins.ListModelMixin, OwnedViewSet):
    """Cron runs of a template or definition (docs/api/rest.md#schedules): a bad cron or time zone is a 400 and writes
    nothing."""

    queryset = WorkflowSchedule.objects.none()
    serializer_class = ScheduleSerializer
    filterset_class = ScheduleFilter
    ordering_fields = ("name", "created_at", "next_run_at", "last_run_at")
    ordering = ("name",)
    not_found = "schedule not found"

    def get_queryset(self):
        return schedule_list(user=self.request.user)

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(ScheduleSerializer(self.get_object()).data)

    @extend_schema(request=ScheduleWriteSerializer, responses={201: ScheduleSerializer})
    def create(self, request: Request) -> Response:
        serializer = ScheduleWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        schedule = schedule_create(
            owner=request.user, name=data["name"], cron=data["cron"], timezone_name=data["timezone"],
            template=data.get("template"), definition_id=data.get("definition_id"), run_input=data.get("input"),
            config=data.get("config"), enabled=data["enabled"],
        )
        return Response(ScheduleSerializer(schedule).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=ScheduleWriteSerializer(partial=True), responses=ScheduleSerializer)
    def partial_update(self, request: Request, pk: str) -> Response:
        schedule = self.get_object()
        serializer = ScheduleWriteSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        return Response(ScheduleSerializer(schedule_update(schedule=schedule, **serializer.validated_data)).data)

    def destroy(self, request: Request, pk: str) -> Response:
        schedule_delete(schedule=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class TemplateViewSet(mixins.ListModelMixin, OwnedViewSet):
    """Built-ins (read-only), public templates and the user's own; looked up by id or key."""

    queryset = WorkflowTemplate.objects.none()
    serializer_class = TemplateSerializer
    filterset_class = TemplateFilter
    ordering_fields = ("key", "name", "category", "created_at", "updated_at")
    ordering = ("key",)

    def get_queryset(self):
        return template_list(user=self.request.user)

    def get_object(self) -> WorkflowTemplate:
        template = template_get(user=self.request.user, key_or_id=self.kwargs["pk"])
        if template is None:
            raise NotFound("template not found")
        return template

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(TemplateSerializer(self.get_object()).data)

    @extend_schema(request=TemplateWriteSerializer, responses={201: TemplateSerializer})
    def create(self, request: Request) -> Response:
        serializer = TemplateWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        template = template_create(owner=request.user, **serializer.validated_data)
        return Response(TemplateSerializer(template).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=TemplateUpdateSerializer, responses=TemplateSerializer)
    def partial_update(self, request: Request, pk: str) -> Response:
        template = self.get_object()
        serializer = TemplateUpdateSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        template = template_update(template=template, actor=request.user, **serializer.validated_data)
        return Response(TemplateSerializer(template).data)

    def destroy(self, request: Request, pk: str) -> Response:
        template_delete(template=self.get_object(), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class DefinitionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OwnedViewSet):
    """The user's definitions and everyone's public ones; only the owner may change or delete one."""

    queryset = WorkflowDefinition.objects.none()
    serializer_class = DefinitionSerializer
    filterset_class = DefinitionFilter
    ordering_fields = ("name", "created_at", "updated_at", "version")
    ordering = ("-updated_at",)
    not_found = "definition not found"

    def get_queryset(self):
        return definition_list(user=self.request.user)

    @extend_schema(request=DefinitionWriteSerializer, responses={201: DefinitionSerializer})
    def create(self, request: Request) -> Response:
        serializer = DefinitionWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        definition = definition_create(owner=request.user, **serializer.validated_data)
        return Response(DefinitionSerializer(definition).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=DefinitionUpdateSerializer, responses=DefinitionSerializer)
    def partial_update(self, request: Request, pk: str) -> Response:
        definition = self.get_object()
        serializer = DefinitionUpdateSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        definition = definition_update(definition=definition, actor=request.user, **serializer.validated_data)
        return Response(DefinitionSerializer(definition).data)

    def destroy(self, request: Request, pk: str) -> Response:
        definition_delete(definition=self.get_object(), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=GraphSerializer, responses=ValidationResultSerializer)
    @action(detail=False, methods=["post"])
    def validate(self, request: Request) -> Response:
        """Every problem with a graph, without saving anything: always 200 with `valid` and `errors`."""
        serializer = GraphSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        errors = validate_graph(serializer.validated_data)
        return Response({"valid": not errors, "errors": errors})

    @extend_schema(request=FromTemplateSerializer, responses={201: DefinitionSerializer})
    @action(detail=False, methods=["post"], url_path="from-template")
    def from_template(self, request: Request) -> Response:
        serializer = FromTemplateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        definition = definition_from_template(owner=request.user, **serializer.validated_data)
        return Response(DefinitionSerializer(definition).data, status=status.HTTP_201_CREATED)


class ConversationCheckpointsView(APIView):
    """GET /conversations/<id>/checkpoints/: the graph checkpoints of every run of one of your conversations."""

    @extend_schema(responses=CheckpointSerializer(many=True))
    def get(self, request: Request, pk: str) -> Response:
        found = conversation_checkpoint_list(user=request.user, conversation_id=pk)
        if found is None:
            raise NotFound("conversation not found")
        return Response(CheckpointSerializer(found, many=True).data)
