"""Keeps the analytics aggregates exact in the transactions that write their source rows: TemplateAnalytics
(I2) and the usage rollups (see analytics.models.UsageRollup), from the domain signals of conversations and
workflows."""
from django.contrib.auth import get_user_model
from django.db.models import F, QuerySet
from django.db.models.signals import pre_delete
from django.dispatch import receiver

from analytics.models import TemplateAnalytics
from analytics.services import (
    usage_execution_add,
    usage_message_add,
    usage_message_subtract,
    usage_rollups_detach,
)
from conversations.models import Conversation
from conversations.signals import message_deleted, message_saved
from workflows.models import WorkflowExecution, WorkflowTemplate
from workflows.signals import execution_finished

_OUTCOME_FIELD = {
    WorkflowExecution.Status.COMPLETED: "successful_executions",
    WorkflowExecution.Status.FAILED: "failed_executions",
    WorkflowExecution.Status.CANCELLED: "cancelled_executions",
}


@receiver(execution_finished, dispatch_uid="usage_execution_add")
def usage_execution_finished(sender, execution, **kwargs) -> None:
    usage_execution_add(execution=execution)


# Connected after usage_execution_add, so it runs last: every run of the template updates this one row, whose
# lock is then held only to the commit.
@receiver(execution_finished, dispatch_uid="template_analytics_add")
def template_analytics_add(sender, execution, **kwargs) -> None:
    if execution.template_id is None:
        return
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
    row = TemplateAnalytics.objects.filter(template_id=execution.template_id)
    if not row.update(**changes):  # the template's first run ended: its row is made once
        TemplateAnalytics.objects.get_or_create(template_id=execution.template_id)
        row.update(**changes)


@receiver(message_saved, dispatch_uid="usage_message_add")
def usage_message_saved(sender, message, **kwargs) -> None:
    usage_message_add(message=message)


@receiver(message_deleted, dispatch_uid="usage_message_subtract")
def usage_message_deleted(sender, message, **kwargs) -> None:
    usage_message_subtract(message=message)


# Deleting a conversation or template sends no domain signal when it happens by cascade (the admin, a user's
# deletion), so these two listen to pre_delete: it fires for cascaded rows too, inside the deleting transaction.
@receiver(pre_delete, sender=Conversation, dispatch_uid="usage_conversation_detach")
def usage_conversation_deleting(sender, instance, origin=None, **kwargs) -> None:
    if instance.owner_id in _owners_being_deleted(origin):
        return  # the owner's rows go with the owner
    usage_rollups_detach(conversation_id=instance.pk)


@receiver(pre_delete, sender=WorkflowTemplate, dispatch_uid="usage_template_detach")
def usage_template_deleting(sender, instance, origin=None, **kwargs) -> None:
    usage_rollups_detach(template_id=instance.pk, except_owner_ids=_owners_being_deleted(origin))


def _owners_being_deleted(origin) -> set:
    """The users whose deletion this is (their rollup rows cascade with them)."""
    user_model = get_user_model()
    if isinstance(origin, user_model):
        return {origin.pk}
    if isinstance(origin, QuerySet) and origin.model is user_model:
        return set(origin.values_list("pk", flat=True))
    return set()
