"""Independent checks of the invariants (docs/architecture.md#invariants), computed straight from the source rows."""
from decimal import Decimal

from django.db.models import Count, Sum

from analytics.models import TemplateAnalytics
from conversations.models import Conversation, Message
from workflows.models import NodeExecution, WorkflowExecution

TOKENS = ("prompt_tokens", "completion_tokens", "total_tokens")


def _sums(rows, fields):
    found = rows.aggregate(**{f: Sum(f) for f in fields})
    return {f: found[f] or 0 for f in fields}


def assert_i1(conversation: Conversation) -> None:
    conversation.refresh_from_db()
    messages = Message.objects.filter(conversation=conversation)
    actual = _sums(messages, (*TOKENS, "cost"))
    assert conversation.message_count == messages.count()
    for field in TOKENS:
        assert getattr(conversation, field) == actual[field], field
    assert conversation.total_cost == (actual["cost"] or Decimal("0"))
    assert conversation.total_tokens == conversation.prompt_tokens + conversation.completion_tokens


def assert_i1_everywhere() -> None:
    for conversation in Conversation.objects.all():
        assert_i1(conversation)


TEMPLATE_FIGURES = ("total_executions", "successful_executions", "failed_executions", "cancelled_executions",
                    "total_execution_time_ms", *TOKENS, "total_cost")


def assert_i2() -> None:
    """A template's figures, the sums over its slots (TemplateAnalytics rows), are the sums over its ended runs."""
    stored = TemplateAnalytics.objects.order_by().values("template_id").annotate(
        **{f"n_{name}": Sum(name) for name in TEMPLATE_FIGURES})
    for row in stored:
        template_id, figures = row["template_id"], {name: row[f"n_{name}"] for name in TEMPLATE_FIGURES}
        runs = WorkflowExecution.objects.filter(template_id=template_id, status__in=WorkflowExecution.TERMINAL)
        actual = _sums(runs, (*TOKENS, "cost", "execution_time_ms"))
        by_status = dict(runs.values_list("status").annotate(n=Count("id")))
        assert figures["total_executions"] == runs.count(), template_id
        assert figures["successful_executions"] == by_status.get("completed", 0)
        assert figures["failed_executions"] == by_status.get("failed", 0)
        assert figures["cancelled_executions"] == by_status.get("cancelled", 0)
        assert figures["total_execution_time_ms"] == actual["execution_time_ms"]
        for field in TOKENS:
            assert figures[field] == actual[field], field
        assert figures["total_cost"] == actual["cost"]


def assert_i3(execution: WorkflowExecution) -> None:
    execution.refresh_from_db()
    assert execution.status in WorkflowExecution.TERMINAL
    nodes = _sums(NodeExecution.objects.filter(execution=execution), (*TOKENS, "cost", "llm_calls", "tool_calls"))
    for field in (*TOKENS, "cost", "llm_calls", "tool_calls"):
        assert getattr(execution, field) == nodes[field], field
    if execution.conversation_id:
        # A chat turn's reply carries them; a registered graph's run spreads them over the messages it produced.
        replies = Message.objects.filter(execution=execution).exclude(role="user")
        produced = _sums(replies, (*TOKENS, "cost"))
        for field in (*TOKENS, "cost"):
            assert produced[field] == getattr(execution, field), field


def assert_seq_gapless(execution: WorkflowExecution) -> list[str]:
    """I6: seq 1..n without gaps, and the terminal event last. Returns the event names in order."""
    events = list(execution.events.order_by("seq").values_list("seq", "event"))
    assert [seq for seq, _ in events] == list(range(1, len(events) + 1))
    names = [name for _, name in events]
    assert names[-1] in ("workflow_completed", "workflow_failed", "workflow_cancelled")
    return names


def assert_streamed_as_stored(execution: WorkflowExecution, frames: list) -> None:
    """The persisted events a stream sent (SSE frames with an id) are the stored ones, in order, gap-free (I6)."""
    stored = list(execution.events.order_by("seq").values_list("seq", flat=True))
    assert [frame.envelope["seq"] for frame in frames if frame.id is not None] == stored == list(
        range(1, len(stored) + 1))


def assert_all(execution: WorkflowExecution) -> None:
    assert_i3(execution)
    if execution.conversation_id:
        assert_i1(execution.conversation)
    assert_i2()
    assert_seq_gapless(execution)
