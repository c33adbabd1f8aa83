"""The operations dashboard's admin page (/admin/analytics/usagerollup/operations/), next to the usage dashboard:
what ran in a recent window, how fast and how often it failed (analytics.operations), and spend against budgets."""
from __future__ import annotations

from decimal import Decimal

from django import forms
from django.template.response import TemplateResponse

from analytics.charts import column_chart
from analytics.operations import WINDOWS, operations_report


class OperationsFilter(forms.Form):
    window = forms.ChoiceField(choices=[(name, name) for name in WINDOWS], required=False,
                               help_text="24h: hourly buckets; longer: daily (UTC)")

    @classmethod
    def of(cls, query) -> "OperationsFilter":
        return cls({"window": "24h", **query.dict()})


def operations_view(request, *, admin_site, opts, budget_bars):
    form = OperationsFilter.of(request.GET)
    context = {**admin_site.each_context(request), "opts": opts, "title": "Operations dashboard", "form": form}
    if form.is_valid():
        report = operations_report(window=WINDOWS[form.cleaned_data["window"] or "24h"])
        label = "%H:00" if report["unit"] == "hour" else "%Y-%m-%d"
        points = [(bucket["start"].strftime(label), bucket["runs"]) for bucket in report["buckets"]]
        failed = [(bucket["start"].strftime(label), bucket["failed"]) for bucket in report["buckets"]]
        context.update(report=report, budget_bars=budget_bars(),
                       runs_chart=column_chart(points, format_value=_count, max_labels=12),
                       failed_chart=column_chart(failed, format_value=_count, max_labels=12))
    return TemplateResponse(request, "admin/analytics/operations.html", context)


def _count(value) -> str:
    return format(Decimal(value).normalize(), ",f")
