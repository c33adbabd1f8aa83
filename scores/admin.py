from django.contrib import admin

from scores.models import Score


@admin.register(Score)
class ScoreAdmin(admin.ModelAdmin):
    """Scores are given through the API (or by evaluators); here they are read and, when wrong, deleted."""

    list_display = ("name", "data_type", "shown_value", "source", "owner", "execution", "message", "created_at")
    list_filter = ("data_type", "source", "name", "created_at")
    search_fields = ("name", "category", "comment", "owner__username")
    list_select_related = ("owner",)
    readonly_fields = ("id", "owner", "name", "data_type", "value", "category", "comment", "source", "execution",
                       "message", "created_at")
    raw_id_fields = ("execution", "message")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
