"""Request serializers refuse what they do not know: an unknown or read-only field is a 400 naming it, not a
silently dropped value (a client that sends `total_tokens` or a typo learns it had no effect).

Response serializers that only read build their fields once per class (FieldsBuiltOnce), and so do request
serializers validated on a hot path whose fields and validation read no context (ValidatedByFieldsBuiltOnce)."""
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


def _built_for(cls: type) -> serializers.Serializer:
    """The one instance of `cls` whose fields are built (once, under the lock)."""
    built = _built.get(cls)
    if built is None:
        with _built_lock:
            built = _built.get(cls)
            if built is None:
                built = cls()
                built.fields  # noqa: B018 - builds them now, under the lock
                _built[cls] = built
    return built


class FieldsBuiltOnce:
    """For a read-only serializer whose fields read nothing from the context (no hyperlinks, no method fields that
    use it): its fields are built once per class and every instance renders through them, with DRF's own
    `Serializer.to_representation`. DRF builds a serializer's fields for every instance, and a ModelSerializer
    builds them from the model each time, which costs far more than the rendering itself (bench/RESULTS.md, B5).
    Built-in fields render without changing themselves, so one set of them serves every thread. The output
    is the same, field for field (tests/api/test_fields_built_once.py)."""

    def to_representation(self, instance):
        return serializers.Serializer.to_representation(_built_for(type(self)), instance)


class ValidatedByFieldsBuiltOnce:
    """For a request serializer whose fields and validate methods read no context and keep no state (built-in fields,
    nested serializers of the same kind): its input is validated by the one instance of its class whose fields are
    built once (DRF's own `run_validation` on it); the instance asked keeps the result and the errors, as `is_valid`
    does. DRF deep-copies every declared field for every instance, which for a request of many optional parameters
    costs more than validating it. Same validated data and same errors, field for field
    (tests/api/test_fields_built_once.py)."""

    def run_validation(self, data=serializers.empty):
        return serializers.Serializer.run_validation(_built_for(type(self)), data)
