from django.contrib import admin
from django.db import models

from budgets.models import Budget, BudgetPeriod


class BudgetPeriodInline(admin.TabularInline):
    model = BudgetPeriod
    fields = readonly_fields = ("starts_at", "spent_usd", "spent_tokens", "reserved_usd", "reserved_tokens",
                                "updated_at")
    extra = 0
    can_delete = False
    max_num = 0
    ordering = ("-starts_at",)


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    """Budgets with their periods' spend (spent and held in reserve by runs in progress, kept by the run path)."""

    list_display = ("name", "scope", "target_id", "period", "timezone", "limit_usd", "limit_tokens", "mode",
                    "is_active", "owner", "set_by_staff", "created_at")
    list_filter = ("scope", "period", "mode", "is_active", "set_by_staff")
    search_fields = ("name", "target_id", "owner__username")
    readonly_fields = ("set_by_staff", "created_at")
    inlines = [BudgetPeriodInline]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}  # (a webhook typed without its scheme)

    def save_model(self, request, obj, form, change):
        if not change:  # set here by staff, it binds every run in its scope, as over the API
            obj.set_by_staff = request.user.is_staff
        super().save_model(request, obj, form, change)
