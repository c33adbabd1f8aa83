from core.api.filters import CreatedRangeFilterSet
from scores.models import Score


class ScoreFilter(CreatedRangeFilterSet):
    class Meta:
        model = Score
        fields = ("name", "data_type", "source", "execution", "message")
