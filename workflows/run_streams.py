"""What a run publishes and does not store (tokens and tool-call pieces as a reply streams, an owner's
conversation_updated), never before the events that came before it: docs/architecture.md#when-a-run-writes."""
from __future__ import annotations

from engine.graph import Node
from workflows.events import event_envelope, events_publish


class StreamHooks:
    """The RunHooks of a streaming reply and the recorder's live-only events. Uses the recorder's lock, its write
    under way (`writing`), its hold (`_events`; `_live`: tokens behind a folded write; `_live_after`), its budget,
    `_wait_ahead` and `_budget_stop`."""

    def publish(self, event: str, data: dict) -> None:
        """An event that is published but not part of the run's persisted log (token, conversation_updated)."""
        self._fragments_publish([event_envelope(execution_id=self.execution.pk, event=event, data=data, seq=None)])

    def publish_after_write(self, event: str, data: dict) -> None:
        """An event for the owner's feed, not persisted, published right after the events of the run's next write."""
        self._live_after.append(event_envelope(execution_id=self.execution.pk, event=event, data=data, seq=None))

    def settled(self, *, fold: bool = False) -> None:
        """Wait for the write under way (workflows.writer). `fold`: one no writer has taken yet is left to the
        run's next write, the tokens streamed behind it held to be published after that write's events."""
        for envelope in self.writing.settle(fold=fold):
            self._live.append((len(self._events), envelope))

    def token(self, node: Node, text: str, message_id: str | None = None, reply: dict | None = None) -> None:
        self._streamed("token", {"node_id": node.id, "text": text,
                                 **({"message_id": message_id} if message_id else {}),
                                 **({"reply": reply} if reply else {})}, text)

    def tool_call_delta(self, node: Node, delta: dict, message_id: str | None = None) -> None:
        arguments = delta.get("args") or ""
        self._streamed("tool_call_delta", {"node_id": node.id, "index": delta.get("index"), "id": delta.get("id"),
                                           "name": delta.get("name"), "arguments": arguments,
                                           **({"message_id": message_id} if message_id else {})}, arguments)

    def _streamed(self, event: str, data: dict, text: str) -> None:
        """A fragment of a reply as it streams: published, not stored, never before what happened before it: after
        the write under way (which the run does not wait for), or what is held, handed to a writer now."""
        envelope = event_envelope(execution_id=self.execution.pk, event=event, data=data, seq=None)
        with self._lock:
            if not self.writing.under_way and (self._events or self._live):
                self._wait_ahead(behind=True)
            if not self.writing.attach(envelope):
                self._fragments_publish([envelope])
            if (refused := self.budget.past(text)) is not None:  # streaming past its reservation: stop it here
                self._budget_stop(refused)

    def _fragments_publish(self, envelopes: list[dict]) -> None:
        """Envelopes not persisted, published at once (or by the thread that makes the write they waited for)."""
        events_publish(envelopes, owner_id=self.execution.owner_id)
