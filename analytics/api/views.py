"""Analytics over the API (docs/usage.md#the-back-office-admin-and-analytics): usage reports and template analytics
answered from the stored aggregates, exported as JSON or CSV; model prices (everyone reads, staff write). Thin:
validate, call a selector or service, render."""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.generics import ListAPIView
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param
from rest_framework.views import APIView

from analytics.api.renderers import CSVRenderer
from analytics.prompt_versions import prompt_version_report
from analytics.api.serializers import (
    GROUP_COLUMNS,
    PriceSerializer,
    PriceWriteSerializer,
    TemplateAnalyticsSerializer,
    ToolFiguresSerializer,
    ToolUsageReportSerializer,
    ToolUsageQuerySerializer,
    UsageFiguresSerializer,
    UsageQuerySerializer,
    UsageReportSerializer,
    UsageRowSerializer,
)
from analytics.models import UsageRollup
from analytics.selectors import (
    price_for_call,
    price_list,
    template_analytics_list,
    usage_report,
    usage_report_page,
)
from analytics.prices import price_create, price_update
from analytics.tool_usage import tool_usage_report
from core.api.filters import StrictOrderingFilter
from core.api.pagination import PageNumberPagination
from core.errors import Forbidden, InvalidInput, NotFound
from prompts.selectors import prompt_get
from workflows.models import WorkflowTemplate

FORMAT_PARAMETER = OpenApiParameter("format", OpenApiTypes.STR, enum=["json", "csv"],
                                    description="csv: every row as a CSV file (also `Accept: text/csv`)")

CSV_RESPONSE = OpenApiResponse(OpenApiTypes.STR, description="CSV with a header row; every row, not paged")


class ReportPagination(PageNumberPagination):
    """Reports are read whole more often than lists: bigger pages (CSV exports are never paged)."""

    page_size = 100
    max_page_size = 1000


class CSVExportMixin:
    """JSON by default; CSV with `?format=csv` or `Accept: text/csv`, unpaged, as a file download. Errors are
    always JSON in the one error shape."""

    renderer_classes = (JSONRenderer, CSVRenderer)
    csv_columns: tuple[str, ...] = ()
    csv_name = "export"

    @property
    def wants_csv(self) -> bool:
        return isinstance(getattr(self.request, "accepted_renderer", None), CSVRenderer)

    def get_renderer_context(self) -> dict:
        return {**super().get_renderer_context(), "csv_columns": list(self.csv_columns)}

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if isinstance(response.accepted_renderer, CSVRenderer):
            if response.status_code >= 400:
                response.accepted_renderer, response.accepted_media_type = JSONRenderer(), "application/json"
            else:
                stamp = timezone.now().strftime("%Y%m%d")
                response["Content-Disposition"] = f'attachment; filename="{self.csv_name}-{stamp}.csv"'
        return response


class UsageView(CSVExportMixin, APIView):
    """Usage by day, provider, model, template or conversation: the caller's own, or (staff) everyone's or one
    user's. Answered from the usage rollups; see UsageFigures for what each figure counts."""

    @extend_schema(operation_id="analytics_usage", parameters=[UsageQuerySerializer, FORMAT_PARAMETER],
                   responses={(200, "application/json"): UsageReportSerializer, (200, "text/csv"): CSV_RESPONSE})
    def get(self, request: Request) -> Response:
        query = UsageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        group_by, start, end, page, size = (query.validated_data.get(name)
                                            for name in ("group_by", "start", "end", "page", "page_size"))
        owner = self._owner(request, query.validated_data.get("owner"))
        scope = {"owner_ids": None if owner is None else [owner.pk], "start": start, "end": end}
        self.csv_columns = (*GROUP_COLUMNS[group_by], *UsageRollup.COUNTERS)
        self.csv_name = f"usage-by-{group_by}"
        if self.wants_csv:
            return Response(UsageRowSerializer(usage_report(group_by=group_by, **scope), many=True,
                                               group_by=group_by).data)
        report = usage_report_page(group_by=group_by, offset=(page - 1) * size, limit=size, **scope)
        url = request.build_absolute_uri()
        return Response({
            "count": report.count,
            "next": replace_query_param(url, "page", page + 1) if page * size < report.count else None,
            "previous": (replace_query_param(url, "page", page - 1) if page > 2 else remove_query_param(url, "page"))
            if page > 1 else None,
            "group_by": group_by,
            "start": start,
            "end": end,
            "owner": owner.get_username() if owner is not None else None,
            "totals": UsageFiguresSerializer(report.totals).data,
            "results": UsageRowSerializer(report.rows, many=True, group_by=group_by).data,
        })

    @staticmethod
    def _owner(request: Request, username: str | None):
        """Whose usage: the caller's; staff see everyone's, or one user's with ?owner=."""
        user = request.user
        if not user.is_staff:
            if username not in (None, user.get_username()):
                raise Forbidden("only staff may read another user's usage")
            return user
        if username is None:
            return None
        owner = get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: username}).first()
        if owner is None:
            raise InvalidInput("no such user", details={"owner": [f"no user named {username!r}"]})
        return owner


class TemplateOrdering(StrictOrderingFilter):
    """?ordering= over templates with their analytics: `template__key`, as the API names it, is the key."""

    def get_ordering(self, request, queryset, view):
        return [term.replace("template__key", "key") for term in super().get_ordering(request, queryset, view)]


