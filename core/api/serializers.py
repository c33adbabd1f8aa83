"""Request serializers refuse what they do not know: an unknown or read-only field is a 400 naming it, not a
silently dropped value (a client that sends `total_tokens` or a typo learns it had no effect).

Every request makes its own serializers (one to validate its input, another to render its answer), as DRF has
them: nothing of a serializer is shared between requests or threads (docs/architecture.md, "Serializers")."""
from collections.abc import Mapping

from rest_framework import serializers


class StrictFieldsMixin:
    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            unknown = sorted(set(data) - writable)
            if unknown:
                raise serializers.ValidationError({name: ["unknown or read-only field"] for name in unknown})
        return super().to_internal_value(data)


class StrictSerializer(StrictFieldsMixin, serializers.Serializer):
    pass
