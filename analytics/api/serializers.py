"""Analytics over the API: usage reports, template analytics and prices. Money is rendered as strings (Decimal)."""
from __future__ import annotations

from datetime import date

from django.utils import timezone
from rest_framework import serializers

from analytics.models import ModelPrice, UsageRollup
from analytics.selectors import USAGE_GROUPS
from analytics.tool_usage import TOOL_GROUPS
from core.api.serializers import StrictSerializer, money_field

MONEY = {"max_digits": 20, "decimal_places": 8}
MAX_TOOL_REPORT_DAYS = 366
GROUP_COLUMNS = {group: list(columns.values()) for group, (columns, _) in USAGE_GROUPS.items()}


class UsageQuerySerializer(serializers.Serializer):
    group_by = serializers.ChoiceField(choices=list(USAGE_GROUPS), default="day",
                                       help_text="what a row of the report is: a UTC day, a provider, a model "
                                                 "(with its provider), a template, a conversation or an API "
                                                 "key")
    start = serializers.DateField(required=False, help_text="first UTC day included (YYYY-MM-DD); default: "
                                                            "the first day with usage")
    end = serializers.DateField(required=False, help_text="last UTC day included (YYYY-MM-DD); default: the "
                                                          "last day with usage")
    owner = serializers.CharField(required=False, max_length=150,
                                  help_text="staff only: one user's usage (username); default: everyone's")
    page = serializers.IntegerField(required=False, default=1, min_value=1, max_value=1_000_000,
                                    help_text="a page past the last one is empty (JSON only; CSV has every row)")
    page_size = serializers.IntegerField(required=False, default=100, min_value=1, max_value=1000)

    def validate(self, attrs):
        if attrs.get("start") and attrs.get("end") and attrs["start"] > attrs["end"]:
            raise serializers.ValidationError({"end": ["end is before start"]})
        return attrs


class ToolUsageQuerySerializer(serializers.Serializer):
    group_by = serializers.ChoiceField(choices=list(TOOL_GROUPS), default="tool",
                                       help_text="a row per tool (its qualified name), per MCP server or per template")
    start = serializers.DateField(required=False, help_text="first UTC day included; default: 29 days before end")
    end = serializers.DateField(required=False, help_text="last UTC day included; default: today (UTC)")
    owner = serializers.CharField(required=False, max_length=150,
                                  help_text="staff only: one user's runs (username); default: everyone's")

    def validate(self, attrs):
        attrs.setdefault("end", timezone.now().date())
        # (29 days before, or the first day a date can be)
        attrs.setdefault("start", date.fromordinal(max(attrs["end"].toordinal() - 29, date.min.toordinal())))
        if attrs["start"] > attrs["end"]:
            raise serializers.ValidationError({"end": ["end is before start"]})
        if (attrs["end"] - attrs["start"]).days >= MAX_TOOL_REPORT_DAYS:
            raise serializers.ValidationError({"start": [f"at most {MAX_TOOL_REPORT_DAYS} days at once"]})
        return attrs


class ToolFiguresSerializer(serializers.Serializer):
    """A tool's, server's or template's calls in the range: how many, how many failed, what they cost (priced MCP
    tools), and their duration's 50th and 95th percentiles."""

    FIELDS = ("key", "name", "calls", "errors", "cost", "p50_ms", "p95_ms")
    key = serializers.CharField(allow_null=True, help_text="the tool's qualified name, the server's or template's "
                                                           "id (null: built-in tools / no template)")
    name = serializers.CharField(help_text="the server's or template's name (a tool's: its server's)")
    calls = serializers.IntegerField()
    errors = serializers.IntegerField()
    cost = serializers.DecimalField(**MONEY)
    p50_ms = serializers.IntegerField()
    p95_ms = serializers.IntegerField()


class ToolUsageReportSerializer(serializers.Serializer):
    """/analytics/tools/'s answer: the grouping and range asked for, and a row per tool, server or template."""

    group_by = serializers.ChoiceField(choices=list(TOOL_GROUPS))
    start = serializers.DateField()
    end = serializers.DateField()
    owner = serializers.CharField(allow_null=True, help_text="whose runs (staff: ?owner=); null: the caller's own, "
                                                             "or for staff everyone's")
    results = ToolFiguresSerializer(many=True)


class UsageFiguresSerializer(serializers.Serializer):
    """What a usage row counts (analytics.models.UsageRollup): runs ended, by outcome; messages that exist (a
    run's once it has ended); and the LLM calls of ended runs with their tokens and cost."""

    executions = serializers.IntegerField()
    completed_executions = serializers.IntegerField()
    failed_executions = serializers.IntegerField()
    cancelled_executions = serializers.IntegerField()
    messages = serializers.IntegerField()
    llm_calls = serializers.IntegerField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()
    cached_prompt_tokens = serializers.IntegerField()
    reasoning_tokens = serializers.IntegerField()
    cost = serializers.DecimalField(**MONEY)


