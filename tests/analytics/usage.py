"""An independent computation of the usage rollups from the raw rows, in plain Python (no analytics code), for
tests to compare the stored rollups with."""
from collections import defaultdict
from datetime import timezone
from decimal import Decimal

from analytics.models import UsageRollup
from conversations.models import Message
from workflows.models import LLMCall, WorkflowExecution

COUNTERS = UsageRollup.COUNTERS


def _day(moment):
    return moment.astimezone(timezone.utc).date()


def usage_from_raw_rows() -> dict:
    """{(day, owner_id, provider, model, template_id, conversation_id): {counter: value}} without zero rows."""
    rows: dict = defaultdict(lambda: {name: Decimal("0") if name == "cost" else 0 for name in COUNTERS})
    runs = {run.pk: run for run in WorkflowExecution.objects.filter(status__in=WorkflowExecution.TERMINAL)}
    for run in runs.values():
        row = rows[(_day(run.completed_at), run.owner_id, run.provider, run.model, run.template_id,
                    run.conversation_id)]
        row["executions"] += 1
        row[f"{run.status}_executions"] += 1
    for call in LLMCall.objects.filter(execution_id__in=list(runs)):
        run = runs[call.execution_id]
        row = rows[(_day(run.completed_at), run.owner_id, call.provider, call.model, run.template_id,
                    run.conversation_id)]
        row["llm_calls"] += 1
        for name in ("prompt_tokens", "completion_tokens", "total_tokens", "cached_prompt_tokens",
                     "reasoning_tokens", "cost"):
            row[name] += getattr(call, name)
    for message in Message.objects.select_related("conversation", "execution"):
        if message.execution and message.execution.status not in WorkflowExecution.TERMINAL:
            continue  # a run's messages are counted once it has ended
        template_id = message.execution.template_id if message.execution else None
        rows[(_day(message.created_at), message.conversation.owner_id, message.provider_used, message.model_used,
              template_id, message.conversation_id)]["messages"] += 1
    return dict(rows)


def usage_stored() -> dict:
    """The stored rows summed over the slots of their dimensions (runs of no conversation book on one of several
    rows: analytics.models.UsageRollup)."""
    stored: dict = defaultdict(lambda: {name: Decimal("0") if name == "cost" else 0 for name in COUNTERS})
    for row in UsageRollup.objects.all():
        target = stored[(row.day, row.owner_id, row.provider, row.model, row.template_id, row.conversation_id)]
        for name in COUNTERS:
            target[name] += getattr(row, name)
    return {dims: counters for dims, counters in stored.items() if any(counters.values())}


def assert_usage_exact() -> dict:
    """The stored rollups equal the raw-row figures, row by row; returns them."""
    expected = usage_from_raw_rows()
    assert usage_stored() == expected
    return expected


def totals(rows: dict, **match) -> dict:
    """Sums over the raw-row figures whose dimensions match (owner_id=…, provider=…, …)."""
    names = ("day", "owner_id", "provider", "model", "template_id", "conversation_id")
    out = {name: Decimal("0") if name == "cost" else 0 for name in COUNTERS}
    for key, counters in rows.items():
        dims = dict(zip(names, key))
        if all(dims[name] == value for name, value in match.items()):
            for name in COUNTERS:
                out[name] += counters[name]
    return out
