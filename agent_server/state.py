"""A thread's state and history (LangGraph's ThreadState; docs/api/langgraph.md#state-and-history-from-checkpoints).

A thread whose runs run on its own LangGraph thread keeps the graph's own state there: LangGraph's own API on
Chatter's checkpointer answers for it (_graph_thread). Any other thread reads as what it has: its conversation's
messages with `checkpoint_id` null, or, where a run kept checkpoints of its own (at a human_input node's pause),
that run's graph state after the messages before it. Reads only, except thread_state_update.
"""
from __future__ import annotations

from typing import Any

from django.conf import settings

from agent_server.messages import message_dict
from agent_server.thread_stream import thread_state_updated_on_commit
from agent_server.threads import thread_values
from conversations.models import Conversation, Message
from core.errors import Conflict, InvalidInput, NotFound
from engine.graph_streams import as_json
from workflows.models import Checkpoint, WorkflowExecution

Status = WorkflowExecution.Status
_ROOT = ""


def _runs(conversation: Conversation):
    """The thread's runs that are in its history: not rolled back, not queued behind another; newest first."""
    return (WorkflowExecution.objects.filter(conversation_id=conversation.pk)
            .exclude(agent_run__rolled_back=True).exclude(agent_run__queued=True).order_by("-created_at", "-pk"))


def _compiled(execution: WorkflowExecution):
    from engine.compile import graph_compile
    from engine.graph import parse_graph
    from workflows.checkpointer import checkpointer

    return graph_compile(parse_graph(execution.graph), checkpointer=checkpointer)


def _config(execution: WorkflowExecution, checkpoint_id: str | None = None) -> dict:
    configurable = {"thread_id": str(execution.pk), "checkpoint_ns": _ROOT}
    if checkpoint_id:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def _messages_before(execution: WorkflowExecution) -> list[dict]:
    """The conversation's messages from before the run (its own start with its user message)."""
    messages = Message.objects.filter(conversation_id=execution.conversation_id)
    first = messages.filter(execution_id=execution.pk).order_by("sequence").values_list("sequence", flat=True).first()
    messages = messages.filter(sequence__lt=first) if first is not None else messages.filter(
        created_at__lt=execution.created_at)
    return [message_dict(message) for message in messages.order_by("sequence")]


def _lc_message(message) -> dict:
    from langchain_core.messages import BaseMessage

    return message.model_dump() if isinstance(message, BaseMessage) else {"content": str(message), "type": "ai"}


def _checkpoint(conversation: Conversation, checkpoint_id: str | None) -> dict:
    return {"thread_id": str(conversation.pk), "checkpoint_ns": _ROOT, "checkpoint_id": checkpoint_id,
            "checkpoint_map": None}


def interrupt_dict(interrupt) -> dict:
    """A LangGraph Interrupt as the SDK's Interrupt: its value and id (and the schema its answer must meet)."""
    value = interrupt.value
    found = {"value": as_json(value), "id": interrupt.id}
    if isinstance(value, dict) and isinstance(value.get("schema"), dict):
        found["response_schema"] = value["schema"]
    return found


def _task_dict(task, conversation: Conversation, subgraph: dict | None = None) -> dict:
    return {"id": task.id, "name": task.name, "error": str(task.error) if task.error else None,
            "interrupts": [interrupt_dict(i) for i in task.interrupts],
            "checkpoint": subgraph["checkpoint"] if subgraph else None, "state": subgraph,
            "result": as_json(task.result) if isinstance(task.result, dict) else None}


def _subgraph_state(execution: WorkflowExecution, task, conversation: Conversation) -> dict | None:
    """subgraphs=true: the state of a Python graph (CHATTER_GRAPHS) that a task of the run runs, from the
    checkpoints it saved under the task's namespace in the run's thread (LangGraph's `<node>:<task id>`)."""
    from engine.graph import parse_graph
    from engine.python_graphs import graph_load
    from workflows.checkpointer import checkpointer

    node = next((n for n in parse_graph(execution.graph).nodes if n.id == task.name), None)
    namespace = f"{task.name}:{task.id}"
    if node is None or node.type != "python_graph" or not Checkpoint.objects.filter(
            thread_id=str(execution.pk), checkpoint_ns=namespace, kind=Checkpoint.Kind.CHECKPOINT).exists():
        return None
    try:
        graph = graph_load(node.config["graph"]).copy(update={"checkpointer": checkpointer})
    except InvalidInput:  # no longer registered
        return None
    snapshot = graph.get_state({"configurable": {"thread_id": str(execution.pk), "checkpoint_ns": namespace}})
    checkpoint = {**_checkpoint(conversation, snapshot.config["configurable"]["checkpoint_id"]),
                  "checkpoint_ns": namespace}
    parent = (snapshot.parent_config or {}).get("configurable", {}).get("checkpoint_id")
    return {"values": as_json(dict(snapshot.values or {})), "next": list(snapshot.next),
            "tasks": [_task_dict(t, conversation) for t in snapshot.tasks],
            "interrupts": [interrupt_dict(i) for i in snapshot.interrupts], "metadata": as_json(snapshot.metadata or {}),
            "created_at": snapshot.created_at, "checkpoint": checkpoint,
            "parent_checkpoint": {**checkpoint, "checkpoint_id": parent} if parent else None}


