"""Runs over the API: requests to start one, their events, schedules, templates and definitions (what a run answers:
workflows/api/run_serializers.py). Money is rendered as strings."""
from __future__ import annotations

from drf_spectacular.utils import PolymorphicProxySerializer
from rest_framework import serializers

from conversations.services import MAX_MESSAGE_CHARS
from core.api.serializers import StrictSerializer
from engine.config import config_errors
from workflows.events import event_envelope
from workflows.models import (
    ExecutionEvent,
    WorkflowDefinition,
    WorkflowExecution,
    WorkflowSchedule,
    WorkflowTemplate,
)

RUN_MODES = (WorkflowExecution.Mode.SYNC, WorkflowExecution.Mode.STREAM, WorkflowExecution.Mode.BACKGROUND)


# --- requests -------------------------------------------------------------------------------------------
class RunInputSerializer(StrictSerializer):
    message = serializers.CharField(required=False, allow_null=True, allow_blank=True, trim_whitespace=False,
                                    max_length=MAX_MESSAGE_CHARS)
    variables = serializers.DictField(required=False)


class ExecutionCreateSerializer(StrictSerializer):
    """POST /executions/: exactly one of template (key or id), definition_id, graph (docs/usage.md#the-graph-format)."""

    template = serializers.CharField(required=False, allow_null=True, max_length=100)
    definition_id = serializers.UUIDField(required=False, allow_null=True)
    graph = serializers.DictField(required=False, allow_null=True)
    input = RunInputSerializer(required=False, allow_null=True)
    conversation_id = serializers.UUIDField(required=False, allow_null=True)
    config = serializers.DictField(required=False, allow_null=True)
    mode = serializers.ChoiceField(choices=RUN_MODES, default=WorkflowExecution.Mode.SYNC)
    from_checkpoint = serializers.CharField(required=False, max_length=64, help_text=(
        "time travel: a checkpoint id from GET …/checkpoints/; the new run goes on from it with its run's graph, "
        "input and config, linked to it (`forked_from`), with accounting of its own"))

    def validate_config(self, value: dict | None) -> dict | None:
        errors = config_errors(value) if value is not None else []
        if errors:
            raise serializers.ValidationError(errors)  # [{"path", "code", "message"}], as the engine reports
        return value

    def validate(self, attrs: dict) -> dict:
        sources = [name for name in ("template", "definition_id", "graph", "from_checkpoint")
                   if attrs.get(name) is not None]
        if len(sources) != 1:
            raise serializers.ValidationError("give exactly one of template, definition_id, graph, from_checkpoint")
        given = [name for name in ("input", "conversation_id", "config") if attrs.get(name) is not None]
        if "from_checkpoint" in sources and given:
            raise serializers.ValidationError({given[0]: "a fork takes its run's own; leave it out"})
        return attrs


class ResumeSerializer(StrictSerializer):
    """POST /executions/<id>/resume/: `answer` (any JSON) when one question waits, or `answers` by interrupt id."""

    answer = serializers.JSONField(required=False)
    answers = serializers.DictField(child=serializers.JSONField(), required=False, allow_empty=False)
    mode = serializers.ChoiceField(choices=RUN_MODES, default=WorkflowExecution.Mode.SYNC)

    def validate(self, attrs: dict) -> dict:
        if ("answer" in attrs) == ("answers" in attrs):
            raise serializers.ValidationError("give exactly one of answer, answers")
        return attrs


class CheckpointSerializer(serializers.Serializer):
    """One checkpoint of a run's graph (time travel): fork a new run from it with POST /executions/
    {"from_checkpoint": checkpoint_id}."""

    execution_id = serializers.UUIDField()
    checkpoint_id = serializers.CharField()
    parent_checkpoint_id = serializers.CharField(allow_null=True)
    step = serializers.IntegerField(help_text="LangGraph's step: -1 the input, then one per step")
    source = serializers.CharField(help_text="input, loop, fork, …")
    nodes = serializers.ListField(child=serializers.CharField(), help_text="the node(s) whose step made it")
    next = serializers.ListField(child=serializers.CharField(), help_text="the node(s) that ran from it")
    created_at = serializers.DateTimeField()
    state = serializers.DictField(help_text="a summary: messages (count), last_message (200 characters), "
                                            "variables")


MAX_SEQ = 2**31 - 1


class EventsQuerySerializer(serializers.Serializer):
    """Where a read of the event log starts: after `Last-Event-ID` (SSE resume) or else `?after=`."""

    # A seq is a PositiveIntegerField: nothing past its range can name an event.
    after = serializers.IntegerField(min_value=0, max_value=MAX_SEQ, required=False)
    last_event_id = serializers.IntegerField(min_value=0, max_value=MAX_SEQ, required=False)

    def validate(self, attrs: dict) -> dict:
        return {"after": attrs.get("last_event_id", attrs.get("after", 0))}


