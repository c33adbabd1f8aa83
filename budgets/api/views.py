"""/api/v1/budgets/: setting, listing (with the current period's spend) and deactivating spend limits."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from budgets.models import ONE_LIMIT, Budget
from budgets.services import budget_create, budget_deactivate, budgets_current
from budgets.targets import budget_target
from core.api.serializers import StrictSerializer, money_field
from core.api.viewsets import OwnedViewSet
from core.errors import InvalidInput
from core.models import BIGINT_MAX
from core.money import usd
from core.time_zones import time_zone_known
from keys.auth import ALL_SCOPES
from webhooks.services import webhook_url_check


class BudgetSerializer(serializers.ModelSerializer):
    webhook_url = serializers.CharField(read_only=True, help_text="empty: no webhook")
    period_start = serializers.SerializerMethodField()
    spent_usd = serializers.SerializerMethodField()
    spent_tokens = serializers.SerializerMethodField()
    reserved_usd = serializers.SerializerMethodField()
    reserved_tokens = serializers.SerializerMethodField()

    class Meta:
        model = Budget
        fields = ("id", "name", "scope", "target_id", "period", "timezone", "limit_usd", "limit_tokens", "mode",
                  "thresholds", "webhook_url", "is_active", "created_at", "period_start", "spent_usd", "spent_tokens",
                  "reserved_usd", "reserved_tokens")
        read_only_fields = fields

    def _current(self, budget):
        """The budget's current period (budgets_current, read for the whole page at once)."""
        return self.context["current"][budget.pk]

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


class BudgetViewSet(mixins.ListModelMixin, OwnedViewSet):
    queryset = Budget.objects.none()
    serializer_class = BudgetSerializer
    ordering_fields = ("created_at",)
    ordering = ("-created_at",)
    key_scope = ALL_SCOPES
    not_found = "budget not found"

    def get_queryset(self):
        budgets = Budget.objects.filter(is_active=True)
        return budgets if self.request.user.is_staff else budgets.filter(owner=self.request.user)

    def get_serializer(self, *args, **kwargs):
        if args and not isinstance(args[0], Budget):  # a page of budgets: their current periods in one query
            kwargs.setdefault("context", {})["current"] = budgets_current(list(args[0]))
        return super().get_serializer(*args, **kwargs)

    def retrieve(self, request: Request, pk: str) -> Response:
        budget = self.get_object()
        return Response(BudgetSerializer(budget, context={"current": budgets_current([budget])}).data)

    @extend_schema(request=BudgetCreateSerializer, responses={201: BudgetSerializer})
    def create(self, request: Request) -> Response:
        serializer = BudgetCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        budget = budget_create(
            owner=request.user, name=data["name"], scope=data["scope"],
            target_id=budget_target(user=request.user, scope=data["scope"], target_id=data.get("target_id")),
            period=data["period"], timezone_name=data["timezone"], mode=data["mode"],
            limit_usd=data.get("limit_usd"), limit_tokens=data.get("limit_tokens"), thresholds=data.get("thresholds"),
            webhook_url=data["webhook_url"])
        return Response(BudgetSerializer(budget, context={"current": budgets_current([budget])}).data,
                        status=status.HTTP_201_CREATED)

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, pk: str) -> Response:
        budget_deactivate(budget=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)
