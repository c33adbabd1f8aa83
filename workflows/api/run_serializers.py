"""What a run answers over the API: the run (a sync run's result with its conversation and messages, a background
run's 202) and its trace. The shapes every sync turn answers render through plain functions of the rows, the
rest through their serializers' fields (docs/architecture.md, "Serializers"). Money is rendered as strings."""
from __future__ import annotations

from django.urls import reverse
from rest_framework import serializers

from conversations.api.serializers import ConversationSerializer, MessageSerializer, conversation_body, message_body
from core.api.serializers import moment, uuid_text
from core.money import usd
from workflows.models import LLMCall, NodeExecution, ProviderAttempt, ToolCall, WorkflowExecution


# Its declared fields say its shape (the schema); `execution_body` renders it from the row's attributes as DRF
# renders those fields (tests/api/test_serializers_per_request.py), building no fields per run: every
# sync chat turn answers one.
class ExecutionSerializer(serializers.Serializer):
    id = serializers.UUIDField(read_only=True)
    workflow_type = serializers.ChoiceField(choices=WorkflowExecution.Type.choices, read_only=True)
    # null: a run of a definition made from raw nodes, of a raw graph or of a template since deleted
    template = serializers.CharField(source="template.key", read_only=True, allow_null=True)
    definition = serializers.UUIDField(source="definition_id", allow_null=True, read_only=True)
    definition_version = serializers.IntegerField(allow_null=True, read_only=True)
    conversation = serializers.UUIDField(source="conversation_id", allow_null=True, read_only=True)
    schedule = serializers.UUIDField(source="schedule_id", allow_null=True, read_only=True)
    status = serializers.ChoiceField(choices=WorkflowExecution.Status.choices, read_only=True)
    mode = serializers.ChoiceField(choices=WorkflowExecution.Mode.choices, read_only=True)
    provider = serializers.CharField(read_only=True)
    model = serializers.CharField(read_only=True)
    config = serializers.JSONField(read_only=True)
    input_data = serializers.JSONField(read_only=True)
    output_data = serializers.JSONField(read_only=True)
    error_type = serializers.CharField(read_only=True)
    error_message = serializers.CharField(read_only=True, style={"base_template": "textarea.html"})
    created_at = serializers.DateTimeField(read_only=True)
    started_at = serializers.DateTimeField(allow_null=True, read_only=True)
    completed_at = serializers.DateTimeField(allow_null=True, read_only=True)
    execution_time_ms = serializers.IntegerField(allow_null=True, read_only=True)
    prompt_tokens = serializers.BigIntegerField(read_only=True)
    completion_tokens = serializers.BigIntegerField(read_only=True)
    total_tokens = serializers.BigIntegerField(read_only=True)
    cost = serializers.DecimalField(max_digits=20, decimal_places=8, read_only=True)
    llm_calls = serializers.IntegerField(read_only=True)
    tool_calls = serializers.IntegerField(read_only=True)
    correlation_id = serializers.CharField(read_only=True)
    trace_id = serializers.CharField(read_only=True)
    cancel_requested = serializers.BooleanField(read_only=True)
    forked_from = serializers.UUIDField(source="forked_from_id", allow_null=True, read_only=True)
    forked_from_checkpoint = serializers.CharField(read_only=True)
    prompt_version = serializers.UUIDField(source="prompt_version_id", allow_null=True, read_only=True)

    def to_representation(self, instance: WorkflowExecution) -> dict:
        return execution_body(instance)


def _int_or_none(value) -> int | None:
    return None if value is None else int(value)


def execution_body(execution: WorkflowExecution) -> dict:
    x = execution
    return {
        "id": str(x.id),
        "workflow_type": str(x.workflow_type),
        "template": None if x.template_id is None else x.template.key,
        "definition": uuid_text(x.definition_id),
        "definition_version": _int_or_none(x.definition_version),
        "conversation": uuid_text(x.conversation_id),
        "schedule": uuid_text(x.schedule_id),
        "status": str(x.status),
        "mode": str(x.mode),
        "provider": str(x.provider),
        "model": str(x.model),
        "config": x.config,
        "input_data": x.input_data,
        "output_data": x.output_data,
        "error_type": str(x.error_type),
        "error_message": str(x.error_message),
        "created_at": moment(x.created_at),
        "started_at": moment(x.started_at),
        "completed_at": moment(x.completed_at),
        "execution_time_ms": _int_or_none(x.execution_time_ms),
        "prompt_tokens": int(x.prompt_tokens),
        "completion_tokens": int(x.completion_tokens),
        "total_tokens": int(x.total_tokens),
        "cost": usd(x.cost),
        "llm_calls": int(x.llm_calls),
        "tool_calls": int(x.tool_calls),
        "correlation_id": str(x.correlation_id),
        "trace_id": str(x.trace_id),
        "cancel_requested": bool(x.cancel_requested),
        "forked_from": uuid_text(x.forked_from_id),
        "forked_from_checkpoint": str(x.forked_from_checkpoint),
        "prompt_version": uuid_text(x.prompt_version_id),
    }


