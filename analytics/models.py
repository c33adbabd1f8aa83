import re
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import models

from chatter_project.models import MONEY, TokenTotals, non_negative


class TemplateAnalytics(TokenTotals):
    """Per-template counters, always equal to the sums over the template's terminal executions (I2)."""

    template = models.OneToOneField("workflows.WorkflowTemplate", on_delete=models.CASCADE, related_name="analytics")
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
        return f"analytics of {self.template_id}"

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
    """USD per million tokens. `provider` "*" is a wildcard; the pattern must match the whole model name."""

    WILDCARD = "*"

    provider = models.CharField(max_length=64)
    model_pattern = models.CharField(max_length=255, validators=[validate_pattern])
    input_per_million = models.DecimalField(max_digits=20, decimal_places=8)
    cached_input_per_million = models.DecimalField(max_digits=20, decimal_places=8, null=True, blank=True)
    output_per_million = models.DecimalField(max_digits=20, decimal_places=8)
    effective_from = models.DateTimeField()
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["provider", "model_pattern", "-effective_from"]
        constraints = [
            *non_negative("input_per_million", "output_per_million", "cached_input_per_million", model="model_price"),
        ]

    def __str__(self) -> str:
        return f"{self.provider}/{self.model_pattern} from {self.effective_from:%Y-%m-%d}"

    def matches(self, provider: str, model: str) -> bool:
        if self.provider not in (provider, self.WILDCARD):
            return False
        return re.fullmatch(self.model_pattern, model) is not None or re.fullmatch(
            self.model_pattern, f"{provider}/{model}"
        ) is not None

    @property
    def cached_price(self) -> Decimal:
        return self.input_per_million if self.cached_input_per_million is None else self.cached_input_per_million
