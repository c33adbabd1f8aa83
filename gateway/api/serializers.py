from rest_framework import serializers

from core.api.serializers import StrictSerializer
from core.models import INT_MAX


class ModelLimitsSerializer(StrictSerializer):
    rpm = serializers.IntegerField(min_value=1, max_value=INT_MAX, required=False, allow_null=True)
    tpm = serializers.IntegerField(min_value=1, max_value=INT_MAX, required=False, allow_null=True)


class KeyLimitsSerializer(StrictSerializer):
    """A key's gateway limits as set: none listed or null means no limit of that kind."""

    allowed_models = serializers.ListField(child=serializers.CharField(max_length=200), required=False,
                                           max_length=500, help_text="the models it may call; empty: any")
    rpm = serializers.IntegerField(min_value=1, max_value=INT_MAX, required=False, allow_null=True,
                                   help_text="requests a minute")
    tpm = serializers.IntegerField(min_value=1, max_value=INT_MAX, required=False, allow_null=True,
                                   help_text="tokens a minute")
    per_model = serializers.DictField(child=ModelLimitsSerializer(), required=False,
                                      help_text='{model: {"rpm": n, "tpm": n}}')

    def validate_per_model(self, value: dict) -> dict:
        """A null limit is no limit: it is left out, and a model left without any with it."""
        kept = {model: {name: n for name, n in limits.items() if n is not None} for model, limits in value.items()}
        return {model: limits for model, limits in kept.items() if limits}


class KeyLimitsOutSerializer(serializers.Serializer):
    api_key = serializers.UUIDField(help_text="the key's id (/api/v1/keys/<id>/)")
    allowed_models = serializers.ListField(child=serializers.CharField())
    rpm = serializers.IntegerField(allow_null=True)
    tpm = serializers.IntegerField(allow_null=True)
    per_model = serializers.DictField()
    set_by_staff = serializers.BooleanField(help_text="only staff may change them")
    updated_at = serializers.DateTimeField(allow_null=True)
