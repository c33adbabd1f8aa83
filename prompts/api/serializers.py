"""Prompts over the API: request serializers refuse unknown fields (StrictSerializer); a version's content is
text, or chat messages, with {{variables}}."""
from __future__ import annotations

from rest_framework import serializers

from core.api.serializers import StrictSerializer
from core.models import INT_MAX
from prompts.models import LATEST, NAME_PATTERN, Prompt, PromptLabel, PromptVersion
from prompts.templating import prompt_variables

MAX_PROMPT_CHARS = 100_000
MAX_MESSAGES = 100
PROVIDERS = ("local", "openai", "anthropic")


class PromptConfigSerializer(StrictSerializer):
    """What a version carries besides its text; a graph's `model` node applies provider, model, temperature and
    max_tokens (its own keys win), and a Python graph reads all of it."""

    provider = serializers.ChoiceField(choices=PROVIDERS, required=False)
    model = serializers.CharField(max_length=255, required=False)
    temperature = serializers.FloatField(min_value=0, max_value=2, required=False)
    max_tokens = serializers.IntegerField(min_value=1, max_value=200_000, required=False)
    tools = serializers.ListField(child=serializers.CharField(max_length=100), max_length=50, required=False)


class ChatMessageSerializer(StrictSerializer):
    role = serializers.ChoiceField(choices=("system", "user", "assistant"))
    content = serializers.CharField(max_length=MAX_PROMPT_CHARS, trim_whitespace=False)


class PromptVersionWriteSerializer(StrictSerializer):
    type = serializers.ChoiceField(choices=PromptVersion.Type.choices, default=PromptVersion.Type.TEXT)
    prompt = serializers.JSONField(help_text="text: a string; chat: a list of {role, content}")
    config = PromptConfigSerializer(required=False)
    labels = serializers.ListField(child=serializers.RegexField(NAME_PATTERN), max_length=20, required=False,
                                   help_text="labels to point at the new version (`latest` moves by itself)")
    commit_message = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")

    def validate(self, attrs: dict) -> dict:
        content = attrs["prompt"]
        if attrs["type"] == PromptVersion.Type.TEXT:
            if not isinstance(content, str) or not content or len(content) > MAX_PROMPT_CHARS:
                raise serializers.ValidationError({"prompt": [f"a text prompt is a string of 1 to "
                                                              f"{MAX_PROMPT_CHARS} characters"]})
        else:
            if not isinstance(content, list) or not 1 <= len(content) <= MAX_MESSAGES:
                raise serializers.ValidationError({"prompt": [f"a chat prompt is a list of 1 to {MAX_MESSAGES} "
                                                              "messages"]})
            messages = ChatMessageSerializer(data=content, many=True)
            if not messages.is_valid():
                raise serializers.ValidationError({"prompt": messages.errors})
            attrs["prompt"] = [dict(message) for message in messages.validated_data]
        attrs["config"] = dict(attrs.get("config") or {})
        if LATEST in attrs.get("labels", ()):
            raise serializers.ValidationError({"labels": ["`latest` moves by itself"]})
        return attrs


class PromptCreateSerializer(PromptVersionWriteSerializer):
    name = serializers.RegexField(NAME_PATTERN, help_text="letters, digits, _ . - (at most 100)")
    description = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class PromptUpdateSerializer(StrictSerializer):
    description = serializers.CharField(max_length=2000, allow_blank=True)


class PromptLabelWriteSerializer(StrictSerializer):
    version = serializers.IntegerField(min_value=1, max_value=INT_MAX, required=False)
    split = serializers.DictField(child=serializers.IntegerField(min_value=0, max_value=1_000_000), required=False,
                                  help_text='version number → weight, e.g. {"3": 90, "4": 10}')
    protected = serializers.BooleanField(required=False, help_text="staff only")

    def validate(self, attrs: dict) -> dict:
        split = attrs.get("split")
        if ("version" in attrs) == (split is not None):
            raise serializers.ValidationError({"version": ["give version or split (one of them)"]})
        if split is not None:
            attrs["split"] = split = _split_weights(split)
            if not 2 <= len(split) <= 10:
                raise serializers.ValidationError({"split": ["2 to 10 version numbers, each with a weight"]})
            if sum(split.values()) <= 0:
                raise serializers.ValidationError({"split": ["the weights must not all be 0"]})
        return attrs


def _split_weights(split: dict) -> dict:
    """The split by version number as it is kept ({"3": 90}): a key is a version's number in ASCII digits, and
    two keys naming one version ("1" and "01") are refused, not merged, as which weight was meant is not ours to
    guess."""
    weights: dict[str, int] = {}
    for key, weight in split.items():
        if not (key.isascii() and key.isdigit() and len(key) <= 10 and 0 < int(key) <= INT_MAX):
            raise serializers.ValidationError({"split": [f"split keys are version numbers, not {key!r}"]})
        number = str(int(key))
        if number in weights:
            raise serializers.ValidationError({"split": [f"version {number} is named twice"]})
        weights[number] = weight
    return weights


class PromptLabelSerializer(serializers.ModelSerializer):
    version = serializers.IntegerField(source="version.version", allow_null=True, read_only=True)

    class Meta:
        model = PromptLabel
        fields = ("name", "version", "split", "protected", "updated_at")
        read_only_fields = fields


class PromptVersionSerializer(serializers.ModelSerializer):
    name = serializers.CharField(source="prompt.name", read_only=True)
    prompt = serializers.JSONField(source="content", read_only=True)
    variables = serializers.SerializerMethodField()

    class Meta:
        model = PromptVersion
        fields = ("id", "name", "version", "type", "prompt", "config", "variables", "commit_message", "created_at")
        read_only_fields = fields

    def get_variables(self, version: PromptVersion) -> list[str]:
        return prompt_variables(version.content)


class ResolvedPromptSerializer(PromptVersionSerializer):
    label = serializers.CharField(allow_null=True, read_only=True)

    class Meta(PromptVersionSerializer.Meta):
        fields = (*PromptVersionSerializer.Meta.fields, "label")
        read_only_fields = fields


class PromptSerializer(serializers.ModelSerializer):
    latest_version = serializers.IntegerField(read_only=True)
    labels = PromptLabelSerializer(many=True, read_only=True)

    class Meta:
        model = Prompt
        fields = ("id", "name", "description", "latest_version", "labels", "created_at", "updated_at")
        read_only_fields = fields