def _snapshot_dict(snapshot, *, conversation: Conversation, execution: WorkflowExecution, before: list[dict],
                   current_values: dict | None = None, subgraphs: bool = False) -> dict:
    configurable = snapshot.config["configurable"]
    parent = (snapshot.parent_config or {}).get("configurable", {}).get("checkpoint_id")
    channels = snapshot.values or {}
    values = current_values
    if values is None:
        values = {"messages": [*before, *(_lc_message(m) for m in channels.get("messages") or [])]}
        if channels.get("variables"):
            values["variables"] = as_json(channels["variables"])
    tasks = [_task_dict(t, conversation, _subgraph_state(execution, t, conversation) if subgraphs else None)
             for t in snapshot.tasks]
    return {"values": values, "next": list(snapshot.next), "tasks": tasks,
            "interrupts": [interrupt_dict(i) for i in snapshot.interrupts],
            "metadata": {**as_json(snapshot.metadata or {}), "run_id": str(execution.pk),
                         "thread_id": str(conversation.pk)},
            "created_at": snapshot.created_at, "checkpoint": _checkpoint(conversation, configurable["checkpoint_id"]),
            "parent_checkpoint": _checkpoint(conversation, parent) if parent else None}


def _conversation_values(conversation: Conversation) -> dict:
    return thread_values(conversation_ids=[conversation.pk])[conversation.pk]


def _without_checkpoint(conversation: Conversation) -> dict:
    return {"values": _conversation_values(conversation), "next": [], "tasks": [], "interrupts": [],
            "metadata": dict(conversation.metadata or {}),
            "created_at": conversation.last_message_at or conversation.created_at, "parent_checkpoint": None,
            "checkpoint": _checkpoint(conversation, None)}


def checkpoint_run(*, conversation: Conversation, checkpoint_id: str) -> WorkflowExecution:
    """The run of the thread whose graph saved this checkpoint (a fork's first checkpoint is a copy of its
    parent's, id included: the newest run that has it)."""
    run_ids = Checkpoint.objects.filter(kind=Checkpoint.Kind.CHECKPOINT, checkpoint_ns=_ROOT,
                                        checkpoint_id=str(checkpoint_id)[:64]).values("execution_id")
    execution = _runs(conversation).filter(pk__in=run_ids).first()
    if execution is None:
        raise NotFound("checkpoint not found in this thread")
    return execution


def thread_registered_graph(conversation: Conversation) -> str | None:
    """The registered graph whose state the thread keeps: its latest run's; for a thread no run has run yet that
    holds checkpoints of its own (a copy of such a thread), the one its metadata names (`graph_id`, as LangGraph's
    server reads it). None for any other thread."""
    from engine.graph import parse_graph
    from engine.python_graphs import registered_graph_name

    latest = _runs(conversation).first()
    if latest is not None:
        return registered_graph_name(parse_graph(latest.graph))
    name = _copy_graph_id(conversation)
    return name if name in settings.CHATTER_GRAPHS else None


def _copy_graph_id(conversation: Conversation) -> str | None:
    """For a thread no run has run yet that holds checkpoints of its own (a copy of a thread that keeps its graph's
    state), the graph its metadata names (`graph_id`, as LangGraph's server reads it)."""
    name = (conversation.metadata or {}).get("graph_id")
    if isinstance(name, str) and Checkpoint.objects.filter(thread_id=str(conversation.pk), checkpoint_ns=_ROOT,
                                                           kind=Checkpoint.Kind.CHECKPOINT).exists():
        return name
    return None