# --- responses ------------------------------------------------------------------------------------------
class EventEnvelopeSerializer(serializers.Serializer):
    """A persisted event as its envelope (docs/api/rest.md#following-runs-live), the very dict websockets and SSE
    carry (the fields document it; events.event_envelope builds it). Each event's `data` is documented by
    EXECUTION_EVENT below."""

    event = serializers.CharField()
    execution_id = serializers.UUIDField()
    seq = serializers.IntegerField(allow_null=True)
    ts = serializers.DateTimeField()
    data = serializers.DictField()

    def to_representation(self, instance: ExecutionEvent) -> dict:
        return event_envelope(execution_id=instance.execution_id, event=instance.event, data=instance.data,
                              seq=instance.seq, ts=instance.created_at)


# What each event's `data` holds (docs/api/rest.md#events), for the schema only: the recorder and the runner
# write it. Fields that page lists are required, later additions optional (older rows may lack them); null only
# where it is a real value.
def _count(**kwargs) -> serializers.IntegerField:
    return serializers.IntegerField(min_value=0, **kwargs)


def _money(**kwargs) -> serializers.CharField:
    return serializers.CharField(help_text="USD, a decimal string", **kwargs)


class WorkflowCompletedData(serializers.Serializer):
    status = serializers.CharField(required=False)
    execution_time_ms = _count()
    prompt_tokens = _count()
    completion_tokens = _count()
    total_tokens = _count()
    cost = _money()
    llm_calls = _count()
    tool_calls = _count()
    message_id = serializers.UUIDField(allow_null=True, help_text="the assistant message; null: no conversation")


class NodeFinishedData(serializers.Serializer):
    node_id = serializers.CharField()
    node_type = serializers.CharField()
    index = _count()
    status = serializers.CharField(required=False)
    duration_ms = _count()
    total_tokens = _count()
    cost = _money()
    error = serializers.CharField(allow_null=True)


class WorkflowEndedData(WorkflowCompletedData):
    """workflow_failed and workflow_cancelled: why, and the totals so far."""

    error_type = serializers.CharField()
    error_message = serializers.CharField(allow_blank=True)
    raised = serializers.DictField(required=False, help_text="the graph's exception that ended the run (its own "
                                   "code's, LangGraph's GraphRecursionError): {error: its class, message: its text}")


