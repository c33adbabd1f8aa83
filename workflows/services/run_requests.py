"""What each entry point asks to run: one frozen request type per entry point, with the fields that entry point
has. workflows.services.runs.run_plan turns any of them into the one RunPlan (validating it); the run services
(execution_create, execution_run_now, execution_start_streamed) take one.

What an entry point does not have reads as RunRequest's default (no template, no webhook, ...), so run_plan asks
every request the same questions."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from workflows.models import WorkflowExecution

Mode = WorkflowExecution.Mode


class RunRequest:
    """The questions run_plan asks of a request, answered for the entry points that have no such field."""

    owner: Any
    mode: str = Mode.SYNC
    # what to run: exactly one of a template (key or id), a definition, a graph (or a checkpoint to fork from)
    template: str | None = None
    definition_id: Any = None
    graph: dict | None = None
    from_checkpoint: str | None = None
    message: str | None = None
    variables: dict | None = None
    messages: list | None = None  # the gateway's input messages (OpenAI-shaped), instead of `message` alone
    conversation_id: Any = None
    config: dict | None = None
    api_key: Any = None  # the ApiToken the request authenticated with
    webhook: str = ""  # POSTed the run when it ends (webhooks app)
    # Rows of the caller's own about the run (e.g. agent_server's AgentRun), written in the run's creating
    # transaction, so they exist before it can end: called with the execution once its row is inserted.
    on_written: Callable[[WorkflowExecution], None] | None = None
    # A run as the Agent Server API asks for it (kept in its input): a registered graph's input as given
    # (graph_input), the config's configurable keys and context it runs with, its static breakpoints; a graph's
    # run on a thread that keeps its state (on_thread), and the thread's checkpoint it goes on from (checkpoint_id).
    graph_request: dict | None = None
    after_seconds: int | None = None  # a background run that starts that late
    prices_read: dict | None = None  # prices the caller has just read, by (provider, model) (runs.models_check)
    schedule: Any = None
    chat: bool = False  # a chat turn: a message in a conversation (a new one when none is given)
    gateway: ClassVar[bool] = False  # a call of the OpenAI-compatible gateway


@dataclass(frozen=True, kw_only=True)
class ChatRequest(RunRequest):
    """POST /api/v1/chat/, the `chat` command: a turn of a conversation, of `universal_chat` unless a template or a
    definition is named."""

    owner: Any
    message: str
    mode: str = Mode.SYNC
    conversation_id: Any = None
    template: str | None = None
    definition_id: Any = None
    config: dict | None = None
    api_key: Any = None
    chat: ClassVar[bool] = True


@dataclass(frozen=True, kw_only=True)
class ExecutionRequest(RunRequest):
    """POST /api/v1/executions/, the `run_workflow` command: any run, of exactly one of a template, a definition,
    a graph, or a fork of a checkpoint (time travel)."""

    owner: Any
    mode: str = Mode.SYNC
    template: str | None = None
    definition_id: Any = None
    graph: dict | None = None
    from_checkpoint: str | None = None
    message: str | None = None
    variables: dict | None = None
    conversation_id: Any = None
    config: dict | None = None
    api_key: Any = None


@dataclass(frozen=True, kw_only=True)
class GatewayRequest(RunRequest):
    """A call of the OpenAI-compatible gateway: its graph given, its `messages` the input (`message`, the last user
    message's text, is what a conversation it is appended to keeps), or `variables` (embeddings). Run now or
    streamed: its mode is the service's."""

    owner: Any
    api_key: Any
    graph: dict
    config: dict
    messages: list | None = None
    message: str | None = None
    variables: dict | None = None
    conversation_id: Any = None
    prices_read: dict | None = None
    on_written: Callable[[WorkflowExecution], None] | None = None  # (the pass-through's start: gateway.passthrough)
    gateway: ClassVar[bool] = True


@dataclass(frozen=True, kw_only=True)
class AgentRunRequest(RunRequest):
    """A run of the Agent Server API (agent_server.runs): an assistant's graph, on a thread or without one."""

    owner: Any
    mode: str = Mode.SYNC
    template: str | None = None
    definition_id: Any = None
    graph: dict | None = None
    from_checkpoint: str | None = None
    message: str | None = None
    conversation_id: Any = None
    chat: bool = False
    config: dict | None = None
    api_key: Any = None
    webhook: str = ""
    on_written: Callable[[WorkflowExecution], None] | None = None
    graph_request: dict | None = None
    after_seconds: int | None = None


@dataclass(frozen=True, kw_only=True)
class ScheduledRequest(RunRequest):
    """A schedule's tick (workflows.services.schedules): the run its row describes."""

    schedule: Any
    mode: ClassVar[str] = Mode.SCHEDULED

    @property
    def owner(self):
        return self.schedule.owner

    @property
    def template(self) -> str | None:
        # By id: the template the schedule was made on, never another its owner now sees under that key.
        return str(self.schedule.template_id) if self.schedule.template_id else None

    @property
    def definition_id(self):
        return self.schedule.definition_id

    @property
    def graph(self) -> dict | None:
        return self.schedule.graph

    @property
    def message(self) -> str | None:
        return self.schedule.input.get("message")

    @property
    def variables(self) -> dict | None:
        return self.schedule.input.get("variables")

    @property
    def graph_request(self) -> dict | None:
        return self.schedule.input.get("graph_request")

    @property
    def config(self) -> dict:
        return self.schedule.config

    @property
    def chat(self) -> bool:
        return self.schedule.chat

    @property
    def conversation_id(self):
        return self.schedule.conversation_id

    @property
    def webhook(self) -> str:
        return self.schedule.webhook


@dataclass(frozen=True, kw_only=True)
class ExperimentRequest(RunRequest):
    """A target's or an LLM judge's run over a dataset's item (experiments.services): a template, a definition or a
    graph, with the item's input. Always run now."""

    owner: Any
    template: str | None = None
    definition_id: Any = None
    graph: dict | None = None
    message: str | None = None
    variables: dict | None = None
    config: dict | None = None
