"""/api/v1/experiments/: your experiments (another user's is a 404): create one (it runs in the background), read
its totals and its results, cancel it, resume it."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from core.api.filters import CreatedRangeFilterSet
from core.api.viewsets import OwnedViewSet
from experiments.api.serializers import (
    ExperimentListSerializer,
    ExperimentResultSerializer,
    ExperimentResumeSerializer,
    ExperimentSerializer,
    ExperimentWriteSerializer,
)
from experiments.models import Experiment
from experiments.selectors import experiment_list, experiment_summary, experiment_totals_from_runs
from experiments.progress import with_progress_counts
from experiments.services import experiment_cancel, experiment_create, experiment_progress, experiment_resume


class ExperimentFilter(CreatedRangeFilterSet):
    class Meta:
        model = Experiment
        fields = ("name", "status", "dataset")


class ExperimentViewSet(OwnedViewSet):
    key_scope = "runs"
    queryset = Experiment.objects.none()
    serializer_class = ExperimentSerializer
    filterset_class = ExperimentFilter
    ordering_fields = ("created_at", "name", "status")
    ordering = ("-created_at",)
    not_found = "experiment not found"

    def get_queryset(self):
        return experiment_list(user=self.request.user)

    @extend_schema(responses=ExperimentListSerializer(many=True))
    def list(self, request: Request) -> Response:
        """Yours, each with its progress (what a pending or running one waits for)."""
        page = self.paginate_queryset(with_progress_counts(self.filter_queryset(self.get_queryset())))
        return self.get_paginated_response(ExperimentListSerializer(page, many=True).data)

    def _shown(self, experiment: Experiment) -> dict:
        experiment.refresh_from_db()
        return {**ExperimentSerializer(experiment).data, "progress": experiment_progress(experiment=experiment),
                "summary": experiment_summary(experiment=experiment),
                "runs": experiment_totals_from_runs(experiment=experiment)}

    @extend_schema(request=ExperimentWriteSerializer, responses={201: ExperimentSerializer})
    def create(self, request: Request) -> Response:
        serializer = ExperimentWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        experiment = experiment_create(
            owner=request.user, name=data["name"], description=data["description"], dataset_id=data["dataset"],
            targets=data["targets"], evaluators=data["evaluators"], concurrency=data["concurrency"],
            budget=data.get("budget"), start=data["start"])
        return Response(self._shown(experiment), status=status.HTTP_201_CREATED)

    @extend_schema(responses=ExperimentSerializer)
    def retrieve(self, request: Request, pk: str) -> Response:
        """The experiment, its progress, its totals per target (targets' and judges' tokens and cost apart, mean
        latency, mean scores) and the same accounting read from its runs."""
        return Response(self._shown(self.get_object()))

    @extend_schema(responses=ExperimentResultSerializer(many=True))
    @action(detail=True, methods=["get"], filter_backends=[])
    def results(self, request: Request, pk: str) -> Response:
        """Each target × item: output, scores, tokens, cost, latency (paginated; `?target=` one target's)."""
        results = self.get_object().results.order_by("created_at", "id")
        if request.query_params.get("target"):
            results = results.filter(target=request.query_params["target"])
        page = self.paginate_queryset(results)
        return self.get_paginated_response(ExperimentResultSerializer(page, many=True).data)

    @extend_schema(request=None, responses=ExperimentSerializer)
    @action(detail=True, methods=["post"], filter_backends=[])
    def cancel(self, request: Request, pk: str) -> Response:
        """Stop starting items (those under way finish); 409 when it is not pending or running."""
        return Response(self._shown(experiment_cancel(experiment=self.get_object(), actor=request.user)))

    @extend_schema(request=ExperimentResumeSerializer, responses=ExperimentSerializer)
    @action(detail=True, methods=["post"], filter_backends=[])
    def resume(self, request: Request, pk: str) -> Response:
        """Go on with a stopped experiment: only the target × item pairs without a result run (optionally with a
        new `budget`); 409 unless it is cancelled, out of budget or failed."""
        serializer = ExperimentResumeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        experiment = experiment_resume(experiment=self.get_object(), budget=serializer.validated_data.get("budget"),
                                       actor=request.user)
        return Response(self._shown(experiment))
