import uuid

from django.conf import settings
from django.db import models
from django.utils.functional import cached_property

from core.cache import RenewsHotReads
from core.models import MONEY, TokenTotals, non_negative


class WorkflowTemplate(models.Model):
    """A key names one template for a user: their own, else the built-in or public one. Keys are unique per
    owner and among shared (built-in and public) templates, so a private key says nothing to anyone else."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    key = models.SlugField(max_length=100)
    name = models.CharField(max_length=255)
    description = models.TextField(blank=True, default="")
    category = models.CharField(max_length=64, blank=True, default="general")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="workflow_templates"
    )
    is_builtin = models.BooleanField(default=False)
    is_public = models.BooleanField(default=False)
    params = models.JSONField(default=dict, blank=True)
    graph = models.JSONField(default=dict)
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = RenewsHotReads.as_manager()  # (a bare update renews the processes' memo of templates: core.cache)

    class Meta:
        ordering = ["key"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(is_builtin=False) | models.Q(owner__isnull=True), name="builtin_template_has_no_owner"
            ),
            models.UniqueConstraint(fields=["owner", "key"], name="template_key_unique_per_owner"),
            models.UniqueConstraint(fields=["key"], condition=models.Q(is_public=True) | models.Q(owner__isnull=True),
                                    name="template_key_unique_among_shared"),
        ]

    def __str__(self) -> str:
        return self.key


class WorkflowDefinition(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="workflow_definitions")
    name = models.CharField(max_length=255)
    description = models.TextField(blank=True, default="")
    nodes = models.JSONField(default=list)
    edges = models.JSONField(default=list)
    metadata = models.JSONField(default=dict, blank=True)
    template = models.ForeignKey(
        WorkflowTemplate, null=True, blank=True, on_delete=models.SET_NULL, related_name="definitions"
    )
    version = models.PositiveIntegerField(default=1)
    is_public = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return self.name


class WorkflowExecution(TokenTotals):
    class Type(models.TextChoices):
        CHAT = "chat"
        TEMPLATE = "template"
        DEFINITION = "definition"
        CUSTOM = "custom"
        GATEWAY = "gateway"  # a call of the OpenAI-compatible gateway (/v1/chat/completions)

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        WAITING = "waiting"  # paused at a human_input node: no thread, connection or slot until it is answered
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELLED = "cancelled"

    class Mode(models.TextChoices):
        SYNC = "sync"
        STREAM = "stream"
        BACKGROUND = "background"
        SCHEDULED = "scheduled"

    TERMINAL = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # no index of its own: the (owner, -created_at) index leads with it
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="workflow_executions",
                              db_index=False)
    workflow_type = models.CharField(max_length=16, choices=Type.choices)
    template = models.ForeignKey(
        WorkflowTemplate, null=True, blank=True, on_delete=models.SET_NULL, related_name="executions"
    )
    definition = models.ForeignKey(
        WorkflowDefinition, null=True, blank=True, on_delete=models.SET_NULL, related_name="executions"
    )
    definition_version = models.PositiveIntegerField(null=True, blank=True)
    conversation = models.ForeignKey(
        "conversations.Conversation", null=True, blank=True, on_delete=models.SET_NULL, related_name="executions"
    )
    schedule = models.ForeignKey(
        "workflows.WorkflowSchedule", null=True, blank=True, on_delete=models.SET_NULL, related_name="executions"
    )
    # The API key the run was started with (None: a session, a schedule, a command): spend by key, key budgets.
    api_key = models.ForeignKey(
        "keys.ApiToken", null=True, blank=True, on_delete=models.SET_NULL, related_name="executions"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.SYNC)
    provider = models.CharField(max_length=64, blank=True, default="")
    model = models.CharField(max_length=255, blank=True, default="")
    config = models.JSONField(default=dict, blank=True)
    graph = models.JSONField(default=dict, blank=True)
    input_data = models.JSONField(default=dict, blank=True)
    output_data = models.JSONField(default=dict, blank=True)
    error_type = models.CharField(max_length=64, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    execution_time_ms = models.PositiveIntegerField(null=True, blank=True)
    cost = models.DecimalField(**MONEY)
    llm_calls = models.PositiveIntegerField(default=0)
    tool_calls = models.PositiveIntegerField(default=0)
    correlation_id = models.CharField(max_length=64, blank=True, default="")
    # With tracing on (core.tracing): the W3C trace the run belongs to (its caller's, or one begun as it was
    # created) and the context its spans are children of (traceparent, tracestate), kept for whoever runs it.
    trace_id = models.CharField(max_length=32, blank=True, default="")
    trace_context = models.JSONField(default=dict, blank=True)
    cancel_requested = models.BooleanField(default=False)
    # Refreshed every few seconds by the process running the run; the recovery sweep ends running runs
    # whose heartbeat stopped (their worker died).
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # When a recovery sweep first found its heartbeat silent (the next beat clears it): a later sweep takes the run
    # over only once it has stayed silent long enough after this (services.recovery), so a live worker that could
    # not write its beats (the database down) is not taken for a dead one.
    silent_since = models.DateTimeField(null=True, blank=True)
    # What the model call in flight has streamed so far ({"call", "text", "tool_call_text"}), carried by the
    # heartbeat: with the prompt estimate its node row holds, what the sweep records of a call whose process died.
    stream_progress = models.JSONField(default=dict, blank=True)
    # What the run holds of each budget it falls under (budgets.services: the period, what it reserved), written
    # with the run and with each top-up: whoever ends the run settles exactly that.
    budget_holds = models.JSONField(default=list, blank=True)
    # A waiting run unanswered by then ends as its human_input node's on_timeout says (the recovery sweep).
    waiting_until = models.DateTimeField(null=True, blank=True)
    # Times the sweep queued the run again to go on from its last checkpoint after its worker died.
    resume_attempts = models.PositiveSmallIntegerField(default=0)
    # A fork (time travel): the run and the checkpoint of its graph it went on from, with accounting of its own.
    forked_from = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="forks")
    forked_from_checkpoint = models.CharField(max_length=64, blank=True, default="")
    # When the run ends, it is POSTed here (signed; webhooks app). Set only by callers that ask for it (/langgraph/
    # runs and crons): a run without one costs nothing more when it ends.
    webhook = models.URLField(max_length=500, blank=True, default="")
    # A delayed run (LangGraph's after_seconds): pending, not to start before this; django-q2 starts it then, and
    # the recovery sweep counts its deadlines from this instead of created_at. A run answered in background mode
    # (workflows.services.waiting) is pending again from its answer: its run_after is then.
    run_after = models.DateTimeField(null=True, blank=True)
    # The stored prompt version its model nodes were given (the first one fetched; a split's draw for this run or
    # its conversation): what per-version analytics group runs by. Each LLM call names its own (LLMCall).
    prompt_version = models.ForeignKey("prompts.PromptVersion", null=True, blank=True, on_delete=models.SET_NULL,
                                       related_name="executions")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["owner", "-created_at"]),
            models.Index(fields=["status", "created_at"]),
            # A user's runs in progress (their limit, CHATTER_MAX_CONCURRENT_RUNS, is counted on every start):
            # only the few pending or running rows, however many runs the user ever had.
            models.Index(fields=["owner"], condition=models.Q(status__in=["pending", "running"]),
                         name="execution_owner_in_progress"),
        ]
        constraints = [*TokenTotals.Meta.constraints, *non_negative("cost", model="execution")]

    def __str__(self) -> str:
        return f"{self.workflow_type} {self.id} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    @cached_property
    def turn_messages(self) -> list:
        """The run's messages, oldest first ([user, assistant] for a chat turn). The runner sets them as it ends
        the run, so answering with them reads nothing back."""
        return list(self.messages.order_by("sequence"))


# The statuses of a run that has not ended: it still writes to its conversation (a waiting one when answered).
RUN_IN_PROGRESS = (WorkflowExecution.Status.PENDING, WorkflowExecution.Status.RUNNING,
                   WorkflowExecution.Status.WAITING)


class NodeExecution(TokenTotals):
    class Status(models.TextChoices):
        RUNNING = "running"
        COMPLETED = "completed"
        FAILED = "failed"
        SKIPPED = "skipped"

    # no index of its own: the unique (execution, index) leads with it
    execution = models.ForeignKey(WorkflowExecution, on_delete=models.CASCADE, related_name="node_executions",
                                  db_index=False)
    index = models.PositiveIntegerField()
    node_id = models.CharField(max_length=100)
    node_type = models.CharField(max_length=32)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    started_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    cost = models.DecimalField(**MONEY)
    llm_calls = models.PositiveIntegerField(default=0)
    tool_calls = models.PositiveIntegerField(default=0)
    error_message = models.TextField(blank=True, default="")
    output = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["execution", "index"]
        constraints = [
            *TokenTotals.Meta.constraints,
            models.UniqueConstraint(fields=["execution", "index"], name="node_execution_index_unique"),
            *non_negative("cost", model="node_execution"),
        ]

    def __str__(self) -> str:
        return f"{self.node_id} #{self.index}"


class ToolCall(models.Model):
    execution = models.ForeignKey(WorkflowExecution, on_delete=models.CASCADE, related_name="tool_call_rows")
    node_id = models.CharField(max_length=100)
    tool = models.CharField(max_length=100)  # a built-in's name, or an MCP tool's `<server>__<tool>`
    # The MCP server asked (null for a built-in, and once the server is deleted: `tool` still names it).
    server = models.ForeignKey("tools.McpServer", null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="tool_calls")
    # The MCP server asked, kept once it is deleted (`server` is null then): its calls stay its own in the tool
    # analytics by server, never the built-ins'. Null for a built-in (and a tool of no registered server).
    server_ref = models.UUIDField(null=True, blank=True)
    arguments = models.JSONField(default=dict, blank=True)
    result = models.TextField(blank=True, default="")
    ok = models.BooleanField(default=True)
    error = models.TextField(blank=True, default="")
    duration_ms = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(**MONEY)  # its price per call (analytics.ModelPrice, provider "mcp") when it answered
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["execution", "id"]

    def __str__(self) -> str:
        return f"{self.tool} ({'ok' if self.ok else 'error'})"


class ExecutionEvent(models.Model):
    # no index of its own: the unique (execution, seq) leads with it
    execution = models.ForeignKey(WorkflowExecution, on_delete=models.CASCADE, related_name="events", db_index=False)
    seq = models.PositiveIntegerField()
    event = models.CharField(max_length=32)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["execution", "seq"]
        constraints = [models.UniqueConstraint(fields=["execution", "seq"], name="execution_event_seq_unique")]
        indexes = [models.Index(fields=["created_at"])]

    def __str__(self) -> str:
        return f"{self.event} #{self.seq}"


class WorkflowSchedule(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="workflow_schedules")
    name = models.CharField(max_length=255)
    template = models.ForeignKey(
        WorkflowTemplate, null=True, blank=True, on_delete=models.CASCADE, related_name="schedules"
    )
    definition = models.ForeignKey(
        WorkflowDefinition, null=True, blank=True, on_delete=models.CASCADE, related_name="schedules"
    )
    # Or a raw graph (a registered Python graph's, run as it is: agent_server's crons of such assistants).
    graph = models.JSONField(null=True, blank=True)
    input = models.JSONField(default=dict, blank=True)
    config = models.JSONField(default=dict, blank=True)
    cron = models.CharField(max_length=100)
    timezone = models.CharField(max_length=64, default="UTC")
    enabled = models.BooleanField(default=True)
    next_run_at = models.DateTimeField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_execution = models.ForeignKey(
        WorkflowExecution, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # `chat`: each run is a chat turn (input.message is the user's), in `conversation` (a LangGraph thread cron:
    # deleting the thread deletes the cron) or, without one, in a new conversation each time.
    chat = models.BooleanField(default=False)
    conversation = models.ForeignKey("conversations.Conversation", null=True, blank=True, on_delete=models.CASCADE,
                                     related_name="schedules")
    webhook = models.URLField(max_length=500, blank=True, default="")  # each run's end is POSTed here
    ends_at = models.DateTimeField(null=True, blank=True)  # no run starts from then on
    # Why the last tick started no run ("" when it did): its refusal's code and message, and when.
    last_error = models.TextField(blank=True, default="")
    last_error_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(template__isnull=True, definition__isnull=False, graph__isnull=True)
                | models.Q(template__isnull=False, definition__isnull=True, graph__isnull=True)
                | models.Q(template__isnull=True, definition__isnull=True, graph__isnull=False),
                name="schedule_runs_one_source",
            )
        ]

    def __str__(self) -> str:
        return self.name


class LLMCall(TokenTotals):
    """The ledger: one row per LLM call, the source every usage aggregate sums up (and re-pricing reads)."""

    class Kind(models.TextChoices):
        CHAT = "chat"  # a chat model's call
        EMBEDDING = "embedding"  # an embeddings API call: tokens read, none completed
        RERANK = "rerank"  # a rerank API call (documents scored against a query): tokens read, none completed

    execution = models.ForeignKey(WorkflowExecution, on_delete=models.CASCADE, related_name="llm_call_rows")
    node_execution = models.ForeignKey(
        NodeExecution, null=True, blank=True, on_delete=models.CASCADE, related_name="llm_call_rows"
    )
    provider = models.CharField(max_length=64)
    # What the server reported (a llama.cpp server without --alias reports its model file's path) ...
    model = models.CharField(max_length=255)
    # ... and what the run asked for: the model the call is priced by, at run time and when re-priced.
    requested_model = models.CharField(max_length=255)
    cached_prompt_tokens = models.PositiveBigIntegerField(default=0)
    reasoning_tokens = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(**MONEY)
    provider_cost = models.BooleanField(default=False)
    estimated = models.BooleanField(default=False)
    # No price was in force for the requested model: the cost is not ours to know (kept, never zeroed by
    # re-pricing), and recompute_costs reports the call until a price covers it.
    unpriced = models.BooleanField(default=False)
    usage_raw = models.JSONField(default=dict, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    # The deployment of the deployments file that served it (`model name/deployment name`), "" when not routed.
    deployment = models.CharField(max_length=400, blank=True, default="")
    # The stored prompt version the call sent (its model node's `prompt`), null for an inline prompt.
    prompt_version = models.ForeignKey("prompts.PromptVersion", null=True, blank=True, on_delete=models.SET_NULL,
                                       related_name="llm_calls")
    created_at = models.DateTimeField()
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.CHAT)

    class Meta:
        ordering = ["execution", "id"]
        indexes = [
            models.Index(fields=["created_at"]),
            # Spend per deployment (the usage dashboard): the routed calls only, so other calls pay nothing for it.
            models.Index(fields=["deployment", "created_at"], condition=~models.Q(deployment=""),
                         name="llm_call_deployment_routed"),
        ]
        constraints = [*TokenTotals.Meta.constraints, *non_negative("cost", model="llm_call")]

    def __str__(self) -> str:
        return f"{self.provider}/{self.model} ({self.total_tokens} tokens)"


class ProviderAttempt(models.Model):
    """One try of a routed model call on one deployment (engine.routing): the one that answered, and each
    that failed before it, with why. Usage is the call's (LLMCall, whose `deployment` is the one that served it): an
    attempt that failed and was retried had no answer, so nothing to bill."""

    execution = models.ForeignKey(WorkflowExecution, on_delete=models.CASCADE, related_name="provider_attempts")
    node_execution = models.ForeignKey(
        NodeExecution, null=True, blank=True, on_delete=models.CASCADE, related_name="provider_attempts"
    )
    deployment = models.CharField(max_length=400)  # `model name/deployment name`
    model = models.CharField(max_length=255)  # the model name tried (a fallback's after a fallback)
    provider = models.CharField(max_length=64)  # how the deployment is called
    ok = models.BooleanField()
    error_type = models.CharField(max_length=64, blank=True, default="")
    error = models.TextField(blank=True, default="")
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    cooldown_s = models.FloatField(null=True, blank=True)  # kept out of every process's choice this long after
    duration_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["execution", "id"]
        indexes = [models.Index(fields=["created_at"])]

    def __str__(self) -> str:
        return f"{self.deployment} ({'ok' if self.ok else self.error_type or 'failed'})"


class Checkpoint(models.Model):
    """LangGraph's checkpoints of a run, on the project's database (workflows.checkpointer): two kinds of row in
    one table, so that a run writes its checkpoints with one statement per write (docs/architecture.md#the-run-path).
    A `checkpoint` row is one snapshot of the graph's state (`blob`: the serialized Checkpoint, `metadata`: its step,
    source and parents); a `write` row is one pending write of a task against that snapshot (`channel`, `blob`: the
    value)."""

    class Kind(models.TextChoices):
        CHECKPOINT = "checkpoint"
        WRITE = "write"

    # The run whose graph made it (none for a checkpoint saved outside a run); its thread is the run's own.
    execution = models.ForeignKey(WorkflowExecution, null=True, blank=True, on_delete=models.CASCADE,
                                  related_name="checkpoints")
    thread_id = models.CharField(max_length=255)
    checkpoint_ns = models.CharField(max_length=255, blank=True, default="")
    checkpoint_id = models.CharField(max_length=64)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    task_id = models.CharField(max_length=255, blank=True, default="")  # a write's task ("" for a checkpoint)
    idx = models.IntegerField(default=0)  # a write's index within its task (LangGraph's special writes: < 0)
    task_path = models.CharField(max_length=1024, blank=True, default="")
    channel = models.CharField(max_length=255, blank=True, default="")
    parent_checkpoint_id = models.CharField(max_length=64, blank=True, default="")
    type = models.CharField(max_length=64, blank=True, default="")  # the serializer's name for `blob`
    blob = models.BinaryField()
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(
            fields=["thread_id", "checkpoint_ns", "checkpoint_id", "kind", "task_id", "idx"],
            name="checkpoint_row_unique")]
        indexes = [models.Index(fields=["created_at"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.thread_id}/{self.checkpoint_id}"
