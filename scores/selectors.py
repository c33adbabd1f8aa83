from django.db.models import QuerySet

from scores.models import Score


def score_list(*, user) -> QuerySet[Score]:
    return Score.objects.filter(owner=user)
