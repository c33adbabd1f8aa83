"""The request bodies of /langgraph/, as langgraph-sdk sends them (validated; unknown fields are ignored, as
LangGraph's server ignores what it does not use, except those whose meaning Chatter cannot honour yet)."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, RootModel, field_validator,
                      model_validator)

# Past any row count, and small enough that offset + limit is still a 64-bit integer, as SQL's OFFSET takes.
MAX_OFFSET = 2**62
# The thread streaming protocol's channels (agent_server.protocol), as a subscription names them.
CHANNELS = ("values", "updates", "checkpoints", "messages", "tools", "custom", "lifecycle", "input", "tasks")
STREAM_MODES = ("values", "updates", "messages-tuple", "messages", "events", "custom", "debug", "tasks",
                "checkpoints", "metadata")


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


def _config_checked(config: dict[str, Any]) -> dict[str, Any]:
    """A run's (or a cron's) `config` as LangGraph reads it: its `configurable` an object, its `recursion_limit` (the
    most supersteps the graph may take) a positive integer."""
    if not isinstance(config.get("configurable") or {}, dict):
        raise ValueError("config.configurable must be an object")
    limit = config.get("recursion_limit")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 2**31 - 1):
        raise ValueError("config.recursion_limit must be a positive integer")
    return config


# A run's or a cron's `config`: LangGraph's RunnableConfig (its `configurable` an object, other keys its own).
RunConfig = Annotated[dict[str, Any], AfterValidator(_config_checked)]


ASSISTANT_FIELDS = ("assistant_id", "graph_id", "name", "description", "config", "context", "created_at",
                    "updated_at", "metadata", "version")
ASSISTANT_SORT_FIELDS = ("assistant_id", "graph_id", "name", "created_at", "updated_at")
# What a thread, a run and a cron answered carry, as the SDK's ThreadSelectField, RunSelectField and CronSelectField
# name them (those Chatter's rows have): a `select` of them keeps only those.
THREAD_FIELDS = ("thread_id", "created_at", "updated_at", "metadata", "status", "values", "interrupts")
RUN_FIELDS = ("run_id", "thread_id", "assistant_id", "created_at", "updated_at", "status", "metadata", "kwargs",
              "multitask_strategy", "cancel_reason")
CRON_FIELDS = ("cron_id", "assistant_id", "thread_id", "on_run_completed", "end_time", "schedule", "timezone",
               "created_at", "updated_at", "payload", "user_id", "next_run_date", "metadata", "enabled")
RUN_STATUSES = ("pending", "running", "error", "success", "timeout", "interrupted")
# Static breakpoints: "*" (every node) or a list of node ids.
Breakpoints = Literal["*"] | list[str] | None


def _refused(what: str) -> AfterValidator:
    """A field the SDK sends whose meaning Chatter does not honour: refused when given, never ignored."""
    def check(value):
        if value is not None:
            raise ValueError(f"{what} is not supported")
        return value
    return AfterValidator(check)


class AssistantSearch(Body):
    metadata: dict[str, Any] | None = None
    graph_id: str | None = None
    name: str | None = None
    limit: int = Field(10, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)
    sort_by: Literal[ASSISTANT_SORT_FIELDS] | None = None
    sort_order: Literal["asc", "desc"] | None = None
    select: list[Literal[ASSISTANT_FIELDS]] | None = None  # the fields each assistant answered carries


class AssistantWrite(Body):
    """What an assistant's version says: created with it, or changed by a new version (None: kept)."""
    config: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    name: str | None = Field(None, max_length=255)
    description: str | None = None


class AssistantCreate(AssistantWrite):
    graph_id: str = Field(min_length=1, max_length=255)
    assistant_id: uuid.UUID | None = None
    if_exists: Literal["raise", "do_nothing"] | None = None


class AssistantUpdate(AssistantWrite):
    graph_id: str | None = Field(None, min_length=1, max_length=255)


class AssistantLatest(Body):
    version: int = Field(ge=1, le=2**31 - 1)  # a version number as the database holds one


class AssistantDelete(Body):
    """The query of DELETE assistants/<id>."""
    delete_threads: bool = False