def _copy_json_graph(conversation: Conversation):
    """A copy not run yet of a thread that keeps a template's or definition's state: the graph its metadata's
    `graph_id` names, as its owner may run it now (a new run of the copy runs that one), compiled on Chatter's
    checkpointer; None when it names none the owner may run."""
    from agent_server.assistants import assistant_row, json_graph_of
    from engine.compile import graph_compile
    from engine.graph import parse_graph
    from workflows.checkpointer import checkpointer

    name = _copy_graph_id(conversation)
    if name is None:
        return None
    try:
        row = assistant_row(user=conversation.owner, assistant_id=name)  # a graph's id: a template or definition
    except NotFound:  # (or a Python graph no longer registered): the copy reads as its messages
        return None
    return graph_compile(parse_graph(json_graph_of(row)), checkpointer=checkpointer)


def thread_questions_unwaited(*, conversation: Conversation) -> list[dict]:
    """The questions (as workflows.ending.question_of has them) that the state of a thread that keeps its graph's (a
    registered graph's, or a template's or definition's run on it) holds and no run of it waits on: its waiting
    run was cancelled, where the stock server's run had ended; a Command(resume=…) answers them in a new run, from
    that state. None ([]) for any other thread."""
    from workflows.ending import question_of

    if _runs(conversation).filter(status=Status.WAITING).exists():
        return []
    graph = _graph_thread(conversation)
    return [question_of(i) for i in graph.get_state(_thread_config(conversation)).interrupts] if graph else []


def thread_questions(*, conversation: Conversation) -> list[dict]:
    """The questions (as workflows.ending.question_of has them) the thread's state asks now, as its get_state's
    interrupts show them: of its graph's state, or of its latest run's own."""
    return thread_pending(conversation=conversation)[1]


def thread_pending(*, conversation: Conversation) -> tuple[list[str], list[dict]]:
    """What the thread's state has left now: the nodes it runs next (get_state's `next`) and the questions it asks
    (thread_questions); of its graph's state, or of its latest run's own; none for a thread without a checkpoint."""
    from workflows.ending import question_of

    graph = _graph_thread(conversation)
    if graph is not None:
        snapshot = graph.get_state(_thread_config(conversation))
    else:
        execution = _runs(conversation).first()
        if execution is None or not Checkpoint.objects.filter(execution_id=execution.pk,
                                                              kind=Checkpoint.Kind.CHECKPOINT).exists():
            return [], []
        snapshot = _compiled(execution).get_state(_config(execution))
    return list(snapshot.next), [question_of(interrupt) for interrupt in snapshot.interrupts]


def _graph_thread(conversation: Conversation):
    """A thread that keeps its graph's state (its checkpoints are the thread's own, under its id: a registered
    graph's, or a graph's whose runs on it were started on_thread): the graph of its latest run (of a copy not
    run yet, the graph it names: thread_registered_graph, _copy_json_graph), on Chatter's checkpointer, whose LangGraph
    API answers for its state (before its first checkpoint too: an empty state); None for any other thread (one
    whose runs each kept their own state, or none)."""
    from engine.python_graphs import graph_load
    from workflows.checkpointer import checkpointer

    latest = _runs(conversation).first()
    name = thread_registered_graph(conversation)
    if latest is None and name is None:
        return _copy_json_graph(conversation)
    if name is None:
        on_thread = latest.input_data.get("on_thread") or Checkpoint.objects.filter(
            thread_id=str(conversation.pk), checkpoint_ns=_ROOT).exists()  # (a later run that did not go on it)
        return _compiled(latest) if on_thread else None
    try:
        return graph_load(name, config=_thread_config(conversation)).copy(update={"checkpointer": checkpointer})
    except InvalidInput:  # no longer registered: its thread reads as its messages
        return None


def thread_graph(thread_id: str):
    """The compiled graph (on Chatter's checkpointer) whose state a LangGraph thread id holds: a thread's
    (_graph_thread), or a run's own when it ran a registered graph without a thread; None when there is none."""
    from engine.graph import parse_graph
    from engine.python_graphs import graph_load, registered_graph_name
    from workflows.checkpointer import checkpointer

    conversation = Conversation.objects.filter(pk=thread_id).first()
    if conversation is not None:
        return _graph_thread(conversation)
    execution = WorkflowExecution.objects.filter(pk=thread_id).only("graph").first()
    name = registered_graph_name(parse_graph(execution.graph)) if execution is not None else None
    if name is None:
        return None
    try:
        return graph_load(name, config=_thread_config(execution)).copy(update={"checkpointer": checkpointer})
    except InvalidInput:  # no longer registered
        return None


def _run_context(execution: WorkflowExecution):
    from engine.hooks import NullHooks
    from engine.runtime import RunContext

    return RunContext(config=execution.config, hooks=NullHooks())


