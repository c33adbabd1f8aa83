"""Experiments over the API: request serializers refuse unknown fields; a target names exactly one thing to run,
an evaluator one kind of judgement."""
from __future__ import annotations

import re

from rest_framework import serializers

from core.api.serializers import StrictSerializer, money_field
from core.models import INT_MAX
from engine.json_schemas import outside_refs
from experiments.evaluators import KINDS, LLM_JUDGE
from experiments.models import Experiment, ExperimentResult
from experiments.progress import progress_counted
from prompts.models import NAME_PATTERN

SCORE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$"
MAX_TARGETS = 10
MAX_EVALUATORS = 20


class PromptRefSerializer(StrictSerializer):
    name = serializers.RegexField(NAME_PATTERN)
    label = serializers.RegexField(NAME_PATTERN, required=False)
    version = serializers.IntegerField(min_value=1, max_value=INT_MAX, required=False)

    def validate(self, attrs: dict) -> dict:
        if "label" in attrs and "version" in attrs:
            raise serializers.ValidationError("give label or version, not both")
        return attrs


class TargetSerializer(StrictSerializer):
    """What runs each item: a template (key or id), a definition (its current version), or a stored prompt's
    version or label as one model call; `config` as a run's (provider, model, temperature…)."""

    name = serializers.RegexField(SCORE_NAME, required=False, help_text="default: what it runs")
    template = serializers.CharField(max_length=100, required=False)
    definition = serializers.UUIDField(required=False)
    definition_version = serializers.IntegerField(min_value=1, max_value=INT_MAX, required=False,
                                                  help_text="refused unless it is the definition's current one")
    prompt = PromptRefSerializer(required=False)
    config = serializers.DictField(required=False)

    def validate(self, attrs: dict) -> dict:
        given = [key for key in ("template", "definition", "prompt") if key in attrs]
        if len(given) != 1:
            raise serializers.ValidationError("give exactly one of template, definition, prompt")
        if "definition_version" in attrs and "definition" not in attrs:
            raise serializers.ValidationError({"definition_version": ["only with definition"]})
        if "prompt" in attrs:
            attrs["prompt"] = dict(attrs["prompt"])
            ref = attrs["prompt"]
            default = f"{ref['name']}@" + (f"v{ref['version']}" if "version" in ref else ref.get("label", "production"))
        else:
            default = str(attrs.get("template") or f"definition:{attrs['definition']}")[:100]
            if "definition" in attrs:
                attrs["definition"] = str(attrs["definition"])
        attrs.setdefault("name", default)
        return attrs