class Versions(Body):
    metadata: dict[str, Any] | None = None
    limit: int = Field(10, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)


TTL_MAX_MINUTES = 10 * 366 * 24 * 60  # ten years


def _deletes_only(strategy: str) -> str:
    if strategy != "delete":
        raise ValueError(f"strategy {strategy} is not supported: a thread's checkpoints are its runs' record; use "
                         "strategy delete")
    return strategy


# A ttl's and threads.prune's strategy: "keep_latest" (older checkpoints pruned, the thread kept) is refused, as the
# stock server on PostgreSQL refuses it.
DeleteStrategy = Annotated[Literal["delete", "keep_latest"], AfterValidator(_deletes_only)]


class ThreadTtl(Body):
    """A thread's time to live as the SDK sends it ({"ttl": minutes, "strategy"}; a bare number of minutes is
    {"ttl": n, "strategy": "delete"}): the thread is deleted once it has passed. "keep_latest" (its older checkpoints
    pruned) is refused, as threads.prune's."""
    ttl: float = Field(gt=0, le=TTL_MAX_MINUTES, allow_inf_nan=False)
    strategy: DeleteStrategy = "delete"


def _ttl_minutes(value):
    """A bare number of minutes as the SDK's {"ttl": n, "strategy": "delete"} (a boolean is no number)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"ttl": value, "strategy": "delete"}
    return value


Ttl = Annotated[ThreadTtl | None, BeforeValidator(_ttl_minutes)]


class ThreadCreate(Body):
    thread_id: str | None = None
    metadata: dict[str, Any] | None = None
    if_exists: Literal["raise", "do_nothing"] | None = None
    supersteps: list | None = None
    ttl: Ttl = None


class ThreadUpdate(Body):
    metadata: dict[str, Any] = Field(default_factory=dict)
    ttl: Ttl = None


class ThreadPrune(Body):
    """client.threads.prune. "keep_latest" (old checkpoints pruned, the thread kept) is not honoured: a thread's
    history is its runs' record (each run's values are its own last checkpoint's)."""
    thread_ids: list[uuid.UUID] = Field(max_length=1000)
    strategy: DeleteStrategy = "delete"


class StateAt(Body):
    """POST threads/<id>/state/checkpoint: the state at a checkpoint."""
    checkpoint: dict[str, Any] = Field(default_factory=dict)
    subgraphs: bool = False


class StateUpdate(Body):
    values: Any = None
    as_node: str | None = None
    checkpoint: dict[str, Any] | None = None
    checkpoint_id: str | None = None


class History(Body):
    limit: int = Field(10, ge=1, le=1000)
    before: dict[str, Any] | str | None = None
    metadata: dict[str, Any] | None = None
    checkpoint: dict[str, Any] | None = None


class RunList(Body):
    """The query of GET threads/<id>/runs."""
    limit: int = Field(10, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)
    status: Literal[RUN_STATUSES] | None = None
    select: list[Literal[RUN_FIELDS]] | None = None


class ThreadSearch(Body):
    metadata: dict[str, Any] | None = None
    values: dict[str, Any] | None = None
    ids: list[str] | None = None
    status: Literal["idle", "busy", "interrupted", "error"] | None = None
    limit: int = Field(10, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)
    sort_by: Literal["thread_id", "status", "created_at", "updated_at"] | None = None
    sort_order: Literal["asc", "desc"] | None = None
    select: list[Literal[THREAD_FIELDS]] | None = None
    extract: Annotated[Any, _refused("extract (values picked by JSON path)")] = None


