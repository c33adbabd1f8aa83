"""Request serializers refuse what they do not know: an unknown or read-only field is a 400 naming it, not a
silently dropped value (a client that sends `total_tokens` or a typo learns it had no effect).

Response serializers that only read build their fields once per class (FieldsBuiltOnce)."""
import threading
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


_built: dict[type, serializers.Serializer] = {}
_built_lock = threading.Lock()


class FieldsBuiltOnce:
    """For a read-only serializer whose fields read nothing from the context (no hyperlinks, no method fields that
    use it): its fields are built once per class and every instance renders through them, with DRF's own
    `Serializer.to_representation`. DRF builds a serializer's fields for every instance, and a ModelSerializer
    builds them from the model each time, which costs far more than the rendering itself (bench/RESULTS.md, B5).
    Built-in fields render without changing themselves, so one set of them serves every thread. The output
    is the same, field for field (tests/api/test_fields_built_once.py)."""

    def to_representation(self, instance):
        cls = type(self)
        built = _built.get(cls)
        if built is None:
            with _built_lock:
                built = _built.get(cls)
                if built is None:
                    built = cls()
                    built.fields  # noqa: B018 - builds them now, under the lock
                    _built[cls] = built
        return serializers.Serializer.to_representation(built, instance)
