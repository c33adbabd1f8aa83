"""/api/v1/budgets/: setting, listing (with the current period's spend) and deactivating spend limits."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.request import Request
from rest_framework.response import Response

from budgets.api.serializers import BudgetCreateSerializer, BudgetSerializer
from budgets.models import Budget
from budgets.services import budget_create, budget_deactivate, budgets_current
from budgets.targets import budget_target
from core.api.viewsets import OwnedViewSet
from keys.auth import ALL_SCOPES


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