EVENT_DATA = {
    "workflow_started": {
        "workflow_type": serializers.ChoiceField(choices=WorkflowExecution.Type.choices),
        "template": serializers.CharField(allow_null=True, help_text="template key; null: a definition made "
                                                                    "from raw nodes, a raw graph"),
        "definition": serializers.UUIDField(allow_null=True),
        "conversation_id": serializers.UUIDField(allow_null=True),
        "provider": serializers.CharField(allow_blank=True),
        "model": serializers.CharField(allow_blank=True),
        "forked_from": serializers.DictField(required=False, help_text="a fork: {execution_id, checkpoint_id} it "
                                                                       "goes on from"),
    },
    "node_started": {"node_id": serializers.CharField(), "node_type": serializers.CharField(), "index": _count()},
    "token_usage": {
        "node_id": serializers.CharField(), "provider": serializers.CharField(), "model": serializers.CharField(),
        "prompt_tokens": _count(), "completion_tokens": _count(), "total_tokens": _count(),
        "cached_prompt_tokens": _count(), "reasoning_tokens": _count(), "cost": _money(),
        "estimated": serializers.BooleanField(),
    },
    "tool_start": {  # a tool call about to run (an MCP tool's is written and sent before it waits on the server)
        "node_id": serializers.CharField(), "tool": serializers.CharField(),
        "call_id": serializers.CharField(allow_null=True, help_text="the model's id of the call"),
    },
    "tool_called": {
        "node_id": serializers.CharField(), "tool": serializers.CharField(), "ok": serializers.BooleanField(),
        "duration_ms": _count(), "error": serializers.CharField(required=False, allow_null=True),
        # A JSON workflow's tools node: the tool's message to the model, as the run's graph state holds it.
        "call_id": serializers.CharField(required=False, help_text="the model's id of the call"),
        "message_id": serializers.CharField(required=False, help_text="the tool's message's id in the run's state"),
        "content": serializers.CharField(required=False, help_text="what the model is told (cut at 4,000 "
                                                                   "characters; the state holds it whole)"),
    },
    "retrieval": {  # a search of knowledge collections (a retrieval node's, a Python graph's retriever)
        "node_id": serializers.CharField(), "query": serializers.CharField(),
        "collections": serializers.ListField(child=serializers.CharField(), help_text="as named: ids or names"),
        "mode": serializers.CharField(), "k": _count(),
        "score_threshold": serializers.FloatField(required=False), "filters": serializers.DictField(required=False),
        "chunks": serializers.ListField(child=serializers.DictField(), help_text="best first: chunk_id, "
                                        "document_id, collection_id, title, position, score"),
        "embeddings": serializers.ListField(child=serializers.DictField(), help_text="the query's embedding "
                                            "calls (LLM calls of the node): model, texts"),
        "rerank_model": serializers.CharField(required=False, help_text="the rerank model, when it reranked"),
        "reranks": serializers.ListField(child=serializers.DictField(), required=False, help_text="the rerank "
                                         "calls (LLM calls of the node, kind rerank): model, documents"),
        "latency_ms": _count(),
    },
    "node_completed": NodeFinishedData,
    "node_failed": NodeFinishedData,
    "message_saved": {
        "message_id": serializers.UUIDField(), "conversation_id": serializers.UUIDField(),
        "role": serializers.CharField(), "total_tokens": _count(), "cost": _money(),
    },
    "limit_exceeded": {"limit": serializers.CharField(), "value": serializers.JSONField()},
    "budget_threshold": {  # a run's spend took a budget past one of its thresholds (once per budget and period)
        "budget_id": serializers.UUIDField(), "threshold": serializers.IntegerField(),
        "period_start": serializers.DateTimeField(), "spent": serializers.CharField(),
        "percent": serializers.CharField(), "limit_usd": serializers.CharField(required=False),
        "limit_tokens": serializers.IntegerField(required=False),
    },
    "input_required": {
        "node_id": serializers.CharField(help_text="the human_input node that asks"),
        "interrupt_id": serializers.CharField(help_text="answer it by this id: POST …/resume/ {\"answers\": {id: …}}"),
        "prompt": serializers.CharField(),
        "schema": serializers.JSONField(allow_null=True, help_text="JSON Schema the answer must meet; null: any"),
    },
    "workflow_resumed": {
        "answered": serializers.ListField(child=serializers.CharField(), help_text="the interrupt ids answered"),
        "attempt": _count(required=False, help_text="after a crash: the how-manieth time it goes on"),
        "from_checkpoint": serializers.BooleanField(required=False, help_text="after a crash: false when no "
                                                    "checkpoint was written yet (it starts again from its input)"),
    },
    "workflow_requeued": {"attempt": _count(), "reason": serializers.CharField(help_text="why its worker is "
                                                                                          "taken for dead")},
    "workflow_completed": WorkflowCompletedData,
    "workflow_failed": WorkflowEndedData,
    "workflow_cancelled": WorkflowEndedData,
}


def _event_serializer(event: str, data) -> type[serializers.Serializer]:
    name = "".join(part.title() for part in event.split("_"))
    if isinstance(data, dict):
        data = type(f"{name}Data", (serializers.Serializer,), dict(data))
    return type(f"{name}Event", (EventEnvelopeSerializer,), {
        "event": serializers.ChoiceField(choices=[event]), "data": data(),
        "__doc__": f"The `{event}` event (see the REST API docs: Events)."})


EXECUTION_EVENT = PolymorphicProxySerializer(
    component_name="ExecutionEvent", resource_type_field_name="event", many=True,
    serializers={event: _event_serializer(event, data) for event, data in EVENT_DATA.items()})


# --- schedules ------------------------------------------------------------------------------------------
class ScheduleSerializer(serializers.ModelSerializer):
    """A cron run. Writes are validated by the schedule services (cron, time zone, source, config)."""

    # a schedule runs a template or a definition: the other one is null
    template = serializers.CharField(source="template.key", read_only=True, default=None, allow_null=True)
    definition_id = serializers.UUIDField(source="definition.id", read_only=True, default=None, allow_null=True)
    timezone = serializers.CharField(read_only=True)
    # Set by LangGraph crons (/langgraph/ runs/crons, the same rows): a chat schedule's turns go to this
    # conversation (null: a new one each time); each run's end is POSTed to the webhook; none runs from ends_at on.
    conversation_id = serializers.UUIDField(read_only=True, allow_null=True)
    webhook = serializers.CharField(read_only=True, help_text="empty: no webhook")

    class Meta:
        model = WorkflowSchedule
        fields = ("id", "name", "template", "definition_id", "input", "config", "cron", "timezone", "enabled",
                  "chat", "conversation_id", "webhook", "ends_at",
                  "next_run_at", "last_run_at", "last_execution", "last_error", "last_error_at", "created_at",
                  "updated_at")
        read_only_fields = fields
        extra_kwargs = {"last_error": {"help_text": (
            "why the last tick started no run (its refusal's code and message; empty when it started one): a "
            "template or definition its owner can no longer see disables the schedule, a passing refusal (a hard "
            "budget with no room, too many runs at once) leaves it enabled")}}


