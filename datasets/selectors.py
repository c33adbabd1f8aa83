from django.db.models import Count, QuerySet

from datasets.models import Dataset


def dataset_list(*, user) -> QuerySet[Dataset]:
    return Dataset.objects.filter(owner=user).annotate(item_count=Count("items"))
