from __future__ import annotations

from rest_framework import serializers

from core.api.serializers import StrictSerializer
from datasets.models import Dataset, DatasetItem


class DatasetWriteSerializer(StrictSerializer):
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(max_length=2000, required=False, allow_blank=True)
    metadata = serializers.DictField(required=False)


class DatasetSerializer(serializers.ModelSerializer):
    item_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Dataset
        fields = ("id", "name", "description", "metadata", "item_count", "created_at", "updated_at")
        read_only_fields = fields


class DatasetItemWriteSerializer(StrictSerializer):
    """An item as given, or taken from one of your runs (`execution`: its input and output)."""

    input = serializers.JSONField(required=False)
    expected_output = serializers.JSONField(required=False, allow_null=True)
    metadata = serializers.DictField(required=False)
    execution = serializers.UUIDField(required=False, help_text="add this run: its input and output")

    def validate(self, attrs: dict) -> dict:
        from_run = "execution" in attrs
        if from_run == (attrs.get("input") not in (None, "")):
            raise serializers.ValidationError({"input": ["give input (with expected_output) or execution"]})
        if from_run and "expected_output" in attrs:
            raise serializers.ValidationError({"expected_output": ["a run's output is its expected output"]})
        return attrs


class DatasetItemSerializer(serializers.ModelSerializer):
    class Meta:
        model = DatasetItem
        fields = ("id", "input", "expected_output", "metadata", "source_execution", "created_at")
        read_only_fields = fields


class DatasetImportSerializer(StrictSerializer):
    format = serializers.ChoiceField(choices=("csv", "jsonl"))
    content = serializers.CharField(trim_whitespace=False, help_text="the file's text")


class DatasetExportQuerySerializer(serializers.Serializer):
    format = serializers.ChoiceField(choices=("csv", "jsonl"), default="jsonl")
