"""Reads of analytics: prices and what the aggregates should be."""
from __future__ import annotations

from datetime import datetime

from django.db.models import Count, Max, Q, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from analytics.models import ModelPrice, TemplateAnalytics
from workflows.models import WorkflowExecution, WorkflowTemplate


def price_for_call(*, provider: str, model: str, at: datetime | None = None) -> ModelPrice | None:
    """The price in force for a call: the latest effective_from not after `at`; an exact-provider row beats
    a wildcard one from the same moment."""
    at = at or timezone.now()
    candidates = ModelPrice.objects.filter(
        is_active=True, effective_from__lte=at, provider__in=(provider, ModelPrice.WILDCARD)
    ).order_by("-effective_from")
    best = None
    for price in candidates:
        if not price.matches(provider, model):
            continue
        if best is None:
            best = price
        elif price.effective_from < best.effective_from:
            break
        elif price.provider == provider and best.provider == ModelPrice.WILDCARD:
            best = price
    return best


_STATUS = WorkflowExecution.Status


def template_analytics_from_executions() -> dict:
    """Per template: stored TemplateAnalytics figures next to the same figures from its terminal executions."""
    zero = Value(0)
    terminal = Q(executions__status__in=WorkflowExecution.TERMINAL)
    templates = WorkflowTemplate.objects.annotate(
        real_total=Count("executions", filter=terminal),
        real_ok=Count("executions", filter=Q(executions__status=_STATUS.COMPLETED)),
        real_failed=Count("executions", filter=Q(executions__status=_STATUS.FAILED)),
        real_cancelled=Count("executions", filter=Q(executions__status=_STATUS.CANCELLED)),
        real_time=Coalesce(Sum("executions__execution_time_ms", filter=terminal), zero),
        real_prompt=Coalesce(Sum("executions__prompt_tokens", filter=terminal), zero),
        real_completion=Coalesce(Sum("executions__completion_tokens", filter=terminal), zero),
        real_tokens=Coalesce(Sum("executions__total_tokens", filter=terminal), zero),
        real_cost=Coalesce(
            Sum("executions__cost", filter=terminal),
            Value(0, output_field=WorkflowExecution._meta.get_field("cost")),
        ),
        real_last_used=Max("executions__completed_at", filter=terminal),
    )
    stored = {row.template_id: row for row in TemplateAnalytics.objects.all()}
    result = {}
    for template in templates:
        row = stored.get(template.pk)
        result[template.pk] = {
            "key": template.key,
            "stored": None
            if row is None
            else {
                "total_executions": row.total_executions,
                "successful_executions": row.successful_executions,
                "failed_executions": row.failed_executions,
                "cancelled_executions": row.cancelled_executions,
                "total_execution_time_ms": row.total_execution_time_ms,
                "prompt_tokens": row.prompt_tokens,
                "completion_tokens": row.completion_tokens,
                "total_tokens": row.total_tokens,
                "total_cost": row.total_cost,
            },
            "actual": {
                "total_executions": template.real_total,
                "successful_executions": template.real_ok,
                "failed_executions": template.real_failed,
                "cancelled_executions": template.real_cancelled,
                "total_execution_time_ms": template.real_time,
                "prompt_tokens": template.real_prompt,
                "completion_tokens": template.real_completion,
                "total_tokens": template.real_tokens,
                "total_cost": template.real_cost,
            },
            "last_used_at": template.real_last_used,
        }
    return result