class RunCreate(Body):
    assistant_id: str
    input: Any = None
    metadata: dict[str, Any] | None = None
    config: RunConfig | None = None
    context: dict[str, Any] | None = None
    stream_mode: list[str] = Field(default_factory=lambda: ["values"])
    stream_subgraphs: bool = False  # a registered graph's subgraphs' parts too, under `<mode>|<namespace>`
    # What a run meets on a busy thread; `enqueue` (it waits its turn), as the stock server's default.
    multitask_strategy: Literal["reject", "enqueue", "interrupt", "rollback"] = "enqueue"
    # A run without a thread: "keep" runs it on a new thread that stays (its thread_id answered); "delete" (the
    # stock server's default) leaves no thread behind.
    on_completion: Literal["delete", "keep"] = "delete"
    if_not_exists: Literal["create", "reject"] = "reject"
    webhook: str | None = None  # POSTed the run when it ends (signed; agent_server.webhooks)
    after_seconds: int | None = Field(None, ge=0)  # a delayed run: pending until then, then run by a worker
    on_disconnect: Literal["cancel", "continue"] = "continue"  # a stream's client gone: cancel the run, or not
    command: dict | None = None  # {"resume": …}: answers the thread's run waiting for input
    checkpoint: dict | None = None  # {"checkpoint_id": …}: a fork from one of the thread's checkpoints
    checkpoint_id: str | None = None
    # Static breakpoints: node ids of the graph (or "*"); a Chatter graph's run honours them on a thread only.
    interrupt_before: Breakpoints = None
    interrupt_after: Breakpoints = None

    @field_validator("stream_mode", mode="before")
    @classmethod
    def _modes(cls, value):
        modes = [value] if isinstance(value, str) else value
        if not isinstance(modes, list) or not modes:
            raise ValueError("stream_mode is a mode or a list of modes")
        unknown = [mode for mode in modes if mode not in STREAM_MODES]
        if unknown:
            raise ValueError(f"unsupported stream modes {unknown}; supported: {list(STREAM_MODES)}")
        return modes

    def refused(self) -> list[str]:
        """What a run of a Chatter graph without a thread does not honour (on a thread, and a registered graph's
        anywhere, honour all): static breakpoints and the checkpoints stream mode (it keeps no thread's state)."""
        names = ("interrupt_before", "interrupt_after")
        refused = [name for name in names if getattr(self, name) not in (None, [], {})]
        return refused + (["stream_mode checkpoints"] if "checkpoints" in self.stream_mode else [])

    def fork_from(self) -> str | None:
        """The checkpoint a run forks from (`checkpoint_id`, or `checkpoint.checkpoint_id`), if any."""
        return self.checkpoint_id or (self.checkpoint or {}).get("checkpoint_id") or None


class BatchedRun(RunCreate):
    """A run of client.runs.create_batch: a background run, on its `thread_id` when it names one. A strategy that
    stops the thread's runs first (interrupt, rollback) would wait for them inside the batch's one transaction."""
    thread_id: uuid.UUID | None = None
    multitask_strategy: Literal["reject", "enqueue"] = "enqueue"


class RunBatch(RootModel[list[BatchedRun]]):
    root: list[BatchedRun] = Field(min_length=1, max_length=1000)


class CancelQuery(Body):
    """The query of POST threads/<id>/runs/<run>/cancel: `wait` for the run to end; `interrupt` it (it stays, ended
    `interrupted`) or `rollback` (it is taken out of the thread: gone from its runs, as if deleted)."""
    wait: bool = False
    action: Literal["interrupt", "rollback"] = "interrupt"


class RunsCancel(Body):
    """client.runs.cancel_many: the runs named (`run_ids`, of `thread_id` when given), or every run of the user's
    (of `thread_id`'s, when given) in `status` ("all": pending and running), as the stock server's RunsCancel."""
    thread_id: uuid.UUID | None = None
    run_ids: list[uuid.UUID] | None = Field(None, min_length=1, max_length=1000)
    status: Literal["pending", "running", "all"] | None = None

    @model_validator(mode="after")
    def _one_way(self):
        if (self.run_ids is None) == (self.status is None):
            raise ValueError("name the runs to cancel: run_ids (with their thread_id) or a status")
        return self


class CancelManyQuery(Body):
    """The query of POST /runs/cancel (as of a run's cancel, without `wait`)."""
    action: Literal["interrupt", "rollback"] = "interrupt"


