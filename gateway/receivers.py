"""The gateway's receivers of workflows' domain signals: a key's limits (gateway.limits) bind every run it starts;
and of its limits' rows, which the hot path reads from a memo."""
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from core.cache import hot_reads
from gateway.limits import key_run_admit, key_tokens_count
from gateway.models import KeyLimits
from workflows.models import WorkflowExecution
from workflows.signals import execution_finished, execution_writing


@receiver(execution_writing, sender=WorkflowExecution, dispatch_uid="gateway_key_limits")
def key_limits_of_a_run(sender, *, execution: WorkflowExecution, models: list, admitted: bool, **kwargs) -> None:
    """A run started with a key, on any surface, only if the key's limits let it in (403, 429: nothing is written);
    the gateway admitted its calls itself (gateway.services.gateway_admit)."""
    if execution.api_key is not None and not admitted:
        key_run_admit(api_key=execution.api_key, model=execution.model, models=[model for _, model in models])


@receiver(execution_finished, sender=WorkflowExecution, dispatch_uid="gateway_key_tokens")
def key_tokens_of_a_finished_call(sender, *, execution: WorkflowExecution, **kwargs) -> None:
    """A run's tokens count against its key's tokens-per-minute limits (gateway.limits), whichever surface
    started it."""
    if execution.api_key_id is not None:
        key_tokens_count(api_key_id=execution.api_key_id, model=execution.model, tokens=execution.total_tokens)


# A key's limits changed: every process reads them afresh at its next call (core.cache.hot_reads).
post_save.connect(hot_reads.changed, sender=KeyLimits, dispatch_uid="hot_reads_key_limits_saved")
post_delete.connect(hot_reads.changed, sender=KeyLimits, dispatch_uid="hot_reads_key_limits_deleted")
