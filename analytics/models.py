import re
import uuid
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from core.cache import RenewsHotReads
from core.models import MONEY, MONEY_SET, TokenTotals, non_negative


class TemplateAnalytics(TokenTotals):
    """A slot of a template's figures: the sums over the template's ended runs whose id picks it (`slot_of`). The
    template's figures are the sums over its slots, always equal to the sums over its ended runs (I2). A run adds
    to its slot in its ending transaction, so that concurrent runs of one template rarely wait on one row's lock."""

    SLOTS = 256

    template = models.ForeignKey("workflows.WorkflowTemplate", on_delete=models.CASCADE, related_name="analytics")
    slot = models.PositiveSmallIntegerField(default=0)
    total_executions = models.PositiveIntegerField(default=0)
    successful_executions = models.PositiveIntegerField(default=0)
    failed_executions = models.PositiveIntegerField(default=0)
    cancelled_executions = models.PositiveIntegerField(default=0)
    total_execution_time_ms = models.PositiveBigIntegerField(default=0)
    total_cost = models.DecimalField(**MONEY)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_failure_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "template analytics"
        constraints = [
            *TokenTotals.Meta.constraints,
            *non_negative("total_cost", model="template_analytics"),
            models.UniqueConstraint(fields=("template", "slot"), name="template_analytics_one_row_per_slot"),
            models.CheckConstraint(
                condition=models.Q(
                    total_executions=models.F("successful_executions")
                    + models.F("failed_executions")
                    + models.F("cancelled_executions")
                ),
                name="template_analytics_outcomes_sum",
            ),
        ]

    def __str__(self) -> str:
        return f"analytics of {self.template_id} (slot {self.slot})"

    @classmethod
    def slot_of(cls, execution_id) -> int:
        """The slot a run adds to: the low bits of its id (random in uuid4 and uuid7 alike)."""
        return execution_id.int % cls.SLOTS

    @property
    def average_execution_time_ms(self) -> float | None:
        if not self.total_executions:
            return None
        return self.total_execution_time_ms / self.total_executions


def validate_pattern(value: str) -> None:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValidationError(f"not a valid regular expression: {exc}") from None


class ModelPrice(models.Model):
    """USD per million tokens. `provider` "*" is a wildcard; the pattern must match the whole model name.

    A row of provider TOOLS ("mcp") prices MCP tool calls instead: USD `per_call`, its pattern matching the whole
    qualified name `<server>__<tool>` (`tracker__.*` a whole server, `tracker__search` one tool); its token prices
    are 0. Dated and re-priced like model rows; a wildcard row never prices a tool."""

    WILDCARD = "*"
    TOOLS = "mcp"

    provider = models.CharField(max_length=64)
    model_pattern = models.CharField(max_length=255, validators=[validate_pattern])
    input_per_million = models.DecimalField(**MONEY_SET)
    cached_input_per_million = models.DecimalField(**MONEY_SET, null=True, blank=True)
    output_per_million = models.DecimalField(**MONEY_SET)
    per_call = models.DecimalField(**MONEY_SET, null=True, blank=True)  # a TOOLS row's price
    effective_from = models.DateTimeField()
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = RenewsHotReads.as_manager()  # (a bare update renews the processes' memo of prices: core.cache)

    class Meta:
        ordering = ["provider", "model_pattern", "-effective_from"]
        constraints = [
            *non_negative("input_per_million", "output_per_million", "cached_input_per_million", "per_call",
                          model="model_price"),
        ]

    def __str__(self) -> str:
        return f"{self.provider}/{self.model_pattern} from {self.effective_from:%Y-%m-%d}"

    def matches(self, provider: str, model: str) -> bool:
        return self.row_matches(self, provider, model)

    @classmethod
    def row_matches(cls, row, provider: str, model: str) -> bool:
        """Whether `row` (an instance, or the memo's frozen row of one: core.cache.Row) prices `model` of
        `provider`."""
        allowed = (provider,) if provider == cls.TOOLS else (provider, cls.WILDCARD)  # a tool: tool rows only
        if row.provider not in allowed:
            return False
        return re.fullmatch(row.model_pattern, model) is not None or re.fullmatch(
            row.model_pattern, f"{provider}/{model}"
        ) is not None

    @property
    def cached_price(self) -> Decimal:
        return self.input_per_million if self.cached_input_per_million is None else self.cached_input_per_million


