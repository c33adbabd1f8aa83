"""django-q2 task functions: they take ids and call services, and are safe to deliver twice."""
from workflows.services.recovery import events_prune, execution_sweep
from workflows.services.runs import execution_run
from workflows.services.schedules import schedules_run_due


def execution_run_task(execution_id: str) -> str:
    """Run a pending background or scheduled execution. A second delivery finds it claimed and does nothing."""
    return execution_run(execution_id=execution_id).status


def execution_resume_task(execution_id: str, answers: dict | None = None) -> str:
    """The task an earlier version queued for a background answer, kept so that one still queued at an upgrade
    finds its function: an answered run now keeps its answers and gets execution_run_task, as any queued run
    (workflows.services.waiting), which this does."""
    return execution_run(execution_id=execution_id).status


def schedules_run_due_task() -> int:
    """Every minute (the django-q2 schedule `chatter-schedules`): start the due WorkflowSchedules' runs."""
    return len(schedules_run_due())


def execution_sweep_task() -> int:
    """Every CHATTER_SWEEP_INTERVAL_S (`chatter-sweep-executions`): end the runs whose worker died (I4)."""
    return len(execution_sweep())


def events_prune_task() -> int:
    """Daily (`chatter-prune-events`): delete event logs older than CHATTER_EVENT_RETENTION_DAYS."""
    return events_prune()
