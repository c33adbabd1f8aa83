from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import path, reverse

from audit.models import AuditEvent
from audit.selectors import audit_chain_verify
from audit.services import audit_queue_flush


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Append-only (the ORM refuses update and delete), so the admin only ever reads. The changelist's
    "Verify audit chain" button (templates/admin/audit/auditevent/change_list.html) re-checks I7."""

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

    def changelist_view(self, request, extra_context=None):
        audit_queue_flush()  # the trail as of this request: runs' rows still queued join the chain first
        return super().changelist_view(request, extra_context)

    def get_urls(self):
        verify = path("verify/", self.admin_site.admin_view(self.verify_view), name="audit_auditevent_verify")
        return [verify, *super().get_urls()]

    def verify_view(self, request: HttpRequest) -> HttpResponseRedirect:
        if not self.has_view_permission(request):
            raise PermissionDenied
        audit_queue_flush()
        result = audit_chain_verify()
        if result.valid:
            messages.success(request, f"Audit chain OK: {result.checked} row(s) verified.")
        else:
            bad = result.first_bad
            messages.error(request, f"Audit chain broken at row #{bad.id} ({bad.reason}): {bad.message}")
        return HttpResponseRedirect(reverse("admin:audit_auditevent_changelist"))
