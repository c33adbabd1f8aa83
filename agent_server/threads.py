"""Threads are conversations: the same rows, messages and aggregates as /api/v1/conversations/. A thread's
values are its graph's state (its messages in LangGraph's format, for a thread that keeps none); its status is
`busy` while one of its runs is pending or running, `interrupted` while one waits for input or while its graph
stands at a static breakpoint where its latest run stopped or its state asks the question its latest run, cancelled,
waited on, `error` while its latest run failed; once its state is updated since its latest run (update_state),
`interrupted` while the state that update left has nodes to run next, else `idle`, as LangGraph's server sets it
(agent_server.state: its state and history)."""
from __future__ import annotations

import logging
import time
import uuid
from datetime import timedelta

from django.db import transaction
from django.db.models import Exists, Max, Min, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from core.containment import rows_containing
from agent_server.messages import message_dict, question_interrupt
from agent_server.models import ThreadExpiry
from agent_server.rollback import CANCEL_WAIT_S, runs_stop
from conversations.models import Conversation, Message
from conversations.selectors import conversation_list
from conversations.services import conversation_create, conversation_delete, conversation_update, message_save
from core.errors import Conflict, InvalidInput, NotFound
from core.money import usd
from workflows.models import RUN_IN_PROGRESS, Checkpoint, WorkflowExecution

SORT_FIELDS = {"thread_id": "id", "created_at": "created_at", "updated_at": "updated_at"}
EXPIRED_BATCH = 100  # threads past their ttl deleted by one sweep (the next minute's takes the rest)
logger = logging.getLogger(__name__)


def owned_row(rows, key, *, what: str):
    """The row of `rows` (already the user's own) whose id is `key`: a 404 naming `what` when `key` is not a UUID
    or names no such row (another user's is indistinguishable from a missing one)."""
    try:
        pk = uuid.UUID(str(key))
    except ValueError:
        raise NotFound(f"{what} not found") from None
    row = rows.filter(pk=pk).first()
    if row is None:
        raise NotFound(f"{what} not found")
    return row


def thread_get(*, user, thread_id) -> Conversation:
    return owned_row(conversation_list(user=user), thread_id, what="thread")


_INTERRUPT_WRITE = "__interrupt__"  # the channel of LangGraph's pending write of a task's interrupt()s


def _with_stop(threads: QuerySet) -> QuerySet:
    """`threads` annotated with how the thread's latest run (of its history: not rolled back) ended: `stopped`,
    with its graph at a static breakpoint (a registered graph's run ends there, as on LangGraph's server, and its
    thread waits until a run goes on: its output names the nodes next); `failed`, with an error (a timeout too; not
    a cancel), which LangGraph's server shows as the thread's `error` until a later run ends otherwise; `asking`,
    cancelled while its graph's last checkpoint holds a question (its interrupt(): the run waited on it), which
    the thread's state still asks, as LangGraph's server's thread whose run ended at it."""
    latest = WorkflowExecution.objects.filter(conversation_id=OuterRef("pk")).exclude(
        agent_run__rolled_back=True).order_by("-created_at", "-pk").values("pk")[:1]
    last_checkpoint = Checkpoint.objects.filter(execution_id=OuterRef("execution_id"), checkpoint_ns="",
                                                kind=Checkpoint.Kind.CHECKPOINT).order_by("-checkpoint_id")
    return threads.annotate(latest_run=Subquery(latest)).annotate(stopped=Exists(WorkflowExecution.objects.filter(
        pk=OuterRef("latest_run"), status=WorkflowExecution.Status.COMPLETED, output_data__has_key="next")),
        failed=Exists(WorkflowExecution.objects.filter(pk=OuterRef("latest_run"),
                                                       status=WorkflowExecution.Status.FAILED)),
        asking=Exists(Checkpoint.objects.filter(
            execution_id=OuterRef("latest_run"), execution__status=WorkflowExecution.Status.CANCELLED,
            checkpoint_ns="", kind=Checkpoint.Kind.WRITE, channel=_INTERRUPT_WRITE,
            checkpoint_id=Subquery(last_checkpoint.values("checkpoint_id")[:1]))))


