"""`webhook` on runs and crons: when such a run ends (success, error, interrupted, timeout), the run as LangGraph's
Run (with its values, and Chatter's tokens and cost under "chatter") is POSTed to it, signed and retried by the
webhooks app (the one delivery mechanism, as budget alerts use). Only runs with a webhook pay for it: the receiver
reads the execution it is handed, nothing else, for every other run."""
from __future__ import annotations

import json

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.dispatch import receiver

from agent_server.run_selectors import run_as_dict, run_values
from webhooks.services import webhook_delivery_create
from workflows.models import WorkflowExecution
from workflows.signals import execution_finished

RUN_ENDED = "run_ended"


@receiver(execution_finished, sender=WorkflowExecution, dispatch_uid="agent_server_run_webhooks")
def run_webhook_on_end(sender, execution, **kwargs) -> None:
    if not execution.webhook:
        return
    execution_id = execution.pk
    transaction.on_commit(lambda: run_webhook_send(execution_id=execution_id))


def run_webhook_payload(execution: WorkflowExecution) -> dict:
    payload = {**run_as_dict(execution), "values": run_values(execution=execution,
                                                               inputs=_stored_inputs(execution))}
    if execution.status in (WorkflowExecution.Status.FAILED, WorkflowExecution.Status.CANCELLED):
        payload["error"] = execution.error_message or execution.error_type or execution.status
    return json.loads(json.dumps(payload, cls=DjangoJSONEncoder))


def _stored_inputs(execution: WorkflowExecution) -> list[dict]:
    message = (execution.input_data or {}).get("message")
    return [{"role": "user", "content": message}] if message else []


def run_webhook_send(*, execution_id) -> None:
    """After the run's end commits: log the delivery (webhooks.WebhookDelivery) and hand it to the task."""
    execution = WorkflowExecution.objects.select_related("agent_run", "template").filter(pk=execution_id).first()
    if execution is None or not execution.webhook:
        return
    webhook_delivery_create(subject_type="run", subject_id=str(execution.pk), url=execution.webhook, event=RUN_ENDED,
                            payload=run_webhook_payload(execution))
