"""Request serializers refuse what they do not know: an unknown or read-only field is a 400 naming it, not a
silently dropped value (a client that sends `total_tokens` or a typo learns it had no effect).

Every request makes its own serializers (one to validate its input, another to render its answer), as DRF has
them: nothing of a serializer is shared between requests or threads (docs/architecture.md, "Serializers")."""
import uuid
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal

from django.utils import timezone
from rest_framework import serializers

from core.models import MONEY_LIMIT


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


# A response's values as DRF's fields render them, for a shape rendered by a plain function (one every request
# answers, e.g. a run's result: no fields built per request).
def moment(value: datetime | None) -> str | None:
    """DateTimeField's: ISO 8601 in the current time zone, UTC as Z; None for none."""
    if not value:
        return None
    text = timezone.localtime(value).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def uuid_text(value: uuid.UUID | None) -> str | None:
    """UUIDField's: the hyphenated form; None for none."""
    return None if value is None else str(value)


def money_field(**options) -> serializers.DecimalField:
    """An amount of USD a person sets (a budget's limit, a price, an experiment's budget): 0 to MONEY_LIMIT, to the
    1e-8 dollar, so that it reads back as it was written on every database (core.models.MONEY_LIMIT)."""
    return serializers.DecimalField(max_digits=20, decimal_places=8, min_value=Decimal("0"), max_value=MONEY_LIMIT,
                                    **options)