def _updated_since_run(threads: QuerySet) -> set:
    """Of `threads` (annotated by _with_stop; none with a run in progress), those whose state was updated since
    their latest run ended (threads.update_state: a checkpoint of source "update", the thread's own or its run's):
    LangGraph's server sets a thread's status from the state an update leaves (_updated_statuses), whatever the run
    before it did. A thread with no run counts an update made after its first checkpoint: a copy's checkpoints,
    written at once, are the original's (a copy reads `idle` until it runs, as the stock server's)."""
    latest = dict(threads.values_list("pk", "latest_run"))
    if not latest:
        return set()
    ended = dict(WorkflowExecution.objects.filter(pk__in=[run for run in latest.values() if run is not None])
                 .values_list("pk", "completed_at"))
    by_thread, by_run = {str(pk): pk for pk in latest}, {run: pk for pk, run in latest.items() if run is not None}
    rows = Checkpoint.objects.filter(Q(thread_id__in=list(by_thread)) | Q(execution_id__in=list(by_run)),
                                     kind=Checkpoint.Kind.CHECKPOINT, checkpoint_ns="")
    runless = [str(pk) for pk, run in latest.items() if run is None]
    first = dict(rows.filter(thread_id__in=runless).values("thread_id").annotate(first=Min("created_at")).values_list(
        "thread_id", "first")) if runless else {}
    found = set()
    for thread_id, run, created_at in rows.filter(metadata__source="update").values_list(
            "thread_id", "execution_id", "created_at"):
        pk = by_thread.get(thread_id) or by_run.get(run)
        if pk is None:
            continue
        since = first.get(str(pk)) if latest[pk] is None else ended.get(latest[pk])
        if since is None or created_at > since:
            found.add(pk)
    return found


def _updated_statuses(threads: QuerySet) -> dict:
    """{thread: (status, questions)} of `threads` (as _updated_since_run takes them) whose state was updated since
    their latest run: `interrupted` when the state the update left has nodes to run next, else `idle`, and the
    questions it asks, as LangGraph's server sets a thread's status on update_state (one read of each one's
    state)."""
    from agent_server.state import thread_pending  # (it reads threads: imported when one was updated)

    statuses = {}
    for conversation in Conversation.objects.filter(pk__in=_updated_since_run(threads)):
        next_nodes, questions = thread_pending(conversation=conversation)
        statuses[conversation.pk] = ("interrupted" if next_nodes else "idle", questions)
    return statuses


def thread_stopped(*, conversation: Conversation) -> bool:
    """Whether the thread's graph stands at a static breakpoint where its latest run stopped."""
    return _with_stop(Conversation.objects.filter(pk=conversation.pk)).filter(stopped=True).exists()


def _statuses(conversation_ids) -> tuple[dict, dict]:
    """Each thread's status (`busy` while a run of it is pending or running, else `interrupted` while one waits for
    input; else, its state updated since its latest run, `interrupted` while that state has nodes next, else
    `idle`; else `interrupted` while its graph stands at a static breakpoint or its state still asks the question of
    a waiting run that was cancelled, else `error` when its latest run failed, else `idle`) and the interrupts its
    waiting runs hold, or its state asks (by node; a static breakpoint is none, as in LangGraph), in three queries
    (and a read of the state of each thread whose state asks or was updated)."""

    statuses: dict = {}
    interrupts: dict = {}
    for conversation_id, status, output in WorkflowExecution.objects.filter(
            conversation_id__in=conversation_ids, status__in=RUN_IN_PROGRESS).values_list(
            "conversation_id", "status", "output_data"):
        if status == WorkflowExecution.Status.WAITING:
            statuses.setdefault(conversation_id, "interrupted")
            for question in (output or {}).get("input_required") or []:
                if "breakpoint" not in question:
                    interrupts.setdefault(conversation_id, {}).setdefault(
                        question.get("node_id") or "__root__", []).append(question_interrupt(question))
        else:
            statuses[conversation_id] = "busy"
    rest = [pk for pk in conversation_ids if pk not in statuses]
    if rest:
        ended = _with_stop(Conversation.objects.filter(pk__in=rest))
        updated = _updated_statuses(ended)
        for pk, (status, questions) in updated.items():
            statuses[pk] = status
            for question in questions:
                interrupts.setdefault(pk, {}).setdefault(question.get("node_id") or "__root__", []).append(
                    question_interrupt(question))
        for conversation in ended.filter(Q(stopped=True) | Q(failed=True) | Q(asking=True)).exclude(
                pk__in=list(updated)):
            if conversation.stopped or conversation.asking:
                statuses[conversation.pk] = "interrupted"
            else:
                statuses[conversation.pk] = "error"
            if conversation.asking:
                from agent_server.state import thread_questions  # (it reads threads: imported when one asks)

                for question in thread_questions(conversation=conversation):
                    interrupts.setdefault(conversation.pk, {}).setdefault(
                        question.get("node_id") or "__root__", []).append(question_interrupt(question))
    return statuses, interrupts


