from audit.models import AuditEvent
from core.api.filters import CreatedRangeFilterSet


class AuditEventFilter(CreatedRangeFilterSet):
    class Meta:
        model = AuditEvent
        fields = ("action", "actor_type", "target_type", "target_id", "correlation_id")