class UsageRollup(TokenTotals):
    """Usage counters per (UTC day, owner, provider, model, template, conversation), kept exact in the
    transactions that write their source rows (like I1), so the usage reports never scan raw rows.

    What a row counts, so that it can be recomputed from the source rows (analytics.selectors.usage_from_source):
    - a run, once, when it ends (the execution_finished signal): `executions` and one of completed/failed/
      cancelled_executions on the key (day of completed_at, owner, the run's provider/model, template,
      conversation);
    - every LLM call of an ended run, on its own provider/model but the run's day, owner, template and
      conversation: `llm_calls`, the five token fields and `cost`. Tokens and money are what was spent: deleting a
      message takes nothing away from them (runs are the ledger);
    - every message that exists: `messages`, on (day of created_at, conversation owner, provider_used, model_used,
      the template of its run, conversation). A message of no run counts as it is saved (the message_saved
      signal); a run's messages (its user message and reply) count when the run ends, with its LLM calls, so a
      run in progress is not in the rollups at all. A deleted message is taken out again.
    When a conversation or template is deleted, its rows move to the null conversation/template (its runs stay,
    with the reference set null); messages that go with a conversation leave its count.

    Runs of no conversation (gateway calls, a template's runs through the API) book on one of SLOTS rows of their
    dimensions, picked by the run's id (`slot_of`) and told apart by the key alone: concurrent calls of one key
    would otherwise all update one row, whose lock each holds to its commit, and take turns there (B8: half the
    two server processes' time idle). A figure is the sum over the rows of its dimensions, as every reader sums.
    A conversation's runs take turns on the conversation anyway: one row each.
    """

    SLOTS = 16

    key = models.UUIDField(unique=True, editable=False)
    day = models.DateField()
    # No database constraints on these three: a row is written late in transactions that do not hold its parents'
    # row locks, and the commit-time key check (FOR KEY SHARE on the user, conversation or template row) would wait
    # on a writer holding that row FOR UPDATE (the per-user run limit, a conversation's turn) while that writer waits
    # on this transaction: a deadlock. The ORM cascades the owner's deletion; analytics.receivers moves the rows of
    # a deleted template or conversation to the null key (DO_NOTHING); reconcile_aggregates checks them all.
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+",
                              db_constraint=False, db_index=False)
    provider = models.CharField(max_length=64, blank=True, default="")
    model = models.CharField(max_length=255, blank=True, default="")
    template = models.ForeignKey("workflows.WorkflowTemplate", null=True, blank=True, on_delete=models.DO_NOTHING,
                                 related_name="+", db_constraint=False)
    conversation = models.ForeignKey("conversations.Conversation", null=True, blank=True, db_index=False,
                                     on_delete=models.DO_NOTHING, related_name="+", db_constraint=False)
    # The API key the runs were started with (null: a session, a schedule, a command; messages of no run).
    api_key = models.ForeignKey("keys.ApiToken", null=True, blank=True, db_index=False,
                                on_delete=models.DO_NOTHING, related_name="+", db_constraint=False)
    executions = models.PositiveIntegerField(default=0)
    completed_executions = models.PositiveIntegerField(default=0)
    failed_executions = models.PositiveIntegerField(default=0)
    cancelled_executions = models.PositiveIntegerField(default=0)
    messages = models.PositiveIntegerField(default=0)
    llm_calls = models.PositiveIntegerField(default=0)
    cached_prompt_tokens = models.PositiveBigIntegerField(default=0)
    reasoning_tokens = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(**MONEY)

    COUNTERS = ("executions", "completed_executions", "failed_executions", "cancelled_executions", "messages",
                "llm_calls", "prompt_tokens", "completion_tokens", "total_tokens", "cached_prompt_tokens",
                "reasoning_tokens", "cost")
    DIMENSIONS = ("day", "owner_id", "provider", "model", "template_id", "conversation_id", "api_key_id")

    class Meta:
        verbose_name_plural = "usage dashboard"  # the admin shows these rows as the staff dashboard
        ordering = ["-day", "owner", "provider", "model"]
        indexes = [
            models.Index(fields=["owner", "day"], name="usage_rollup_owner_day"),
            models.Index(fields=["day"], name="usage_rollup_day"),
            # Ranks conversations by cost with an index-only scan (and serves the foreign key's lookups).
            models.Index(fields=["conversation", "day", "owner", "cost"], name="usage_rollup_conversation_cost"),
        ]
        constraints = [
            *TokenTotals.Meta.constraints,
            *non_negative("cost", model="usage_rollup"),
            models.CheckConstraint(condition=models.Q(cached_prompt_tokens__lte=models.F("prompt_tokens")),
                                   name="usage_rollup_cached_within_prompt"),
            models.CheckConstraint(condition=models.Q(reasoning_tokens__lte=models.F("completion_tokens")),
                                   name="usage_rollup_reasoning_within_completion"),
            models.CheckConstraint(
                condition=models.Q(executions=models.F("completed_executions") + models.F("failed_executions")
                                   + models.F("cancelled_executions")),
                name="usage_rollup_outcomes_sum",
            ),
        ]

    def __str__(self) -> str:
        return f"usage {self.day} {self.provider}/{self.model}"

    @staticmethod
    def key_for(day, owner_id, provider, model, template_id, conversation_id, api_key_id=None,
                slot: int = 0) -> uuid.UUID:
        """The row's identity, derived from its dimensions and slot: one unique column that upserts can conflict on
        (a unique constraint over nullable columns would let NULLs repeat). Without an API key and in slot 0 it is
        what it was before keys and slots were, so older rows keep their identity."""
        parts = (day.isoformat(), str(owner_id), provider, model, str(template_id or ""), str(conversation_id or ""),
                 *((str(api_key_id),) if api_key_id is not None else ()), *((f"slot {slot}",) if slot else ()))
        return uuid.uuid5(_USAGE_KEY_NAMESPACE, "\x1f".join(parts))

    @classmethod
    def slot_of(cls, execution) -> int:
        """The row of its dimensions a run books on: 0 in a conversation, else the low bits of its id."""
        return 0 if execution.conversation_id is not None else execution.pk.int % cls.SLOTS


_USAGE_KEY_NAMESPACE = uuid.UUID("6f3d1c2e-8a4b-4f0e-9c7d-2b5a1e3f4d60")