def graph_thread_values(thread_id: str, *, at_start_of=None, at_end_of=None) -> dict | None:
    """The state a thread that keeps its graph's holds now, as JSON: read through its graph, as the graph's own
    get_state reads it (a channel kept as deltas, LangGraph's DeltaChannel, is its writes replayed, not the
    sentinel its checkpoint stores); None when the thread has no checkpoint of its own. A thread whose graph is no
    longer registered reads as its latest checkpoint's channels. `at_start_of`: a run (its id) whose first state is
    read (its input applied: its first checkpoint after the input's), when it has written one; `at_end_of`: a run
    whose last state is read (the checkpoint it ended or paused at, whatever later runs wrote), when it has one."""
    from agent_server.state import thread_graph
    from engine.graph_streams import as_json
    from workflows.checkpointer import checkpointer

    config = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    if at_start_of is not None or at_end_of is not None:
        runs = Checkpoint.objects.filter(thread_id=thread_id, checkpoint_ns="", kind=Checkpoint.Kind.CHECKPOINT)
        if at_start_of is not None:
            runs = runs.filter(execution_id=at_start_of).exclude(metadata__source="input").order_by("checkpoint_id")
        else:
            runs = runs.filter(execution_id=at_end_of).order_by("-checkpoint_id")
        chosen = runs.values_list("checkpoint_id", flat=True).first()
        if chosen is not None:
            config["configurable"]["checkpoint_id"] = chosen
    found = checkpointer.get_tuple(config)
    if found is None:
        return None
    graph = thread_graph(thread_id)
    channels = graph.get_state(config).values if graph is not None else found.checkpoint.get("channel_values")
    return {name: as_json(value) for name, value in (channels or {}).items()
            if not name.startswith("__") and ":" not in name}


def thread_values(*, conversation_ids, at_start_of=None, at_end_of=None) -> dict:
    """{conversation id: values}: a thread that keeps its graph's state holds that state (its checkpoints are the
    thread's); any other thread its messages, {"messages": [...]}, in one query. `at_start_of`: a run (its id)
    whose thread is read as it was when the run started, with its input: without the replies it made since;
    `at_end_of`: a run whose thread is read as the run left it: without what runs after it wrote (a queued turn's
    message among them)."""
    values = {pk: {"messages": []} for pk in conversation_ids}
    graph_threads = set(Checkpoint.objects.filter(
        thread_id__in=[str(pk) for pk in conversation_ids], checkpoint_ns="",
        kind=Checkpoint.Kind.CHECKPOINT).values_list("thread_id", flat=True).distinct())
    messages = Message.objects.filter(conversation_id__in=conversation_ids)
    if at_start_of is not None:
        messages = messages.exclude(Q(execution_id=at_start_of) & ~Q(role=Message.Role.USER))
    if at_end_of is not None:
        last = Message.objects.filter(execution_id=at_end_of).aggregate(last=Max("sequence"))["last"]
        if last is not None:
            messages = messages.filter(sequence__lte=last)
    for message in messages.exclude(
            conversation_id__in=[uuid.UUID(t) for t in graph_threads]).order_by("conversation_id", "sequence"):
        values[message.conversation_id]["messages"].append(message_dict(message))
    for thread_id in graph_threads:
        values[uuid.UUID(thread_id)] = graph_thread_values(thread_id, at_start_of=at_start_of,
                                                           at_end_of=at_end_of) or {}
    return values


def threads_as_dicts(conversations: list[Conversation]) -> list[dict]:
    ids = [c.pk for c in conversations]
    (statuses, interrupts), values = _statuses(ids), thread_values(conversation_ids=ids)
    return [{"thread_id": str(c.pk), "created_at": c.created_at, "updated_at": c.updated_at,
             "metadata": c.metadata or {}, "status": statuses.get(c.pk, "idle"), "values": values[c.pk],
             "interrupts": interrupts.get(c.pk, {}), "chatter": _totals(c)} for c in conversations]


