"""experiments listens to the news of the apps below it (signals go up): a dataset that an experiment in progress
runs over is busy (it and its items cannot be deleted meanwhile)."""
from __future__ import annotations

from django.dispatch import receiver

from datasets.models import Dataset
from datasets.signals import dataset_busy
from experiments.models import Experiment
from experiments.progress import experiment_lost


@receiver(dataset_busy, sender=Dataset, dispatch_uid="experiments_dataset_busy")
def dataset_busy_with_an_experiment(sender, *, dataset_id, **kwargs) -> str | None:
    """A pending or running experiment over it (not a lost one: its worker died, nothing runs it until a resume)."""
    in_progress = [experiment for experiment in Experiment.objects.filter(
        dataset_id=dataset_id, status__in=(Experiment.Status.PENDING, Experiment.Status.RUNNING))
        if not experiment_lost(experiment=experiment)]
    if not in_progress:
        return None
    return ", ".join(f"experiment {experiment.name!r} ({experiment.pk}, {experiment.status})"
                     for experiment in in_progress)
