"""Budgets as the API (and the admin's form) read and write them."""
from __future__ import annotations

from rest_framework import serializers

from budgets.models import ONE_LIMIT, Budget
from budgets.services import budget_time_zone_error
from core.api.serializers import StrictSerializer, money_field
from core.errors import InvalidInput
from core.models import BIGINT_MAX
from core.money import usd
from core.time_zones import time_zone_known
from webhooks.services import webhook_url_check


class BudgetSerializer(serializers.ModelSerializer):
    webhook_url = serializers.CharField(read_only=True, help_text="empty: no webhook")
    timezone_error = serializers.SerializerMethodField(help_text="null, or what is wrong with the stored time zone")
    period_start = serializers.SerializerMethodField()
    spent_usd = serializers.SerializerMethodField()
    spent_tokens = serializers.SerializerMethodField()
    reserved_usd = serializers.SerializerMethodField()
    reserved_tokens = serializers.SerializerMethodField()

    class Meta:
        model = Budget
        fields = ("id", "name", "scope", "target_id", "period", "timezone", "timezone_error", "limit_usd",
                  "limit_tokens", "mode", "thresholds", "webhook_url", "is_active", "created_at", "period_start",
                  "spent_usd", "spent_tokens", "reserved_usd", "reserved_tokens")
        read_only_fields = fields

    def _current(self, budget):
        """The budget's current period (budgets_current, read for the whole page at once)."""
        return self.context["current"][budget.pk]

    def get_timezone_error(self, budget) -> str | None:
        return budget_time_zone_error(budget)

    def get_period_start(self, budget) -> str:
        return self._current(budget).starts_at.isoformat()

    def get_spent_usd(self, budget) -> str:
        return usd(self._current(budget).spent_usd)

    def get_spent_tokens(self, budget) -> int:
        return self._current(budget).spent_tokens

    def get_reserved_usd(self, budget) -> str:
        return usd(self._current(budget).reserved_usd)

    def get_reserved_tokens(self, budget) -> int:
        return self._current(budget).reserved_tokens


class BudgetCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=100, required=False, default="")
    scope = serializers.ChoiceField(choices=Budget.Scope.choices)
    target_id = serializers.CharField(max_length=64, required=False, allow_null=True, allow_blank=True)
    period = serializers.ChoiceField(choices=Budget.Period.choices)
    timezone = serializers.CharField(max_length=64, default="UTC")
    limit_usd = money_field(required=False, allow_null=True)
    limit_tokens = serializers.IntegerField(min_value=0, max_value=BIGINT_MAX, required=False, allow_null=True)
    mode = serializers.ChoiceField(choices=Budget.Mode.choices, default=Budget.Mode.HARD)
    thresholds = serializers.ListField(child=serializers.IntegerField(min_value=1, max_value=1000), required=False,
                                       max_length=10)
    webhook_url = serializers.URLField(max_length=500, required=False, allow_blank=True, default="",
                                       help_text="alerts are POSTed here, signed (X-Chatter-Signature)")

    def validate_webhook_url(self, value: str) -> str:
        if value:
            try:
                webhook_url_check(url=value, path="webhook_url")  # the one check of every webhook
            except InvalidInput as refused:
                detail = refused.details[0]
                raise serializers.ValidationError(detail["message"], code=detail["code"]) from None
        return value

    def validate_timezone(self, value: str) -> str:
        if not time_zone_known(value):
            raise serializers.ValidationError("not an IANA time zone")
        return value

    def validate(self, attrs: dict) -> dict:
        if (attrs.get("limit_usd") is None) == (attrs.get("limit_tokens") is None):
            raise serializers.ValidationError({"limit_usd": [ONE_LIMIT]})
        return attrs
