"""agent_server listens to workflows' news (signals go up): when a run of a thread ends, the thread's next
queued run (multitask_strategy enqueue / interrupt) is handed to the workers."""
from __future__ import annotations

from django.db import transaction
from django.dispatch import receiver

from agent_server.runs import queued_run_start_if_idle
from workflows.models import WorkflowExecution
from workflows.signals import execution_finished


@receiver(execution_finished, sender=WorkflowExecution, dispatch_uid="agent_server_queued_runs")
def start_queued_run(sender, execution, messages=(), **kwargs) -> None:
    """After the ending commits (never inside it: the run's own transaction stays as it was), the thread's next
    queued run is handed over. The ending's message write returned the conversation's row: when it says no run
    is queued (runs_queued, kept under that row's lock), nothing is read."""
    if execution.conversation_id is None:
        return
    if messages and messages[-1].conversation.runs_queued == 0:
        return
    conversation_id = execution.conversation_id

    def start() -> None:
        queued_run_start_if_idle(conversation_id=conversation_id)

    transaction.on_commit(start)