def _thread_config(conversation: Conversation, checkpoint_id: str | None = None) -> dict:
    configurable = {"thread_id": str(conversation.pk), "checkpoint_ns": _ROOT}
    if checkpoint_id:
        configurable["checkpoint_id"] = str(checkpoint_id)
    return {"configurable": configurable}


def _graph_snapshot(snapshot, conversation: Conversation) -> dict:
    """A registered graph's StateSnapshot as the SDK's ThreadState: the graph's own values, tasks and parents."""
    configurable = (snapshot.config or {}).get("configurable") or {}
    parent = (snapshot.parent_config or {}).get("configurable", {}).get("checkpoint_id")
    checkpoint = {**_checkpoint(conversation, configurable.get("checkpoint_id")),
                  "checkpoint_ns": configurable.get("checkpoint_ns", _ROOT)}
    tasks = []
    for task in snapshot.tasks:
        found = _task_dict(task, conversation)
        if task.state is not None and not isinstance(task.state, dict):  # subgraphs=True: its subgraph's state
            found["state"] = _graph_snapshot(task.state, conversation)
            found["checkpoint"] = found["state"]["checkpoint"]
        tasks.append(found)
    return {"values": as_json(dict(snapshot.values or {})), "next": list(snapshot.next), "tasks": tasks,
            "interrupts": [interrupt_dict(i) for i in snapshot.interrupts], "metadata": as_json(snapshot.metadata or {}),
            "created_at": snapshot.created_at, "checkpoint": checkpoint,
            "parent_checkpoint": {**checkpoint, "checkpoint_id": parent} if parent else None}


def thread_state(*, conversation: Conversation, checkpoint_id: str | None = None, subgraphs: bool = False) -> dict:
    """The thread's state now, or at one of its checkpoints; `subgraphs`: with the state of the Python graph each
    of its tasks runs, when it saved one."""
    graph = _graph_thread(conversation)
    if graph is not None:
        snapshot = graph.get_state(_thread_config(conversation, checkpoint_id), subgraphs=subgraphs)
        if checkpoint_id and snapshot.created_at is None:
            raise NotFound("checkpoint not found in this thread")
        return _graph_snapshot(snapshot, conversation)
    if checkpoint_id:
        execution = checkpoint_run(conversation=conversation, checkpoint_id=checkpoint_id)
        snapshot = _compiled(execution).get_state(_config(execution, checkpoint_id))
        return _snapshot_dict(snapshot, conversation=conversation, execution=execution,
                              before=_messages_before(execution), subgraphs=subgraphs)
    execution = _runs(conversation).first()
    if execution is None or not Checkpoint.objects.filter(execution_id=execution.pk,
                                                          kind=Checkpoint.Kind.CHECKPOINT).exists():
        return _without_checkpoint(conversation)
    snapshot = _compiled(execution).get_state(_config(execution))
    waiting = execution.status == Status.WAITING
    return _snapshot_dict(snapshot, conversation=conversation, execution=execution,
                          before=_messages_before(execution) if waiting else [],
                          current_values=None if waiting else _conversation_values(conversation), subgraphs=subgraphs)


def thread_history(*, conversation: Conversation, limit: int = 10, before: str | None = None,
                   metadata: dict | None = None) -> list[dict]:
    """The thread's checkpoints, newest first: its runs newest first, each run's checkpoints newest first.
    `before`: only those older than that checkpoint; `metadata`: only those whose metadata holds these pairs."""
    graph = _graph_thread(conversation)
    if graph is not None:
        return [_graph_snapshot(snapshot, conversation) for snapshot in graph.get_state_history(
            _thread_config(conversation), filter=metadata or None,
            before=_thread_config(conversation, before) if before else None, limit=limit)]
    latest = _runs(conversation).first()
    runs = list(_runs(conversation).filter(checkpoints__kind=Checkpoint.Kind.CHECKPOINT).distinct())
    start = None
    found: list[dict] = []
    if not before and not metadata and (latest is None or latest not in runs):
        found.append(_without_checkpoint(conversation))  # the state now (its run kept no checkpoint) comes first
    if before:
        start = checkpoint_run(conversation=conversation, checkpoint_id=before)
        runs = runs[[run.pk for run in runs].index(start.pk):] if start in runs else []
    for execution in runs:
        if len(found) >= limit:
            break
        config = _config(execution)
        older = _config(execution, before) if start is not None and execution.pk == start.pk else None
        wanted = {key: value for key, value in (metadata or {}).items() if key not in ("run_id", "thread_id")}
        if (metadata or {}).get("run_id") not in (None, str(execution.pk)):
            continue
        prior = None
        for snapshot in _compiled(execution).get_state_history(config, filter=wanted or None, before=older,
                                                               limit=limit - len(found)):
            prior = prior if prior is not None else _messages_before(execution)
            now = (not found and older is None and not wanted and execution == latest
                   and execution.status != Status.WAITING)
            found.append(_snapshot_dict(snapshot, conversation=conversation, execution=execution, before=prior,
                                        current_values=_conversation_values(conversation) if now else None))
    return found[:limit]


