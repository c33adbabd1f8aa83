import django_filters

from core.api.filters import CreatedRangeFilterSet
from prompts.models import Prompt


class PromptFilter(CreatedRangeFilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = Prompt
        fields = ("name",)
