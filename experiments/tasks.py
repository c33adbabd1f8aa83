"""django-q2 task functions: they take ids and call services, and are safe to deliver twice."""
from experiments.services import SLICE_S, experiment_run


def experiment_run_task(experiment_id: str) -> str:
    """Run a pending experiment for a slice of time (then a new task goes on). A second delivery finds it claimed
    and does nothing."""
    return experiment_run(experiment_id=experiment_id, slice_s=SLICE_S).status
