"""django-q2 task functions: they take ids and call services, and are safe to deliver twice."""
import logging

from analytics.services import aggregates_drift
from workflows.services.recovery import events_prune, execution_sweep
from workflows.services.runs import execution_run
from workflows.services.schedules import schedules_run_due

logger = logging.getLogger(__name__)


def execution_run_task(execution_id: str) -> str:
    """Run a pending background or scheduled execution. A second delivery finds it claimed and does nothing."""
    return execution_run(execution_id=execution_id).status


def schedules_run_due_task() -> int:
    """Every minute (the django-q2 schedule `chatter-schedules`): start the due WorkflowSchedules' runs."""
    return len(schedules_run_due())


def execution_sweep_task() -> int:
    """Every CHATTER_SWEEP_INTERVAL_S (`chatter-sweep-executions`): end the runs whose worker died (I4)."""
    return len(execution_sweep())


def aggregates_reconcile_task() -> int:
    """Hourly (`chatter-reconcile-aggregates`): report every aggregate that drifted from its source rows
    (I1–I3) in the log; `manage.py reconcile_aggregates --fix` repairs them."""
    drift = aggregates_drift()
    for row in drift:
        fields = ", ".join(f"{name}: stored {pair[0]} != actual {pair[1]}" for name, pair in row["fields"].items())
        logger.error("aggregate drift on %s %s: %s", row["kind"], row["id"], fields)
    return len(drift)


def events_prune_task() -> int:
    """Daily (`chatter-prune-events`): delete event logs older than CHATTER_EVENT_RETENTION_DAYS."""
    return events_prune()
