"""A thread's stream (`client.threads.join_stream`, GET /threads/{thread_id}/stream), as LangGraph's server serves
it (docs/api/langgraph.md#a-threads-stream): the runs of the thread from the client's join on, each as
runs.join_stream gives it (agent_server.stream.FrameMaker over the run's feed, in the modes the run was started
with) between `metadata` `{"run_id", "attempt"}` at its start (or its going on after a pause) and `metadata`
`{"status": "run_done", "run_id"}` at its end (or its pause for input), and, in `state_update`, the thread's state
after each update_state; until the client leaves.

A run frame's id is `<run_id>:<seq>-<k>` (its frame `<seq>-<k>` of that run): `Last-Event-ID` resumes after it,
with the rest of that run's log, then the log of each later run of the thread, then what comes. State updates are
live only, as the stock server keeps none to replay (no id).

The stream looks for the thread's new runs and state updates when the owner's feed tells of one (workflows.realtime's
one event path: a run's `workflow_started` names its thread, update_state says `thread_state_updated`), and every
LOOK_S for what the hub did not bring (Redis down), which also finds the thread deleted.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from typing import AsyncIterator

from channels.db import database_sync_to_async
from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from agent_server.run_selectors import agent_run_of, is_registered_run
from agent_server.stream import FrameMaker, graph_streams_of, parse_last_event_id
from conversations.models import Conversation
from core.api.sse import HEARTBEAT, frame
from core.errors import InvalidInput
from workflows.events import TERMINAL_EVENTS, event_envelope, events_publish
from workflows.hub import Subscription
from workflows.models import RUN_IN_PROGRESS, Checkpoint, ExecutionEvent, WorkflowExecution
from workflows.realtime import RUN_VISIBLE_S, execution_feed, user_subscribe

THREAD_STREAM_MODES = ("run_modes", "lifecycle", "state_update")  # LangGraph's ThreadStreamMode
LOOK_S = 5.0  # how often the stream looks for the thread's new runs and state updates its owner's feed did not tell
HEARTBEAT_S = 5.0  # the stock server's heartbeat interval
STATE_UPDATED = "thread_state_updated"  # on the owner's feed (/ws/events/ too) once an update_state commits
_LOOK, _RELAY_ENDED = object(), object()  # on the stream's queue, among its frames: a look is due; a relay ended


def thread_stream_modes(values: list[str]) -> list[str]:
    """The modes asked for (each value one, or several comma-separated), `run_modes` when none: a value that is not
    a thread stream mode is refused (422), as the stock server refuses it."""
    modes = [mode.strip() for value in values for mode in value.split(",") if mode.strip()]
    for mode in modes:
        if mode not in THREAD_STREAM_MODES:
            raise InvalidInput(f"Invalid stream mode: {mode} (a thread's stream modes: "
                               f"{', '.join(THREAD_STREAM_MODES)})")
    return modes or ["run_modes"]


def thread_resume_point(*, conversation: Conversation, last_event_id: str | None) -> tuple[str, int, int] | None:
    """(run, seq, k) of a `Last-Event-ID` this thread's stream gave; a 422 for one it did not."""
    if not last_event_id:
        return None
    run, _, at = last_event_id.rpartition(":")
    point = parse_last_event_id(at)
    try:
        run_id = uuid.UUID(run)
    except ValueError:
        run_id = None
    if point is None or run_id is None or not WorkflowExecution.objects.filter(
            pk=run_id, conversation_id=conversation.pk).exists():
        raise InvalidInput("Invalid last-event-id: not an event id of this thread's stream")
    return str(run_id), *point


def thread_state_updated_on_commit(*, conversation: Conversation, checkpoint_id: str) -> None:
    """`thread_state_updated` ({thread_id, checkpoint_id}) on the owner's feed once the caller's update commits: the
    thread's streams in `state_update` send its state. Not persisted (it is no run's event)."""
    envelope = event_envelope(execution_id="", event=STATE_UPDATED, seq=None,
                              data={"thread_id": str(conversation.pk), "checkpoint_id": checkpoint_id})
    owner_id = conversation.owner_id
    transaction.on_commit(lambda: events_publish([], owner_id=owner_id, owner_only=(envelope,)))


@database_sync_to_async
def _runs_at_join(conversation_id, resume: tuple[str, int, int] | None) -> list[tuple[str, int, tuple | None]]:
    """The runs followed from the join: (run, seq to read after, frame to resume after): the thread's runs in
    progress from their next event, or, resuming, the named run after its frame and each later run whole."""
    runs = WorkflowExecution.objects.filter(conversation_id=conversation_id)
    if resume is not None:
        run_id, seq, k = resume
        named = runs.get(pk=run_id)
        later = runs.filter(Q(created_at__gt=named.created_at) | Q(created_at=named.created_at, pk__gt=named.pk))
        return [(run_id, seq - 1, (seq, k)),
                *[(str(pk), 0, None) for pk in later.order_by("created_at", "pk").values_list("pk", flat=True)]]
    return [(str(pk), last or 0, None) for pk, last in runs.filter(status__in=RUN_IN_PROGRESS).annotate(
        last=Max("events__seq")).order_by("created_at", "pk").values_list("pk", "last")]


