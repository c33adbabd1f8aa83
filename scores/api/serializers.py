from __future__ import annotations

from rest_framework import serializers

from core.api.serializers import StrictSerializer
from scores.models import Score


class ScoreValueField(serializers.JSONField):
    """A number, a boolean or a category (a string)."""


class ScoreWriteSerializer(StrictSerializer):
    name = serializers.RegexField(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")
    value = ScoreValueField()
    data_type = serializers.ChoiceField(choices=Score.DataType.choices, required=False,
                                        help_text="default: from the value (number, true/false, text)")
    comment = serializers.CharField(max_length=5000, required=False, allow_blank=True, default="")
    source = serializers.ChoiceField(choices=Score.Source.choices, default=Score.Source.API)
    execution = serializers.UUIDField(required=False, help_text="the run scored")
    message = serializers.UUIDField(required=False, help_text="or the message scored")

    def validate(self, attrs: dict) -> dict:
        value = attrs["value"]
        inferred = (Score.DataType.BOOLEAN if isinstance(value, bool) else
                    Score.DataType.NUMERIC if isinstance(value, (int, float)) else
                    Score.DataType.CATEGORICAL if isinstance(value, str) else None)
        data_type = attrs.setdefault("data_type", inferred)
        fits = {Score.DataType.BOOLEAN: isinstance(value, bool) or value in (0, 1),
                Score.DataType.NUMERIC: isinstance(value, (int, float)) and not isinstance(value, bool),
                Score.DataType.CATEGORICAL: isinstance(value, str) and 0 < len(value) <= 100}
        if data_type is None or not fits[data_type]:
            raise serializers.ValidationError({"value": [f"not a {data_type or 'number, boolean or category'}"]})
        if data_type == Score.DataType.NUMERIC and abs(value) > 1e15:
            raise serializers.ValidationError({"value": ["out of range"]})
        if ("execution" in attrs) == ("message" in attrs):
            raise serializers.ValidationError({"execution": ["score a run or a message (one of them)"]})
        return attrs


class ScoreSerializer(serializers.ModelSerializer):
    value = serializers.JSONField(source="shown_value", read_only=True)

    class Meta:
        model = Score
        fields = ("id", "name", "data_type", "value", "comment", "source", "execution", "message", "created_at")
        read_only_fields = fields
