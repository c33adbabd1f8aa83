"""The gateway's receivers of workflows' domain signals."""
from django.dispatch import receiver

from gateway.limits import key_tokens_count
from workflows.models import WorkflowExecution
from workflows.signals import execution_finished


@receiver(execution_finished, sender=WorkflowExecution, dispatch_uid="gateway_key_tokens")
def key_tokens_of_a_finished_call(sender, *, execution: WorkflowExecution, **kwargs) -> None:
    """A gateway call's tokens count against its key's tokens-per-minute limits (gateway.limits)."""
    if execution.workflow_type == WorkflowExecution.Type.GATEWAY and execution.api_key_id is not None:
        key_tokens_count(api_key_id=execution.api_key_id, model=execution.model, tokens=execution.total_tokens)
