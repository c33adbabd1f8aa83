"""django-q2 task functions: they take ids and call services, and are safe to deliver twice."""
from workflows.services import execution_run, schedules_run_due


def execution_run_task(execution_id: str) -> str:
    """Run a pending background or scheduled execution. A second delivery finds it claimed and does nothing."""
    return execution_run(execution_id=execution_id).status


def schedules_run_due_task() -> int:
    """Every minute (the django-q2 schedule `chatter-schedules`): start the due WorkflowSchedules' runs."""
    return len(schedules_run_due())
