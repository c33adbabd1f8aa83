import django_filters

from conversations.models import Conversation, Document, Message
from core.api.filters import CreatedRangeFilterSet, ListFilterSet


class ConversationFilter(CreatedRangeFilterSet):
    title = django_filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = Conversation
        fields = ("status", "title")


class MessageFilter(ListFilterSet):
    class Meta:
        model = Message
        fields = ("role", "execution")


class DocumentFilter(CreatedRangeFilterSet):
    title = django_filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = Document
        fields = ("title",)
