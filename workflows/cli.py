"""Shared pieces of the workflow commands: who runs, how a run's events look in a terminal, and how a refused
request reads there (sentences, one detail a line: never a Python list or dict)."""
from __future__ import annotations

import json
import time
from typing import AsyncIterator, Callable

from django.core.management.base import CommandError

from core.errors import ChatterError, InvalidInput, error_details
from core.money import dollars


def _detail_lines(details, path: str = "") -> list[str]:
    """`path: message` lines for the details of an error, whichever shape they come in: a list of
    `{path, code, message}`, a field map (DRF style, lists or nested maps), or a plain value."""
    if isinstance(details, dict) and "message" in details and isinstance(details["message"], str):
        where = details.get("path") or path
        code = f"{details['code']}: " if details.get("code") else ""
        return [f"{where}: {code}{details['message']}" if where else f"{code}{details['message']}"]
    if isinstance(details, dict):
        return [line for key, value in details.items()
                for line in _detail_lines(value, f"{path}.{key}" if path else str(key))]
    if isinstance(details, (list, tuple)):
        return [line for item in details for line in _detail_lines(item, path)]
    if details in (None, ""):
        return []
    return [f"{path}: {details}" if path else str(details)]


def command_error(exc: ChatterError) -> CommandError:
    """The CommandError for a refused request: its message, then one line per detail. A message that ends by
    quoting a detail ("graph is invalid (2 errors); nodes[1].id: …", for a one-line reader) is cut there, so
    the lines below say each detail once, in full."""
    headline, quoted, tail = exc.message.rpartition("; ")
    if not (quoted and any(tail.endswith(item["message"]) for item in error_details(exc.details, code=exc.code))):
        headline = exc.message
    return CommandError("\n".join([headline, *_detail_lines(exc.details)]))


class EventPrinter:
    """Writes a run's events as they arrive: streamed text, and node progress when asked for."""

    def __init__(self, out, *, nodes: bool, token_pause_s: float = 0.0):
        self.out = out
        self.nodes = nodes
        self.token_pause_s = token_pause_s  # a pause after each streamed word: a person sees it arrive
        self.midline = False
        self.terminal: dict | None = None

    def __call__(self, envelope: dict) -> None:
        event, data = envelope["event"], envelope["data"]
        if event == "token":
            self.out.write(data["text"], ending="")
            self.out.flush()
            self.midline = True
            if self.token_pause_s:
                time.sleep(self.token_pause_s)
            return
        if event in ("workflow_completed", "workflow_failed", "workflow_cancelled"):
            self.terminal = envelope
        if event == "tool_called":
            self.newline()
            self.out.write(f"  ⚙ {data['tool']} {'ok' if data['ok'] else 'failed: ' + str(data.get('error'))}")
        if not self.nodes or event not in ("node_started", "node_completed", "node_failed"):
            return
        self.newline()
        if event == "node_started":
            self.out.write(f"▶ {data['node_id']} ({data['node_type']})")
        else:
            mark = {"completed": "✓", "skipped": "–"}.get(data.get("status"), "✗")
            extra = f" {data['error']}" if data.get("error") else ""
            self.out.write(f"{mark} {data['node_id']} {data['duration_ms']} ms, {data['total_tokens']} tokens, "
                           f"{dollars(data['cost'])}{extra}")

    def newline(self) -> None:
        if self.midline:
            self.out.write("")
            self.midline = False

    def summary(self, execution) -> str:
        self.newline()
        return (f"tokens: prompt {execution.prompt_tokens}, completion {execution.completion_tokens}, "
                f"total {execution.total_tokens} | cost {dollars(execution.cost)} | {execution.llm_calls} LLM calls, "
                f"{execution.tool_calls} tool calls | {execution.status} in {execution.execution_time_ms} ms")


def fail_unless_completed(execution) -> None:
    if execution.status != "completed":
        raise CommandError(f"run {execution.pk} {execution.status}: {execution.error_type}: {execution.error_message}")



def answer_from_text(text: str, schema: dict | None):
    """What a person typed, as the answer its question's schema expects: JSON unless the schema wants text (the
    server says what is wrong with a bad one)."""
    if schema is None or schema.get("type") == "string":
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def follow_run(execution, feed: AsyncIterator[dict], printer: EventPrinter, *, ask: Callable[[str], str],
               out) -> None:
    """Print a run's events to its end. A question it waits on (a human_input node) is asked with `ask`; the
    answer goes on with the run (workflows.services.waiting, streamed here), a refused one is asked again."""
    from workflows.realtime import feed_blocking
    from workflows.services.waiting import execution_resume

    while feed is not None:
        question, current, feed = None, feed, None
        for envelope in feed_blocking(current):
            printer(envelope)
            if envelope["event"] == "input_required":
                question = envelope["data"]
                break
        while question is not None and feed is None:
            printer.newline()
            try:
                typed = ask(f"? {question['prompt']} ")
            except EOFError:  # nobody to ask (input closed): the run waits for an answer over the API
                raise CommandError(f"run {execution.pk} waits for an answer to {question['prompt']!r}: "
                                   f"POST /api/v1/executions/{execution.pk}/resume/") from None
            answer = answer_from_text(typed, question.get("schema"))
            execution.refresh_from_db()
            try:
                feed = execution_resume(execution=execution, actor=execution.owner, mode="stream",
                                        answers={question["interrupt_id"]: answer})
            except InvalidInput as exc:
                out.write(command_error(exc).args[0])