class EvaluatorSerializer(StrictSerializer):
    type = serializers.ChoiceField(choices=KINDS)
    name = serializers.RegexField(SCORE_NAME, required=False, help_text="the score's name; default: the type")
    value = serializers.CharField(max_length=5000, required=False, help_text="contains: the text (default: expected)")
    ignore_case = serializers.BooleanField(required=False)
    pattern = serializers.CharField(max_length=1000, required=False, help_text="regex: searched in the output")
    schema = serializers.DictField(required=False, help_text="json_schema: the output must be JSON valid against it")
    tolerance = serializers.FloatField(min_value=0, required=False, help_text="numeric: |output − expected| ≤ it")
    expected = serializers.FloatField(required=False, help_text="numeric: instead of the item's expected output")
    prompt = PromptRefSerializer(required=False, help_text="llm_judge: a stored prompt (or `instructions`)")
    instructions = serializers.CharField(max_length=20000, required=False)
    provider = serializers.CharField(max_length=64, required=False)
    model = serializers.CharField(max_length=255, required=False)

    NEEDS = {"regex": ("pattern",), "json_schema": ("schema",)}
    ONLY = {"contains": {"value", "ignore_case"}, "regex": {"pattern"}, "json_schema": {"schema"},
            "numeric": {"tolerance", "expected"}, "exact_match": set(),
            LLM_JUDGE: {"prompt", "instructions", "provider", "model"}}

    def validate(self, attrs: dict) -> dict:
        kind = attrs["type"]
        extra = sorted(set(attrs) - {"type", "name"} - self.ONLY[kind])
        if extra:
            raise serializers.ValidationError({name: [f"not an option of {kind}"] for name in extra})
        missing = [name for name in self.NEEDS.get(kind, ()) if name not in attrs]
        if missing:
            raise serializers.ValidationError({name: [f"{kind} needs it"] for name in missing})
        if kind == "regex":
            try:
                re.compile(attrs["pattern"])
            except re.error as exc:
                raise serializers.ValidationError({"pattern": [f"not a regular expression: {exc}"]}) from None
        if kind == "json_schema":
            import jsonschema  # here, not at every process start: only a json_schema evaluator needs it

            try:
                jsonschema.validators.validator_for(attrs["schema"]).check_schema(attrs["schema"])
            except jsonschema.SchemaError as exc:
                raise serializers.ValidationError({"schema": [f"not a JSON schema: {exc.message}"]}) from None
            refs = outside_refs(attrs["schema"])
            if refs:
                raise serializers.ValidationError({"schema": [
                    f"$ref {refs[0]!r} points outside the schema: a ref may only be a local pointer (#...), "
                    "nothing is fetched"]})
            attrs["schema"] = dict(attrs["schema"])
        if kind == LLM_JUDGE and "prompt" in attrs and "instructions" in attrs:
            raise serializers.ValidationError({"prompt": ["give prompt or instructions, not both"]})
        if "prompt" in attrs:
            attrs["prompt"] = dict(attrs["prompt"])
        attrs.setdefault("name", kind)
        return attrs


class ExperimentWriteSerializer(StrictSerializer):
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")
    dataset = serializers.UUIDField()
    targets = TargetSerializer(many=True, allow_empty=False, max_length=MAX_TARGETS)
    evaluators = EvaluatorSerializer(many=True, required=False, default=list, max_length=MAX_EVALUATORS)
    concurrency = serializers.IntegerField(min_value=1, default=1)
    budget = money_field(required=False, help_text="USD for targets and judges together; spent, no new item starts")
    start = serializers.BooleanField(default=True, help_text="false: written pending, for `manage.py run_experiment ID`")

    def validate(self, attrs: dict) -> dict:
        attrs["targets"] = [dict(t) for t in attrs["targets"]]
        attrs["evaluators"] = [dict(e) for e in attrs["evaluators"]]
        for field in ("targets", "evaluators"):
            names = [entry["name"] for entry in attrs[field]]
            if len(set(names)) != len(names):
                raise serializers.ValidationError({field: ["names must differ (give each a name)"]})
        return attrs


class ExperimentResumeSerializer(StrictSerializer):
    budget = money_field(required=False)


class ExperimentSerializer(serializers.ModelSerializer):
    class Meta:
        model = Experiment
        fields = ("id", "name", "description", "dataset", "targets", "evaluators", "concurrency", "budget",
                  "status", "stop_reason", "cancel_requested", "created_at", "queued_at", "started_at", "completed_at")
        read_only_fields = fields


class ExperimentListSerializer(ExperimentSerializer):
    """An experiment in a list: with its progress (as the detail's), read through with_progress_counts."""

    progress = serializers.SerializerMethodField()

    class Meta(ExperimentSerializer.Meta):
        fields = (*ExperimentSerializer.Meta.fields, "progress")
        read_only_fields = fields

    def get_progress(self, experiment: Experiment) -> dict:
        return progress_counted(experiment)


class ExperimentResultSerializer(serializers.ModelSerializer):
    class Meta:
        model = ExperimentResult
        fields = ("id", "target", "item", "execution", "status", "error", "output", "scores", "evaluator_errors",
                  "prompt_tokens", "completion_tokens", "total_tokens", "cost", "latency_ms", "judge_prompt_tokens",
                  "judge_completion_tokens", "judge_total_tokens", "judge_cost", "created_at")
        read_only_fields = fields
