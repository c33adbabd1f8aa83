"""multitask_strategy="rollback": the thread's runs in progress are cancelled and taken out of the thread."""
from __future__ import annotations

import time

from django.db import transaction
from django.db.models import F

from agent_server.assistants import assistant_id_of_execution
from agent_server.models import AgentRun
from audit.services import audit_record
from conversations.models import Conversation, Message
from conversations.services import message_delete
from core.errors import Conflict
from core.money import usd
from workflows.models import RUN_IN_PROGRESS, Checkpoint, WorkflowExecution
from workflows.services.runs import execution_cancel

CANCEL_WAIT_S = 30.0


def runs_roll_back(*, conversation_id, actor) -> None:
    """multitask_strategy="rollback": the thread's runs in progress are cancelled, and once ended, rolled back:
    their messages leave the thread through conversations' message_delete (the one path: the conversation's totals
    and the usage rollups' message counts follow through its receivers), and the runs leave the thread's runs and
    history. What they spent stays on the books: a run's LLM calls, tokens and cost were spent at the provider,
    so the run row, its calls, the template's analytics and the budgets keep them ("nothing is lost"), and an
    `execution.rolled_back` audit event says what was taken out of the thread (see runs_stop for the wait)."""
    ids = list(WorkflowExecution.objects.filter(conversation_id=conversation_id, status__in=RUN_IN_PROGRESS)
               .values_list("pk", flat=True))
    runs_stop(execution_ids=ids, actor=actor)
    for execution in WorkflowExecution.objects.filter(pk__in=ids).select_related("template"):
        run_roll_back(execution=execution, actor=actor)


def runs_stop(*, execution_ids, actor, deadline: float | None = None) -> None:
    """Cancel each of the runs still in progress (pending or waiting: ended at once; running: asked to stop at its
    next token or node boundary, wherever it runs) and return once every one has ended. One that has not by the
    deadline (CANCEL_WAIT_S from now) is a 409: its cancel stands, the caller changes nothing else."""
    deadline = time.monotonic() + CANCEL_WAIT_S if deadline is None else deadline
    for execution in WorkflowExecution.objects.filter(pk__in=execution_ids, status__in=RUN_IN_PROGRESS):
        try:
            execution_cancel(execution=execution, actor=actor)
        except Conflict:
            pass  # it ended meanwhile
    while WorkflowExecution.objects.filter(pk__in=execution_ids, status__in=RUN_IN_PROGRESS).exists():
        if time.monotonic() > deadline:
            raise Conflict("the run did not stop in time; try again", code="thread_busy")
        time.sleep(0.05)


def run_roll_back(*, execution: WorkflowExecution, actor) -> None:
    """Take one ended run out of its thread (see runs_roll_back): its messages, then its place in the thread."""
    with transaction.atomic():
        messages = list(Message.objects.filter(execution_id=execution.pk).values(
            "pk", "role", "total_tokens", "cost"))
        for message in messages:
            message_delete(message_id=message["pk"], actor=actor)
        # A thread's graph state is its checkpoints: the steps this run added leave it too.
        Checkpoint.objects.filter(execution_id=execution.pk, thread_id=str(execution.conversation_id)).delete()
        run_unqueue(execution=execution)
        AgentRun.objects.update_or_create(execution_id=execution.pk, defaults={"rolled_back": True},
                                          create_defaults={"assistant_id": assistant_id_of_execution(execution) or "",
                                                           "rolled_back": True})
        audit_record(action="execution.rolled_back", actor=actor, target=execution,
                     correlation_id=execution.correlation_id, data={
                         "conversation_id": str(execution.conversation_id), "status": execution.status,
                         "messages_removed": [{"id": str(m["pk"]), "role": m["role"],
                                               "total_tokens": m["total_tokens"], "cost": usd(m["cost"])}
                                              for m in messages],
                         "kept_on_the_run": {"total_tokens": execution.total_tokens, "cost": usd(execution.cost),
                                             "llm_calls": execution.llm_calls}})


def run_unqueue(*, execution: WorkflowExecution) -> None:
    """A queued run that will not start (cancelled, rolled back) waits no more: its thread stops counting it."""
    with transaction.atomic():
        if AgentRun.objects.filter(execution_id=execution.pk, queued=True).update(queued=False):
            Conversation.objects.filter(pk=execution.conversation_id, runs_queued__gt=0).update(
                runs_queued=F("runs_queued") - 1)
