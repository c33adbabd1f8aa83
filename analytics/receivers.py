"""Keeps TemplateAnalytics equal to the sums over each template's terminal executions (I2)."""
from django.db.models import F
from django.dispatch import receiver

from analytics.models import TemplateAnalytics
from workflows.models import WorkflowExecution
from workflows.signals import execution_finished

_OUTCOME_FIELD = {
    WorkflowExecution.Status.COMPLETED: "successful_executions",
    WorkflowExecution.Status.FAILED: "failed_executions",
    WorkflowExecution.Status.CANCELLED: "cancelled_executions",
}


@receiver(execution_finished, dispatch_uid="template_analytics_add")
def template_analytics_add(sender, execution, **kwargs) -> None:
    if execution.template_id is None:
        return
    TemplateAnalytics.objects.get_or_create(template_id=execution.template_id)
    outcome = _OUTCOME_FIELD[execution.status]
    changes = {
        "total_executions": F("total_executions") + 1,
        outcome: F(outcome) + 1,
        "total_execution_time_ms": F("total_execution_time_ms") + (execution.execution_time_ms or 0),
        "prompt_tokens": F("prompt_tokens") + execution.prompt_tokens,
        "completion_tokens": F("completion_tokens") + execution.completion_tokens,
        "total_tokens": F("total_tokens") + execution.total_tokens,
        "total_cost": F("total_cost") + execution.cost,
        "last_used_at": execution.completed_at,
    }
    if execution.status == WorkflowExecution.Status.COMPLETED:
        changes["last_success_at"] = execution.completed_at
    elif execution.status == WorkflowExecution.Status.FAILED:
        changes["last_failure_at"] = execution.completed_at
    TemplateAnalytics.objects.filter(template_id=execution.template_id).update(**changes)
