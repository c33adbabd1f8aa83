"""Budgets in the admin, with their periods' spend. Staff set one as over the API (the API's serializer checks its
values, budgets.targets its target; it is the adding staff member's and binds every run in its scope) and change
only what the API's budget leaves changeable (budgets.services.BUDGET_EDITABLE): its scope, target, period and time
zone name the periods its spend is counted in."""
from django import forms
from django.contrib import admin

from budgets.api.serializers import BudgetCreateSerializer
from budgets.models import ONE_LIMIT, Budget, BudgetPeriod
from budgets.services import BUDGET_EDITABLE, budget_create, budget_update
from budgets.targets import budget_target
from core.admin_services import form_refusals_show
from core.errors import InvalidInput, error_details

CHECKED = ("name", "scope", "target_id", "period", "timezone", "limit_usd", "limit_tokens", "mode", "thresholds",
           "webhook_url")  # what BudgetCreateSerializer checks
FIXED = ("owner", "scope", "target_id", "period", "timezone")


class BudgetAdminForm(forms.ModelForm):
    """A budget's values checked as the API checks them; a refusal is shown on the field it names."""

    # Set per request by BudgetAdmin.get_form: who sets it, and the budget changed (None when one is added).
    owner = None
    budget: Budget | None = None

    webhook_url = forms.URLField(max_length=500, required=False, assume_scheme="https")  # (typed without its scheme)

    class Meta:
        model = Budget
        fields = (*CHECKED, "is_active")

    def clean(self) -> dict:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        # A change is checked with the fixed fields it needs (scope, period) as they are: the rest are not written.
        stored = {} if self.budget is None else {"scope": self.budget.scope, "period": self.budget.period}
        given = {**stored, **{field: cleaned[field] for field in CHECKED if field in cleaned}}
        serializer = BudgetCreateSerializer(data={field: value for field, value in given.items() if value is not None})
        if not serializer.is_valid():
            form_refusals_show(self, [item for item in error_details(serializer.errors, code="invalid")
                                      if item["message"] != ONE_LIMIT])  # (said by the model's constraint too)
            return cleaned
        if self.budget is None:
            try:
                cleaned["target_id"] = budget_target(user=self.owner, scope=given["scope"],
                                                     target_id=given.get("target_id"))
            except InvalidInput as refused:
                form_refusals_show(self, error_details(refused.details, code=refused.code))
        return cleaned


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

    form = BudgetAdminForm
    list_display = ("name", "scope", "target_id", "period", "timezone", "limit_usd", "limit_tokens", "mode",
                    "is_active", "owner", "set_by_staff", "created_at")
    list_filter = ("scope", "period", "mode", "is_active", "set_by_staff")
    search_fields = ("name", "target_id", "owner__username")
    inlines = [BudgetPeriodInline]

    def get_fields(self, request, obj=None):
        if obj is None:
            return (*CHECKED, "is_active")
        return ("name", *FIXED, "limit_usd", "limit_tokens", "mode", "thresholds", "webhook_url", "is_active",
                "set_by_staff", "created_at")

    def get_readonly_fields(self, request, obj=None):
        return ("set_by_staff", "created_at", *(FIXED if obj is not None else ()))

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        form.owner, form.budget = request.user, obj  # a class of this request's
        return form

    def save_model(self, request, obj, form, change) -> None:
        if change:
            changes = {field: form.cleaned_data[field] for field in BUDGET_EDITABLE if field in form.cleaned_data}
            budget_update(budget=Budget.objects.get(pk=obj.pk), **changes)
        else:  # the adding staff member's: it binds every run in its scope, as one staff set over the API does
            values = {field: form.cleaned_data[field] for field in CHECKED}
            budget = budget_create(owner=request.user, timezone_name=values.pop("timezone"), **values)
            obj.pk = budget.pk
            if not form.cleaned_data["is_active"]:
                budget_update(budget=budget, is_active=False)
        obj.refresh_from_db()
