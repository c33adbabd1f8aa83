from django.contrib import admin

from gateway.limits import key_limits_remove, key_limits_set
from gateway.models import KeyLimits


@admin.register(KeyLimits)
class KeyLimitsAdmin(admin.ModelAdmin):
    """Limits set here are staff's: the key's owner reads them over the API and cannot change them."""

    list_display = ("api_key", "allowed_models", "rpm", "tpm", "per_model", "set_by_staff", "updated_at")
    search_fields = ("api_key__name", "api_key__prefix", "api_key__user__username")
    raw_id_fields = ("api_key",)
    readonly_fields = ("set_by_staff",)

    def save_model(self, request, obj, form, change) -> None:  # through the service: checked, audited
        saved = key_limits_set(api_key=obj.api_key, allowed_models=obj.allowed_models, rpm=obj.rpm, tpm=obj.tpm,
                               per_model=obj.per_model, actor=request.user, ip=request.META.get("REMOTE_ADDR"))
        obj.pk, obj.set_by_staff, obj.updated_at = saved.pk, saved.set_by_staff, saved.updated_at

    def delete_model(self, request, obj) -> None:
        key_limits_remove(api_key=obj.api_key, actor=request.user, ip=request.META.get("REMOTE_ADDR"))

    def delete_queryset(self, request, queryset) -> None:
        for limits in queryset.select_related("api_key"):
            self.delete_model(request, limits)