def _totals(conversation: Conversation) -> dict:
    return {"title": conversation.title, "message_count": conversation.message_count,
            "prompt_tokens": conversation.prompt_tokens, "completion_tokens": conversation.completion_tokens,
            "total_tokens": conversation.total_tokens, "total_cost": usd(conversation.total_cost)}


def thread_as_dict(conversation: Conversation) -> dict:
    return threads_as_dicts([conversation])[0]


def thread_create(*, owner, thread_id=None, metadata: dict | None = None, if_exists: str | None = None,
                  ttl_minutes: float | None = None) -> Conversation:
    """A new conversation (with the id the client chose, if any), deleted `ttl_minutes` from now when given
    (_expiry_set). An id already taken: 409, or with if_exists="do_nothing" the existing thread as it is when it is
    the caller's (another user's stays a 409: it is not revealed as theirs)."""
    metadata = metadata or {}
    if thread_id is not None:
        existing = Conversation.objects.filter(pk=thread_id).first()
        if existing is not None:
            if if_exists == "do_nothing" and existing.owner_id == owner.pk:
                return existing
            raise Conflict("a thread with this id already exists")
    title = metadata.get("title") if isinstance(metadata.get("title"), str) else ""
    with transaction.atomic():
        conversation = conversation_create(owner=owner, title=title, metadata=metadata, conversation_id=thread_id)
        if ttl_minutes is not None:
            _expiry_set(conversation, ttl_minutes)
    return conversation


def thread_update(*, conversation: Conversation, metadata: dict, ttl_minutes: float | None = None) -> Conversation:
    """LangGraph merges the metadata it is given into the thread's; a ttl counts again from now."""
    with transaction.atomic():
        if ttl_minutes is not None:
            _expiry_set(conversation, ttl_minutes)
        return conversation_update(conversation=conversation, metadata={**(conversation.metadata or {}), **metadata})


def _expiry_set(conversation: Conversation, ttl_minutes: float) -> None:
    """The thread is deleted once `ttl_minutes` have passed from now (by threads_expired_delete)."""
    ThreadExpiry.objects.update_or_create(conversation=conversation, defaults={
        "ttl_minutes": ttl_minutes, "expires_at": timezone.now() + timedelta(minutes=ttl_minutes)})


def thread_ttl(*, conversation: Conversation) -> dict | None:
    """The thread's ttl as the stock server answers it (GET with include=ttl); None when it has none."""
    expiry = ThreadExpiry.objects.filter(conversation=conversation).first()
    if expiry is None:
        return None
    return {"strategy": "delete", "ttl_minutes": expiry.ttl_minutes, "expires_at": expiry.expires_at}


def threads_expired_delete(*, now=None) -> int:
    """The threads whose ttl has passed (at most EXPIRED_BATCH), deleted as threads.delete deletes them (their runs
    in progress stopped, their usage kept), each owner's as its own actor; how many were. An owner's threads whose
    run does not stop in time are left to the next sweep."""
    expired = list(Conversation.objects.filter(expiry__expires_at__lte=now or timezone.now()).select_related(
        "owner").order_by("expiry__expires_at")[:EXPIRED_BATCH])
    by_owner: dict = {}
    for conversation in expired:
        by_owner.setdefault(conversation.owner_id, []).append(conversation)
    deleted = 0
    for conversations in by_owner.values():
        try:
            threads_delete(conversations=conversations, actor=conversations[0].owner)
        except Conflict as exc:
            logger.warning("threads past their ttl not deleted yet (%s): %s", exc.message,
                           ", ".join(str(c.pk) for c in conversations))
            continue
        deleted += len(conversations)
    return deleted


def thread_delete(*, conversation: Conversation, actor) -> None:
    threads_delete(conversations=[conversation], actor=actor)


