from django.contrib import admin

from audit.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Append-only (the ORM refuses update and delete), so the admin only ever reads."""

    list_display = ("id", "created_at", "action", "actor_type", "actor", "target_type", "target_id", "ip",
                    "correlation_id")
    list_filter = ("action", "actor_type", "target_type", "created_at")
    list_select_related = ("actor",)
    search_fields = ("action", "target_type", "target_id", "correlation_id", "actor__username")
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
