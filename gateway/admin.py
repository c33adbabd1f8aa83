from django.contrib import admin

from gateway.models import KeyLimits


@admin.register(KeyLimits)
class KeyLimitsAdmin(admin.ModelAdmin):
    list_display = ("api_key", "allowed_models", "rpm", "tpm", "per_model", "updated_at")
    search_fields = ("api_key__name", "api_key__prefix", "api_key__user__username")
    raw_id_fields = ("api_key",)