class ToolUsageView(CSVExportMixin, APIView):
    """Tool calls per tool, MCP server or template over a range of UTC days: calls, errors, cost and p50/p95
    duration. The caller's own runs; staff, everyone's or one user's (?owner=)."""

    @extend_schema(operation_id="analytics_tools", parameters=[ToolUsageQuerySerializer, FORMAT_PARAMETER],
                   responses={(200, "application/json"): ToolUsageReportSerializer,
                              (200, "text/csv"): CSV_RESPONSE})
    def get(self, request: Request) -> Response:
        query = ToolUsageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        group_by, start, end = (query.validated_data[name] for name in ("group_by", "start", "end"))
        owner = UsageView._owner(request, query.validated_data.get("owner"))
        rows = ToolFiguresSerializer(tool_usage_report(group_by=group_by, start=start, end=end,
                                                       owner_ids=None if owner is None else [owner.pk]),
                                     many=True).data
        self.csv_columns, self.csv_name = ToolFiguresSerializer.FIELDS, f"tools-by-{group_by}"
        if self.wants_csv:
            return Response(rows)
        return Response({"group_by": group_by, "start": start, "end": end,
                         "owner": owner.get_username() if owner is not None else None, "results": rows})


class TemplateAnalyticsView(CSVExportMixin, ListAPIView):
    """Per-template counters over every user's runs (I2): the templates the caller owns; staff, every template.
    A template that never ran shows zeros. The caller's own usage of any template is
    /analytics/usage/?group_by=template."""

    queryset = WorkflowTemplate.objects.none()  # the real one, per user, is get_queryset()
    serializer_class = TemplateAnalyticsSerializer
    pagination_class = ReportPagination
    filter_backends = (TemplateOrdering,)
    ordering_fields = ("total_executions", "total_tokens", "total_cost", "last_used_at", "template__key")
    ordering = ("template__key",)
    csv_columns = TemplateAnalyticsSerializer.FIELDS
    csv_name = "template-analytics"

    def get_queryset(self):
        return template_analytics_list(user=self.request.user)

    def paginate_queryset(self, queryset):
        return None if self.wants_csv else super().paginate_queryset(queryset)

    @extend_schema(operation_id="analytics_templates", parameters=[FORMAT_PARAMETER],
                   responses={(200, "application/json"): TemplateAnalyticsSerializer(many=True),
                              (200, "text/csv"): CSV_RESPONSE})
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)


class StaffWritesOnly(BasePermission):
    message = "only staff may change prices"

    def has_permission(self, request, view) -> bool:
        return request.method in SAFE_METHODS or bool(request.user and request.user.is_staff)


class PriceViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Model prices, history included. Everyone authenticated reads; staff add rows (a price change is a new row
    with its effective_from) and retire or restore them (PATCH is_active). Past calls keep their price until
    `manage.py recompute_costs` is run."""

    serializer_class = PriceSerializer
    queryset = price_list()
    filterset_fields = ("provider", "is_active")
    ordering_fields = ("provider", "model_pattern", "effective_from", "created_at")
    ordering = ("provider", "model_pattern", "-effective_from")
    http_method_names = ("get", "post", "patch", "head", "options")

    def get_permissions(self):
        return [*super().get_permissions(), StaffWritesOnly()]

    def get_queryset(self):
        return price_list()

    @extend_schema(request=PriceWriteSerializer, responses={201: PriceSerializer})
    def create(self, request: Request) -> Response:
        serializer = PriceWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        price = price_create(actor=request.user, **serializer.validated_data)
        return Response(PriceSerializer(price).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=PriceWriteSerializer(partial=True), responses=PriceSerializer)
    def partial_update(self, request: Request, pk: str) -> Response:
        price = self.get_object()
        serializer = PriceWriteSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        return Response(PriceSerializer(price_update(price=price, actor=request.user,
                                                     **serializer.validated_data)).data)

    @extend_schema(parameters=[OpenApiParameter("provider", OpenApiTypes.STR, required=True),
                               OpenApiParameter("model", OpenApiTypes.STR, required=True)],
                   responses={200: PriceSerializer})
    @action(detail=False, methods=["get"], url_path="in-force")
    def in_force(self, request: Request) -> Response:
        """The price a call to `provider`/`model` made now is charged at (the rule every run uses); 404 when no
        price covers it."""
        provider, model = request.query_params.get("provider", ""), request.query_params.get("model", "")
        if not provider or not model:
            raise InvalidInput("give provider and model", details=[
                {"path": name, "code": "required", "message": f"{name} is required"}
                for name, value in (("provider", provider), ("model", model)) if not value])
        price = price_for_call(provider=provider, model=model)
        if price is None:
            raise NotFound(f"no price is in force for {provider}/{model}")
        return Response(PriceSerializer(price).data)


class PromptReportQuerySerializer(serializers.Serializer):
    baseline = serializers.IntegerField(min_value=1, max_value=2**31 - 1, required=False,
                                        help_text="the version each one is compared with (default: production's)")


class PromptAnalyticsView(APIView):
    """GET analytics/prompts/<name>/: your prompt's versions (a split's variants) side by side — runs, tokens,
    cost, latency p50/p95, error rate, mean scores — each mean's difference from the baseline version with its 95%
    confidence interval. Another user's prompt is a 404."""

    @extend_schema(parameters=[PromptReportQuerySerializer], responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, name: str) -> Response:
        query = PromptReportQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        prompt = prompt_get(user=request.user, name=name)
        return Response(prompt_version_report(prompt=prompt, baseline=query.validated_data.get("baseline")))