class _Arrivals:
    """What of the thread's rows (its runs, its state updates) came since the join: those made since the last look
    (less RUN_VISIBLE_S: a row is seen once its write commits) not seen before."""

    def __init__(self, conversation_id, *, since):
        self.conversation_id = conversation_id
        self.window = since - timedelta(seconds=RUN_VISIBLE_S)
        self.runs: set = set()
        self.updates: set = set()

    def _look(self) -> tuple:
        look = timezone.now()
        runs = WorkflowExecution.objects.filter(conversation_id=self.conversation_id, created_at__gte=self.window)
        updates = Checkpoint.objects.filter(
            Q(thread_id=str(self.conversation_id)) | Q(execution__conversation_id=self.conversation_id),
            kind=Checkpoint.Kind.CHECKPOINT, checkpoint_ns="", metadata__source="update", created_at__gte=self.window)
        self.window = look - timedelta(seconds=RUN_VISIBLE_S)
        return ([str(pk) for pk in runs.order_by("created_at", "pk").values_list("pk", flat=True)],
                list(updates.order_by("created_at").values_list("checkpoint_id", flat=True)))

    @database_sync_to_async
    def seen_now(self) -> None:
        runs, updates = self._look()
        self.runs.update(runs)
        self.updates.update(updates)

    @database_sync_to_async
    def new(self) -> tuple[list[str], list[dict]] | None:
        """The runs and the states after the updates that came since the last look; None once the thread is gone."""
        conversation = Conversation.objects.filter(pk=self.conversation_id).first()
        if conversation is None:
            return None
        runs, updates = self._look()
        runs, updates = [r for r in runs if r not in self.runs], [u for u in updates if u not in self.updates]
        self.runs.update(runs)
        self.updates.update(updates)
        return runs, [_state_after(conversation, checkpoint_id) for checkpoint_id in updates]


class _Told:
    """Which of the owner's live events may bring the thread something, so that the stream looks: a run's start on
    it (`workflow_started` names the run's thread), the first event heard of a run not known to be another
    thread's (one that never started, cancelled while queued; one whose start the hub lost), an update_state of
    it. `runs`: those the stream follows (None: it follows none)."""

    def __init__(self, thread_id: str, *, runs: set | None, states: bool):
        self.thread_id, self.runs, self.states = thread_id, runs, states
        self.elsewhere: set[str] = set()  # the owner's runs on other threads, until they end
        self.asked: dict[str, bool] = {}  # runs heard of since the last look: whether what was heard was their end
        self.due = False  # a look is asked for and not begun

    def news(self, envelopes: list[dict]) -> bool:
        """Whether these events ask for a look that is not due yet."""
        news = False
        for envelope in envelopes:
            name, data, run = envelope["event"], envelope["data"], envelope.get("execution_id")
            if name == STATE_UPDATED:
                news |= self.states and data.get("thread_id") == self.thread_id
            elif envelope["seq"] is None or self.runs is None or run in self.runs:
                continue  # a token, another feed event; a run followed already
            elif run in self.elsewhere:
                if name in TERMINAL_EVENTS:
                    self.elsewhere.discard(run)
            elif name == "workflow_started" and str(data.get("conversation_id")) != self.thread_id:
                self.elsewhere.add(run)
            else:
                self.asked[run] = name in TERMINAL_EVENTS
                news = True
        if not news or self.due:
            return False
        self.due = True
        return True

    def look_begun(self) -> dict[str, bool]:
        """A look begins: what was asked since the last one."""
        asked, self.asked, self.due = self.asked, {}, False
        return asked

    def looked(self, asked: dict[str, bool]) -> None:
        """After a look: a run asked about that it did not find is another thread's."""
        self.elsewhere.update(run for run, ended in asked.items() if not ended and run not in self.runs)


async def _told(live: Subscription, told: _Told, out: asyncio.Queue) -> None:
    """Put a look on the stream's queue each time the owner's feed tells of something for the thread."""
    while True:
        if told.news(await live.get(HEARTBEAT_S)):
            out.put_nowait(_LOOK)


def _state_after(conversation: Conversation, checkpoint_id: str) -> dict:
    from agent_server.state import thread_state

    return {"state": thread_state(conversation=conversation, checkpoint_id=checkpoint_id),
            "thread_id": str(conversation.pk)}