class UsageRowSerializer(UsageFiguresSerializer):
    """One group of the report: its own columns (which depend on group_by) and the figures. Without a group_by
    (the OpenAPI schema's view of it) every column is there, each documented as optional."""

    day = serializers.DateField(required=False, help_text="group_by=day")
    provider = serializers.CharField(required=False, help_text="group_by=provider or model")
    model = serializers.CharField(required=False, help_text="group_by=model")
    template_id = serializers.UUIDField(required=False, allow_null=True,
                                        help_text="group_by=template; null: runs of no (or a deleted) template")
    template_key = serializers.CharField(required=False, allow_null=True, help_text="group_by=template")
    conversation_id = serializers.UUIDField(required=False, allow_null=True,
                                            help_text="group_by=conversation; null: runs of no (or a deleted) "
                                                      "conversation")
    conversation_title = serializers.CharField(required=False, allow_null=True,
                                               help_text="group_by=conversation")
    key_id = serializers.UUIDField(required=False, allow_null=True,
                                   help_text="group_by=key: the API key's id; null: runs not started with a key")
    key_name = serializers.CharField(required=False, allow_null=True, help_text="group_by=key")
    key_prefix = serializers.CharField(required=False, allow_null=True, help_text="group_by=key")

    def __init__(self, *args, group_by: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.group_by = group_by
        for name in ("day", "provider", "model", "template_id", "template_key", "conversation_id",
                     "conversation_title", "key_id", "key_name", "key_prefix"):
            if group_by is not None and name not in GROUP_COLUMNS[group_by]:
                self.fields.pop(name)

    def to_representation(self, row):
        columns, _ = USAGE_GROUPS[self.group_by]
        flat = {name: row[column] for column, name in columns.items()}
        flat.update({name: row[f"n_{name}"] for name in UsageRollup.COUNTERS})
        return super().to_representation(flat)


class UsageReportSerializer(serializers.Serializer):
    """A page of the report (?page=, ?page_size= up to 1000), with the totals over every row in range."""

    count = serializers.IntegerField(help_text="number of rows (groups) in range")
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    group_by = serializers.ChoiceField(choices=list(USAGE_GROUPS))
    start = serializers.DateField(allow_null=True)
    end = serializers.DateField(allow_null=True)
    owner = serializers.CharField(allow_null=True, help_text="whose usage: a username, or null for everyone's "
                                                             "(staff)")
    totals = UsageFiguresSerializer()
    results = UsageRowSerializer(many=True)


class TemplateAnalyticsSerializer(serializers.Serializer):
    """A template's analytics over every user's runs of it: zeros for a template that never ran."""

    template_id = serializers.UUIDField(source="pk", read_only=True)
    template_key = serializers.CharField(source="key", read_only=True)
    template_name = serializers.CharField(source="name", read_only=True)
    total_executions = serializers.IntegerField(read_only=True)
    successful_executions = serializers.IntegerField(read_only=True)
    failed_executions = serializers.IntegerField(read_only=True)
    cancelled_executions = serializers.IntegerField(read_only=True)
    total_execution_time_ms = serializers.IntegerField(read_only=True)
    average_execution_time_ms = serializers.FloatField(read_only=True, allow_null=True)
    prompt_tokens = serializers.IntegerField(read_only=True)
    completion_tokens = serializers.IntegerField(read_only=True)
    total_tokens = serializers.IntegerField(read_only=True)
    total_cost = serializers.DecimalField(read_only=True, **MONEY)
    last_used_at = serializers.DateTimeField(read_only=True, allow_null=True)
    last_success_at = serializers.DateTimeField(read_only=True, allow_null=True)
    last_failure_at = serializers.DateTimeField(read_only=True, allow_null=True)

    FIELDS = (
        "template_id", "template_key", "template_name", "total_executions", "successful_executions",
        "failed_executions", "cancelled_executions", "total_execution_time_ms", "average_execution_time_ms",
        "prompt_tokens", "completion_tokens", "total_tokens", "total_cost", "last_used_at",
        "last_success_at", "last_failure_at",
    )


class PriceSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelPrice
        fields = ("id", "provider", "model_pattern", "input_per_million", "cached_input_per_million",
                  "output_per_million", "per_call", "effective_from", "is_active", "created_at")
        read_only_fields = fields


class PriceWriteSerializer(StrictSerializer):
    """A new price row. On PATCH only `is_active` may change: figures and dates are history (post a new row)."""

    provider = serializers.CharField(max_length=64, help_text='a provider name, "*" for any provider, or "mcp" for '
                                                              'MCP tool calls')
    model_pattern = serializers.CharField(max_length=255, help_text="a regular expression matching the whole "
                                                                    "model name (or provider/model); for provider "
                                                                    "mcp, the tool's <server>__<tool>")
    input_per_million = money_field(required=False, help_text="a model's")
    cached_input_per_million = money_field(required=False, allow_null=True)
    output_per_million = money_field(required=False, help_text="a model's")
    per_call = money_field(required=False, help_text="USD per call of an MCP tool (provider mcp)")
    effective_from = serializers.DateTimeField(required=False, help_text="default: now")
    is_active = serializers.BooleanField(required=False, default=True)