class RunLinksSerializer(serializers.Serializer):
    self = serializers.SerializerMethodField(help_text="the run: poll it until its status is terminal")
    events = serializers.SerializerMethodField(help_text="its events: JSON, or SSE with Accept: text/event-stream")

    def get_self(self, execution: WorkflowExecution) -> str:
        return reverse("execution-detail", args=[execution.pk])

    def get_events(self, execution: WorkflowExecution) -> str:
        return reverse("execution-events", args=[execution.pk])


class AcceptedRunSerializer(ExecutionSerializer):
    """A background run's 202: the pending execution and where to follow it (also in the Location header)."""

    links = RunLinksSerializer(source="*", read_only=True)

    def to_representation(self, instance: WorkflowExecution) -> dict:
        return {**execution_body(instance), "links": RunLinksSerializer(instance).data}


class NodeExecutionSerializer(serializers.ModelSerializer):
    class Meta:
        model = NodeExecution
        fields = (
            "index", "node_id", "node_type", "status", "started_at", "completed_at", "duration_ms",
            "prompt_tokens", "completion_tokens", "total_tokens", "cost", "llm_calls", "tool_calls",
            "error_message", "output",
        )
        read_only_fields = fields


class ToolCallSerializer(serializers.ModelSerializer):
    class Meta:
        model = ToolCall
        fields = ("id", "node_id", "tool", "server", "arguments", "result", "ok", "error", "duration_ms", "cost",
                  "created_at")
        read_only_fields = fields


class LLMCallSerializer(serializers.ModelSerializer):
    node_id = serializers.CharField(source="node_execution.node_id", read_only=True, allow_null=True)
    node_index = serializers.IntegerField(source="node_execution.index", read_only=True, allow_null=True)

    class Meta:
        model = LLMCall
        fields = (
            "id", "node_id", "node_index", "provider", "model", "requested_model", "deployment", "prompt_tokens",
            "completion_tokens", "total_tokens", "cached_prompt_tokens", "reasoning_tokens", "cost", "provider_cost",
            "estimated", "unpriced", "usage_raw", "duration_ms", "prompt_version", "created_at",
        )
        read_only_fields = fields


class ProviderAttemptSerializer(serializers.ModelSerializer):
    node_id = serializers.CharField(source="node_execution.node_id", read_only=True, allow_null=True)

    class Meta:
        model = ProviderAttempt
        fields = ("id", "node_id", "deployment", "model", "provider", "ok", "error_type", "error", "status_code",
                  "cooldown_s", "duration_ms", "created_at")
        read_only_fields = fields


class ExecutionDetailSerializer(ExecutionSerializer):
    """An execution with its trace. `llm_calls`/`tool_calls` stay the counts (as in lists and events); the
    rows themselves are `llm_call_log`/`tool_call_log`; a routed call's tries, each, are `provider_attempts`."""

    graph = serializers.JSONField(read_only=True)
    node_executions = NodeExecutionSerializer(many=True, read_only=True)
    tool_call_log = ToolCallSerializer(source="tool_call_rows", many=True, read_only=True)
    llm_call_log = LLMCallSerializer(source="llm_call_rows", many=True, read_only=True)
    provider_attempts = ProviderAttemptSerializer(many=True, read_only=True)

    def to_representation(self, instance: WorkflowExecution) -> dict:
        # The execution's own fields render as a run's do; the trace's through the fields declared here.
        body = execution_body(instance)
        for name in ("graph", "node_executions", "tool_call_log", "llm_call_log", "provider_attempts"):
            field = self.fields[name]
            body[name] = field.to_representation(field.get_attribute(instance))
        return body


class RunResultSerializer(serializers.Serializer):
    """A finished sync run (docs/api/rest.md): the execution, its conversation (fresh aggregates) and the turn's
    messages, oldest first ([user, assistant] for a chat turn; empty without a conversation)."""

    execution = ExecutionSerializer(source="*", read_only=True)
    conversation = ConversationSerializer(read_only=True, allow_null=True)
    messages = MessageSerializer(many=True, read_only=True, source="turn_messages")

    def to_representation(self, instance: WorkflowExecution) -> dict:
        conversation = instance.conversation
        return {"execution": execution_body(instance),
                "conversation": None if conversation is None else conversation_body(conversation),
                "messages": [message_body(message) for message in instance.turn_messages]}
