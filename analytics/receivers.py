"""Keeps the analytics aggregates exact in the transactions that write their source rows: TemplateAnalytics
(I2) and the usage rollups (see analytics.models.UsageRollup), from the domain signals of conversations and
workflows."""
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.db.models.signals import post_delete, post_save, pre_delete
from django.dispatch import receiver

from analytics.models import ModelPrice
from analytics.services import (
    execution_book,
    template_analytics_reprice,
    usage_calls_reprice,
    usage_message_add,
    usage_message_subtract,
    usage_rollups_detach,
)
from conversations.models import Conversation
from conversations.signals import message_deleted, message_saved
from core.cache import hot_reads
from workflows.models import WorkflowTemplate
from workflows.signals import execution_ending, usage_repriced


# A run ending is booked in the usage rollups and its template's analytics by statements riding on its last write.
@receiver(execution_ending, dispatch_uid="analytics_book")
def analytics_book(sender, execution, calls, messages, **kwargs) -> list[tuple]:
    return execution_book(execution=execution, calls=calls, messages=messages)


# The cost of an ended run's calls changed.
@receiver(usage_repriced, dispatch_uid="analytics_reprice")
def analytics_reprice(sender, execution, calls, **kwargs) -> None:
    usage_calls_reprice(execution=execution, calls=calls)
    template_analytics_reprice(execution=execution, calls=calls)


# A message of a run is left to the run's ending (analytics_book).
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


# A price row made, changed or deleted: every process reads the prices afresh at its next call (core.cache.hot_reads).
post_save.connect(hot_reads.changed, sender=ModelPrice, dispatch_uid="hot_reads_price_saved")
post_delete.connect(hot_reads.changed, sender=ModelPrice, dispatch_uid="hot_reads_price_deleted")