class ScheduleWriteSerializer(StrictSerializer):
    name = serializers.CharField(max_length=255)
    template = serializers.CharField(required=False, allow_null=True, max_length=100)
    definition_id = serializers.UUIDField(required=False, allow_null=True)
    input = serializers.DictField(required=False)
    config = serializers.DictField(required=False)
    cron = serializers.CharField(max_length=100)
    timezone = serializers.CharField(required=False, default="UTC", max_length=64)
    enabled = serializers.BooleanField(required=False, default=True)


# --- templates and definitions --------------------------------------------------------------------------
# Graphs, params and metadata are validated by the services (the engine's one graph and config validators),
# which report every problem with its path; the serializers only check shapes.
class TemplateSerializer(serializers.ModelSerializer):
    class Meta:
        model = WorkflowTemplate
        fields = ("id", "key", "name", "description", "category", "is_builtin", "is_public", "params", "graph",
                  "version", "created_at", "updated_at")
        read_only_fields = fields


class TemplateWriteSerializer(StrictSerializer):
    key = serializers.SlugField(max_length=100, help_text=(
        "unique among your own templates and the built-in and public ones (other users' private keys do not "
        "count); where a key names two templates you see, yours is the one it names"))
    name = serializers.CharField(max_length=255)
    description = serializers.CharField(required=False, allow_blank=True, default="", max_length=10_000)
    category = serializers.CharField(required=False, default="general", max_length=64)
    params = serializers.DictField(required=False, default=dict)
    graph = serializers.DictField()
    is_public = serializers.BooleanField(required=False, default=False)


class TemplateUpdateSerializer(TemplateWriteSerializer):
    """PATCH: every field optional; the key is fixed at creation."""

    key = None
    name = serializers.CharField(required=False, max_length=255)
    description = serializers.CharField(required=False, allow_blank=True, max_length=10_000)
    category = serializers.CharField(required=False, max_length=64)
    params = serializers.DictField(required=False)
    graph = serializers.DictField(required=False)
    is_public = serializers.BooleanField(required=False)


class DefinitionSerializer(serializers.ModelSerializer):
    # null: made from raw nodes (not copied from a template), or its template was deleted
    template = serializers.SlugRelatedField(slug_field="key", read_only=True, allow_null=True)

    class Meta:
        model = WorkflowDefinition
        fields = ("id", "name", "description", "nodes", "edges", "metadata", "template", "version", "is_public",
                  "created_at", "updated_at")
        read_only_fields = fields


class DefinitionWriteSerializer(StrictSerializer):
    name = serializers.CharField(max_length=255)
    description = serializers.CharField(required=False, allow_blank=True, default="", max_length=10_000)
    nodes = serializers.ListField(child=serializers.JSONField())
    edges = serializers.ListField(child=serializers.JSONField())
    metadata = serializers.DictField(required=False, default=dict)
    is_public = serializers.BooleanField(required=False, default=False)


class DefinitionUpdateSerializer(DefinitionWriteSerializer):
    name = serializers.CharField(required=False, max_length=255)
    description = serializers.CharField(required=False, allow_blank=True, max_length=10_000)
    nodes = serializers.ListField(child=serializers.JSONField(), required=False)
    edges = serializers.ListField(child=serializers.JSONField(), required=False)
    metadata = serializers.DictField(required=False)
    is_public = serializers.BooleanField(required=False)


class GraphSerializer(StrictSerializer):
    """A graph to check: flat or React-Flow `nodes` and `edges` (docs/usage.md#the-graph-format)."""

    nodes = serializers.JSONField()
    edges = serializers.JSONField(required=False)


class GraphErrorSerializer(serializers.Serializer):
    path = serializers.CharField(allow_blank=True)
    code = serializers.CharField()
    message = serializers.CharField()


class ValidationResultSerializer(serializers.Serializer):
    valid = serializers.BooleanField()
    errors = GraphErrorSerializer(many=True)


class FromTemplateSerializer(StrictSerializer):
    template = serializers.CharField(max_length=100, help_text="template key or id")
    name = serializers.CharField(required=False, max_length=255)