def thread_state_update(*, conversation: Conversation, values: Any, as_node: str | None = None,
                        checkpoint_id: str | None = None) -> dict:
    """LangGraph's update_state: a new checkpoint of the thread's latest run's graph (or of the run whose checkpoint
    is named), made as if `as_node` had returned `values`. A run waiting for input goes on from it when answered.
    A thread whose runs kept no checkpoint has no graph state to update: a 409."""
    graph = _graph_thread(conversation)
    if graph is not None:
        if _runs(conversation).filter(status__in=(Status.PENDING, Status.RUNNING)).exists():
            raise Conflict("the thread's run is still running: update its state once it has ended or paused",
                           code="thread_busy")
        if values is not None and not isinstance(values, (dict, list)):
            raise InvalidInput("values must be an object of state keys")
        if as_node is not None and as_node not in graph.nodes:
            raise InvalidInput(f"as_node {as_node!r} is not a node of the thread's graph")
        config = _thread_config(conversation, checkpoint_id)
        if checkpoint_id and graph.get_state(config).created_at is None:  # LangGraph would begin an empty state
            raise NotFound("checkpoint not found in this thread")
        # A Chatter graph's routing runs (the update is the node's output): it reads the run's context, no hooks.
        if latest := _runs(conversation).first():  # (none on a copy not run yet: a registered graph's)
            config["configurable"]["chatter"] = _run_context(latest)
        config = _updated(graph, config, values, as_node=as_node)
        thread_state_updated_on_commit(conversation=conversation, checkpoint_id=config["configurable"]["checkpoint_id"])
        return {"checkpoint": {**_checkpoint(conversation, config["configurable"]["checkpoint_id"])}}
    if checkpoint_id:
        execution = checkpoint_run(conversation=conversation, checkpoint_id=checkpoint_id)
    else:
        execution = _runs(conversation).filter(checkpoints__kind=Checkpoint.Kind.CHECKPOINT).first()
        if execution is None or execution != _runs(conversation).first():
            raise Conflict("this thread's latest run kept no checkpoint: there is no graph state to update "
                           "(a plain chat turn saves none unless its config asks checkpoints: every_step)",
                           code="no_checkpoint")
    if execution.status in (Status.PENDING, Status.RUNNING):
        raise Conflict("the thread's run is still running: update its state once it has ended or paused",
                       code="thread_busy")
    if values is not None and not isinstance(values, dict):
        raise InvalidInput("values must be an object of state keys, such as {\"messages\": [...]}")
    graph = _compiled(execution)
    if as_node is not None and as_node not in graph.nodes:
        raise InvalidInput(f"as_node {as_node!r} is not a node of the thread's graph")
    config = _config(execution, checkpoint_id)
    # The node's routing runs (LangGraph: the update is the node's output): it reads the run's context, no hooks.
    config["configurable"]["chatter"] = _run_context(execution)
    config = _updated(graph, config, values, as_node=as_node)
    # Saved outside a run, the saver wrote the rows without their run: they are that run's.
    Checkpoint.objects.filter(thread_id=str(execution.pk), execution__isnull=True).update(execution_id=execution.pk)
    thread_state_updated_on_commit(conversation=conversation, checkpoint_id=config["configurable"]["checkpoint_id"])
    return {"checkpoint": _checkpoint(conversation, config["configurable"]["checkpoint_id"])}


def _updated(graph, config: dict, values, *, as_node: str | None) -> dict:
    """LangGraph's update_state; what it (or LangChain's message coercion) raises for an update it cannot place
    (values that are no object of its channels, a value its reducer cannot take, a message that is no message, an
    ambiguous node) is the caller's 422. (LangGraph is imported here: a process loads it only when a graph runs.)"""
    from langgraph.errors import InvalidUpdateError

    try:
        return graph.update_state(config, values, as_node=as_node)
    except (InvalidUpdateError, NotImplementedError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"the state update was refused: {exc}") from None
