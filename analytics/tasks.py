"""django-q2 task functions of analytics: they call services, and are safe to deliver twice."""
import logging

from analytics.services import aggregates_drift

logger = logging.getLogger(__name__)


def aggregates_reconcile_task() -> int:
    """Hourly (`chatter-reconcile-aggregates`, analytics.services.reconcile_schedule_ensure): report every aggregate
    that drifted from its source rows (I1–I3 and the usage rollups) in the log; `manage.py reconcile_aggregates
    --fix` repairs them."""
    drift = aggregates_drift()
    for row in drift:
        fields = ", ".join(f"{name}: stored {pair[0]} != actual {pair[1]}" for name, pair in row["fields"].items())
        logger.error("aggregate drift on %s %s: %s", row["kind"], row["id"], fields)
    return len(drift)