class StoreItemPut(Body):
    namespace: list[str]
    key: str = Field(min_length=1, max_length=1024)
    value: dict[str, Any]
    index: Literal[False] | list[str] | None = None  # the JSON paths embedded; False: none; None: the index's fields
    ttl: Annotated[Any, _refused("ttl (a store item does not expire)")] = None


class StoreItemKey(Body):
    namespace: list[str]
    key: str = Field(min_length=1, max_length=1024)


class StoreItemGet(Body):
    """client.store.get_item's query: the namespace's labels joined by "." (`refresh_ttl`: items do not expire)."""

    namespace: str = ""
    key: str = Field(min_length=1, max_length=1024)

    def labels(self) -> list[str]:
        return [label for label in self.namespace.split(".") if label]


class StoreSearch(Body):
    namespace_prefix: list[str] = Field(default_factory=list)
    filter: dict[str, Any] | None = None
    limit: int = Field(10, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)
    query: str | None = None


class StoreNamespaces(Body):
    prefix: list[str] | None = None
    suffix: list[str] | None = None
    max_depth: int | None = Field(None, ge=1)
    limit: int = Field(100, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)


class CronCreate(Body):
    """client.crons.create / create_for_thread. The run's fields are those of a run; a cron's firings are
    background runs, so the streaming fields are accepted and have no effect."""

    assistant_id: str
    schedule: str
    input: Any = None
    metadata: dict[str, Any] | None = None
    config: RunConfig | None = None
    context: dict[str, Any] | None = None
    webhook: str | None = None
    multitask_strategy: Literal["reject", "enqueue", "interrupt", "rollback"] | None = None
    on_run_completed: Literal["delete", "keep"] | None = None
    end_time: datetime | None = None
    enabled: bool = True
    timezone: str | None = None
    # Not honoured on a cron (a scheduled run pauses only where its graph asks): refused, not ignored.
    interrupt_before: Any = None
    interrupt_after: Any = None

    def refused(self) -> list[str]:
        refused = [name for name in ("interrupt_before", "interrupt_after")
                   if getattr(self, name) not in (None, [], {})]
        if self.multitask_strategy not in (None, "reject"):
            refused.append(f"multitask_strategy {self.multitask_strategy} (a firing on a busy thread is skipped, "
                           "as reject does)")
        return refused


class CronUpdate(Body):
    """client.crons.update: only the fields sent change (end_time: null clears it)."""

    schedule: str | None = None
    end_time: datetime | None = None
    input: Any = None
    metadata: dict[str, Any] | None = None
    config: RunConfig | None = None
    context: dict[str, Any] | None = None
    webhook: str | None = None
    on_run_completed: Literal["delete", "keep"] | None = None
    enabled: bool | None = None
    timezone: str | None = None
    interrupt_before: Any = None
    interrupt_after: Any = None

    def refused(self) -> list[str]:
        return [name for name in ("interrupt_before", "interrupt_after") if getattr(self, name) not in (None, [], {})]


CRON_SORT_FIELDS = ("cron_id", "assistant_id", "thread_id", "created_at", "updated_at", "next_run_date", "end_time")


class CronSearch(Body):
    assistant_id: str | None = None
    thread_id: str | None = None
    enabled: bool | None = None
    metadata: dict[str, Any] | None = None
    limit: int = Field(10, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)
    sort_by: Literal[CRON_SORT_FIELDS] | None = None
    sort_order: Literal["asc", "desc"] | None = None
    select: list[Literal[CRON_FIELDS]] | None = None


class EventStreamFilter(Body):
    """What a thread event stream (the thread protocol, agent_server.protocol) sends: its channels (a named custom
    channel as `custom:<name>`), under which namespaces and how deep, after which seq."""

    channels: list[str] = Field(min_length=1)
    namespaces: list[list[str]] | None = None
    depth: int | None = Field(None, ge=0)
    since: int | None = Field(None, ge=0)

    @field_validator("channels")
    @classmethod
    def _known(cls, value):
        unknown = [c for c in value if c not in CHANNELS and not (c.startswith("custom:") and len(c) > 7)]
        if unknown:
            raise ValueError(f"unknown channels {unknown}; known: {list(CHANNELS)} and custom:<name>")
        return value
