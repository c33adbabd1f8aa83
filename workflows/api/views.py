"""Executions over the API (SPEC §7): start a run, list and read runs, cancel, read the event log (JSON or
SSE). Thin: validate with a serializer, call a service or selector, render; ChatterErrors render themselves."""
from __future__ import annotations

from django.http import HttpResponseBase
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle

from chatter_project.api.sse import (
    EventStreamNegotiation,
    sse_response,
    wants_event_stream,
)
from chatter_project.errors import NotFound
from workflows.api.serializers import (
    EventEnvelopeSerializer,
    EventsQuerySerializer,
    ExecutionCreateSerializer,
    ExecutionDetailSerializer,
    ExecutionSerializer,
    RunResultSerializer,
    ScheduleSerializer,
    ScheduleWriteSerializer,
)
from workflows.models import (
    WorkflowExecution,
    WorkflowSchedule,
)
from workflows.realtime import execution_feed, execution_run_streamed
from workflows.selectors import (
    execution_event_list,
    execution_get,
    execution_list,
    execution_with_trace,
    schedule_get,
    schedule_list,
)
from workflows.services import (
    execution_cancel,
    execution_create,
    execution_run,
    schedule_create,
    schedule_delete,
    schedule_update,
)


def run_response(execution: WorkflowExecution) -> HttpResponseBase:
    """Answer a just-created (pending) run in its mode: 202 with the pending run (a worker runs it), SSE of its
    events while it runs, or run it to the end and answer 201 with the result."""
    if execution.mode == WorkflowExecution.Mode.BACKGROUND:
        return Response(ExecutionSerializer(execution).data, status=status.HTTP_202_ACCEPTED)
    if execution.mode == WorkflowExecution.Mode.STREAM:
        return sse_response(execution_run_streamed(execution.pk))
    execution = execution_run(execution_id=execution.pk)
    return Response(RunResultSerializer(execution).data, status=status.HTTP_201_CREATED)


class ExecutionViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    queryset = WorkflowExecution.objects.none()  # the real one, per user, is get_queryset()
    serializer_class = ExecutionSerializer
    content_negotiation_class = EventStreamNegotiation
    filterset_fields = ("status", "workflow_type", "mode")
    ordering_fields = ("created_at", "completed_at", "execution_time_ms", "total_tokens", "cost")
    ordering = ("-created_at",)
    throttle_scope = "runs"

    def get_queryset(self):
        return execution_list(user=self.request.user)

    def get_object(self) -> WorkflowExecution:
        execution = execution_get(user=self.request.user, execution_id=self.kwargs["pk"])
        if execution is None:  # another user's run is a 404 too, never a 403
            raise NotFound("execution not found")
        return execution

    def get_throttles(self):
        return [ScopedRateThrottle()] if self.action == "create" else []

    @extend_schema(request=ExecutionCreateSerializer, responses={201: RunResultSerializer})
    def create(self, request: Request) -> HttpResponseBase:
        serializer = ExecutionCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        run_input = data.get("input") or {}
        execution = execution_create(
            owner=request.user, mode=data["mode"], template=data.get("template"),
            definition_id=data.get("definition_id"), graph=data.get("graph"), message=run_input.get("message"),
            variables=run_input.get("variables"), conversation_id=data.get("conversation_id"),
            config=data.get("config"),
        )
        return run_response(execution)

    @extend_schema(responses=ExecutionDetailSerializer)
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(ExecutionDetailSerializer(execution_with_trace(execution=self.get_object())).data)

    @extend_schema(request=None, responses=ExecutionSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        execution = execution_cancel(execution=self.get_object(), actor=request.user)
        return Response(ExecutionSerializer(execution).data)

    @extend_schema(responses=EventEnvelopeSerializer(many=True))
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


class ScheduleViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Cron runs of a template or definition (SPEC §7): a bad cron or time zone is a 400 and writes nothing."""

    queryset = WorkflowSchedule.objects.none()
    serializer_class = ScheduleSerializer
    ordering = ("name",)

    def get_queryset(self):
        return schedule_list(user=self.request.user)

    def get_object(self) -> WorkflowSchedule:
        schedule = schedule_get(user=self.request.user, schedule_id=self.kwargs["pk"])
        if schedule is None:
            raise NotFound("schedule not found")
        return schedule

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
