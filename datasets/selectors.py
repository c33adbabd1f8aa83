from django.db.models import Count, QuerySet

from datasets.models import Dataset
from datasets.signals import dataset_busy


def dataset_list(*, user) -> QuerySet[Dataset]:
    return Dataset.objects.filter(owner=user).annotate(item_count=Count("items"))


def dataset_users(*, dataset_id) -> list[str]:
    """What of the apps above still reads the dataset's items (an experiment in progress), each in a few words: the
    receivers of `dataset_busy` say."""
    return [answer for _, answer in dataset_busy.send(sender=Dataset, dataset_id=dataset_id) if answer]
