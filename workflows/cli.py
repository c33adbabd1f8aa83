"""Shared pieces of the workflow commands: who runs, and how a run's events look in a terminal."""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError


def cli_user(username: str | None):
    """The named user; by default the first superuser, else a local `cli` user."""
    users = get_user_model().objects
    if username:
        try:
            return users.get(username=username)
        except users.model.DoesNotExist:
            raise CommandError(f"no user named {username!r}") from None
    return users.filter(is_superuser=True).order_by("pk").first() or users.get_or_create(username="cli")[0]


class EventPrinter:
    """Writes a run's events as they arrive: streamed text, and node progress when asked for."""

    def __init__(self, out, *, nodes: bool):
        self.out = out
        self.nodes = nodes
        self.midline = False
        self.terminal: dict | None = None

    def __call__(self, envelope: dict) -> None:
        event, data = envelope["event"], envelope["data"]
        if event == "token":
            self.out.write(data["text"], ending="")
            self.out.flush()
            self.midline = True
            return
        if event in ("workflow_completed", "workflow_failed", "workflow_cancelled"):
            self.terminal = envelope
        if event == "tool_called":
            self._newline()
            self.out.write(f"  ⚙ {data['tool']} {'ok' if data['ok'] else 'failed: ' + str(data.get('error'))}")
        if not self.nodes or event not in ("node_started", "node_completed", "node_failed"):
            return
        self._newline()
        if event == "node_started":
            self.out.write(f"▶ {data['node_id']} ({data['node_type']})")
        else:
            mark = {"completed": "✓", "skipped": "–"}.get(data.get("status"), "✗")
            extra = f" {data['error']}" if data.get("error") else ""
            self.out.write(f"{mark} {data['node_id']} {data['duration_ms']} ms, {data['total_tokens']} tokens, "
                           f"${data['cost']}{extra}")

    def _newline(self) -> None:
        if self.midline:
            self.out.write("")
            self.midline = False

    def summary(self, execution) -> str:
        self._newline()
        return (f"tokens: prompt {execution.prompt_tokens}, completion {execution.completion_tokens}, "
                f"total {execution.total_tokens} | cost ${execution.cost} | {execution.llm_calls} LLM calls, "
                f"{execution.tool_calls} tool calls | {execution.status} in {execution.execution_time_ms} ms")


def fail_unless_completed(execution) -> None:
    if execution.status != "completed":
        raise CommandError(f"run {execution.pk} {execution.status}: {execution.error_type}: {execution.error_message}")