@database_sync_to_async
def _frame_maker(run_id: str, thread_id: str) -> FrameMaker:
    execution = WorkflowExecution.objects.select_related("agent_run").get(pk=run_id)
    agent_run = agent_run_of(execution)
    return FrameMaker(run_id=run_id, thread_id=thread_id, modes=(agent_run.stream_mode if agent_run else None)
                      or ["values"], inputs=[], native=is_registered_run(execution),
                      graph_streams=graph_streams_of(execution))


async def _run_relayed(run_id: str, *, thread_id: str, after: int, resume: tuple | None, modes: list[str],
                       out: asyncio.Queue) -> None:
    """One run's frames onto the thread's stream, from its event after `after` (its frames after `resume`) to its
    end: those of its own stream (not its `end`: the stream goes on) in `run_modes`, and its start and end as
    `metadata` frames."""
    maker = await _frame_maker(run_id, thread_id)
    feed = execution_feed(run_id, after=after)
    done = False
    try:
        async for envelope in feed:
            name, seq = envelope["event"], envelope["seq"]
            frames = [(event, data) for event, data in await maker.frames(envelope) if event != "end"]
            if name in ("workflow_started", "workflow_resumed"):
                frames.insert(0, ("metadata", {"run_id": run_id, "attempt": 1}))
                done = False
            if (name == "input_required" or name in TERMINAL_EVENTS) and not done:
                frames.append(("metadata", {"status": "run_done", "run_id": run_id}))
                done = True
            for k, (event, data) in enumerate(frames):
                if "run_modes" not in modes and event != "metadata":
                    continue
                if seq is None:
                    await out.put(frame(data, event=event))
                elif resume is None or (seq, k) > resume:
                    await out.put(frame(data, event=event, frame_id=f"{run_id}:{seq}-{k}"))
    finally:
        await feed.aclose()


async def thread_stream(*, conversation_id, owner_id, modes: list[str],
                        resume: tuple[str, int, int] | None = None) -> AsyncIterator[str]:
    """The SSE text of a thread's stream (see the module's docstring), a heartbeat when it has been quiet for
    HEARTBEAT_S; it ends when the thread is deleted."""
    out: asyncio.Queue = asyncio.Queue()  # frames, and _LOOK, _RELAY_ENDED
    relays: list[asyncio.Future] = []
    follows_runs = "run_modes" in modes or "lifecycle" in modes

    def follow(run_id: str, after: int, resume_after: tuple | None) -> None:
        relay = asyncio.ensure_future(_run_relayed(run_id, thread_id=str(conversation_id), after=after,
                                                   resume=resume_after, modes=modes, out=out))
        relay.add_done_callback(lambda _: out.put_nowait(_RELAY_ENDED))
        relays.append(relay)

    arrivals = _Arrivals(conversation_id, since=timezone.now())
    told = _Told(str(conversation_id), runs=arrivals.runs if follows_runs else None, states="state_update" in modes)
    live = user_subscribe(owner_id)
    listening = asyncio.ensure_future(_told(live, told, out))
    try:
        await live.ready()  # from here on, a run started or a state updated anywhere is told
        await arrivals.seen_now()
        if follows_runs:
            for run_id, after, resume_after in await _runs_at_join(conversation_id, resume):
                arrivals.runs.add(run_id)  # (one made since the look above: followed once)
                follow(run_id, after, resume_after)
        quiet_since = time.monotonic()
        next_look = quiet_since + LOOK_S
        while True:
            try:
                item = await asyncio.wait_for(
                    out.get(), timeout=max(0.0, min(next_look, quiet_since + HEARTBEAT_S) - time.monotonic()))
            except asyncio.TimeoutError:
                item = None
            if isinstance(item, str):
                yield item
                quiet_since = time.monotonic()
                continue
            for relay in [relay for relay in relays if relay.done()]:
                relays.remove(relay)
                relay.result()  # a relay that failed ends the stream with its error
            if item is _LOOK or time.monotonic() >= next_look:
                asked = told.look_begun()
                came = await arrivals.new()
                if came is None:
                    return
                told.looked(asked)
                runs, states = came
                if follows_runs:
                    for run_id in runs:
                        follow(run_id, 0, None)
                if "state_update" in modes:
                    for state in states:
                        yield frame(state, event="state_update")
                        quiet_since = time.monotonic()
                next_look = time.monotonic() + LOOK_S
            if time.monotonic() - quiet_since >= HEARTBEAT_S:
                yield HEARTBEAT
                quiet_since = time.monotonic()
    finally:
        for task in [*relays, listening]:
            task.cancel()
        await asyncio.gather(*relays, listening, return_exceptions=True)
        live.close()
