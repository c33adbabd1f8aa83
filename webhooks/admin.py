from django.contrib import admin

from webhooks.models import WebhookDelivery


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    """The delivery log: every webhook sent (budget alerts, run ends), each attempt's status code or error, the next
    retry."""

    list_display = ("created_at", "event", "subject_type", "subject_id", "url", "status", "attempts",
                    "last_status_code", "next_attempt_at", "delivered_at")
    list_filter = ("status", "event", "subject_type")
    search_fields = ("url", "subject_id")
    readonly_fields = ("subject_type", "subject_id", "url", "event", "payload", "status", "attempts",
                       "last_status_code", "last_error", "log", "next_attempt_at", "delivered_at", "created_at")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
