"""`webhook` on runs and crons: when such a run ends (success, error, interrupted, timeout), the run as LangGraph's
Run (with its values, and Chatter's tokens and cost under "chatter") is POSTed to it, signed and retried by the
webhooks app (the one delivery mechanism, as budget alerts use). The delivery is written by the run's ending
transaction, riding on its last write, and its payload made from the ended run as it is first sent, so a process
that stops after that commit loses no webhook. Only runs with a webhook pay for it: the receivers read the execution
they are handed, nothing else, for every other run."""
from __future__ import annotations

import json
import uuid

from django.core.serializers.json import DjangoJSONEncoder
from django.dispatch import receiver

from agent_server.run_selectors import run_as_dict, run_values
from webhooks.services import webhook_delivery_send, webhook_delivery_written, webhook_payload_register
from workflows.models import WorkflowExecution
from workflows.signals import execution_ending, execution_finished

RUN_ENDED = "run_ended"


@receiver(execution_ending, sender=WorkflowExecution, dispatch_uid="agent_server_run_webhook_written")
def run_webhook_written(sender, execution, **kwargs) -> list[tuple]:
    if not execution.webhook:
        return []
    return [webhook_delivery_written(delivery_id=run_webhook_delivery_id(execution.pk), subject_type="run",
                                     subject_id=str(execution.pk), url=execution.webhook, event=RUN_ENDED)]


@receiver(execution_finished, sender=WorkflowExecution, dispatch_uid="agent_server_run_webhooks")
def run_webhook_on_end(sender, execution, **kwargs) -> None:
    if execution.webhook:  # (its row written: sent after the commit, at once outside a transaction)
        webhook_delivery_send(delivery_id=run_webhook_delivery_id(execution.pk))


def run_webhook_delivery_id(execution_id) -> uuid.UUID:
    """A run ends once: its webhook's delivery has an id of its own, made from the run's."""
    return uuid.uuid5(uuid.UUID(str(execution_id)), RUN_ENDED)


def run_webhook_payload(execution: WorkflowExecution) -> dict:
    payload = {**run_as_dict(execution), "values": run_values(execution=execution,
                                                               inputs=_stored_inputs(execution))}
    if execution.status in (WorkflowExecution.Status.FAILED, WorkflowExecution.Status.CANCELLED):
        payload["error"] = execution.error_message or execution.error_type or execution.status
    return json.loads(json.dumps(payload, cls=DjangoJSONEncoder))


def _stored_inputs(execution: WorkflowExecution) -> list[dict]:
    message = (execution.input_data or {}).get("message")
    return [{"role": "user", "content": message}] if message else []


def run_webhook_payload_of(execution_id: str) -> dict | None:
    """The payload of the run's webhook, made from the ended run as its delivery is first sent; None: it is gone."""
    execution = WorkflowExecution.objects.select_related("agent_run", "template").filter(pk=execution_id).first()
    return run_webhook_payload(execution) if execution is not None else None


webhook_payload_register(event=RUN_ENDED, build=run_webhook_payload_of)