def threads_delete(*, conversations: list[Conversation], actor) -> None:
    """As LangGraph's server deletes a thread, whatever its runs are doing: each run in progress is cancelled
    (their usage kept on them, I5) and, once all have ended, the threads are deleted in one transaction, each under
    its row's lock where no run may be in progress (conversation_delete). A run that began meanwhile (a worker
    handed the thread's next queued run over, a client started one) is stopped the same way, then the deletion is
    tried again: the race with a worker ends in a deletion, never a 409 (one only for a run that does not stop
    within rollback.CANCEL_WAIT_S, and then no thread is deleted)."""
    from workflows.checkpointer import checkpointer

    conversations = sorted(conversations, key=lambda conversation: conversation.pk)  # one lock order
    deadline = time.monotonic() + CANCEL_WAIT_S
    while True:
        runs_stop(execution_ids=list(WorkflowExecution.objects.filter(
            conversation_id__in=[c.pk for c in conversations], status__in=RUN_IN_PROGRESS).values_list(
            "pk", flat=True)), actor=actor, deadline=deadline)
        try:
            with transaction.atomic():
                for conversation in conversations:
                    conversation_delete(conversation=conversation, actor=actor)
                    # The graph's state under the thread's id goes with it (a thread made again with that id, as
                    # clients choose their ids, starts empty).
                    checkpointer.delete_thread(str(conversation.pk))
            return
        except Conflict:  # a run of one began between the stop and the lock
            if time.monotonic() > deadline:
                raise


def threads_prune(*, user, thread_ids: list, actor) -> int:
    """client.threads.prune (strategy "delete"): the user's threads among `thread_ids` deleted as threads_delete
    deletes them, all or none; how many were. An id that names no thread of the user's (missing, another user's)
    is passed over, as the stock server counts only the threads it pruned."""
    conversations = list(conversation_list(user=user).filter(pk__in=thread_ids))
    threads_delete(conversations=conversations, actor=actor)
    return len(conversations)


def thread_copy(*, conversation: Conversation, actor) -> Conversation:
    """A new thread with the same metadata and the same history: its messages copied as text, without their
    usage (the copy carries the conversation, not its bill: tokens are counted once, on the original); a thread
    that keeps its graph's state (a registered graph's, a template's or definition's run on it), its graph's
    checkpoints too, as LangGraph's server copies a thread, so the copy's state and history are the original's
    and its next run goes on from them."""
    from workflows.checkpointer import checkpointer

    with transaction.atomic():
        copy = conversation_create(owner=conversation.owner, title=conversation.title,
                                   metadata={**(conversation.metadata or {}), "copied_from": str(conversation.pk)})
        for message in conversation.messages.order_by("sequence"):
            message_save(conversation_id=copy.pk, owner=conversation.owner, role=message.role,
                         content=message.content, tool_calls=message.tool_calls,
                         metadata={**(message.metadata or {}), "copied_from": str(message.pk)}, actor=actor)
        if Checkpoint.objects.filter(thread_id=str(conversation.pk)).exists():
            checkpointer.copy_thread(str(conversation.pk), str(copy.pk))
    return Conversation.objects.get(pk=copy.pk)


def thread_search(*, user, metadata: dict | None = None, ids: list | None = None, status: str | None = None,
                  limit: int = 10, offset: int = 0, sort_by: str | None = None,
                  sort_order: str | None = None) -> list[Conversation]:
    threads = rows_containing(conversation_list(user=user), field="metadata", pattern=metadata)
    if ids is not None:
        try:
            threads = threads.filter(pk__in=[uuid.UUID(str(pk)) for pk in ids])
        except ValueError:
            raise InvalidInput("ids must be thread ids") from None
    running = (WorkflowExecution.Status.PENDING, WorkflowExecution.Status.RUNNING)
    waiting = WorkflowExecution.Status.WAITING

    def runs(statuses):
        return Exists(WorkflowExecution.objects.filter(conversation_id=OuterRef("pk"), status__in=statuses))
    if status == "busy":
        threads = threads.filter(runs(running))
    elif status in ("interrupted", "idle", "error"):  # a thread updated since its latest run: by its state
        updated = _updated_statuses(_with_stop(threads).filter(~runs(RUN_IN_PROGRESS)))
        by_state = [pk for pk, (state_status, _) in updated.items() if state_status == status]
        ended = _with_stop(threads).exclude(pk__in=list(updated))
        if status == "interrupted":
            threads = ended.filter(~runs(running)).filter(Q(runs([waiting])) | Q(stopped=True) | Q(asking=True))
        elif status == "idle":
            threads = ended.filter(~runs(RUN_IN_PROGRESS), stopped=False, asking=False, failed=False)
        else:
            threads = ended.filter(~runs(RUN_IN_PROGRESS), failed=True)
        threads = conversation_list(user=user).filter(Q(pk__in=threads.values("pk")) | Q(pk__in=by_state))
    field = SORT_FIELDS.get(sort_by or "created_at", "created_at")
    threads = threads.order_by(field if sort_order == "asc" else f"-{field}", "pk")
    return list(threads[offset:offset + limit])
