"""django-q2 tasks of the Agent Server API."""
from __future__ import annotations

from core.schedules import schedule_keep

EXPIRY_SCHEDULE_NAME = "chatter-thread-expiry-sweep"


def thread_expiry_sweep_task() -> int:
    """Every minute (`chatter-thread-expiry-sweep`, agent_server.apps): threads past their ttl deleted
    (agent_server.threads.threads_expired_delete)."""
    from agent_server.threads import threads_expired_delete

    return threads_expired_delete()


def thread_expiry_sweep_ensure() -> None:
    """The django-q2 schedule of the sweep of threads past their ttl, every minute (kept by name)."""
    from django_q.models import Schedule

    schedule_keep(EXPIRY_SCHEDULE_NAME, func="agent_server.tasks.thread_expiry_sweep_task",
                  schedule_type=Schedule.MINUTES, minutes=1, repeats=-1)
