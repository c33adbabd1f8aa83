"""/api/v1/scores/: judgements of your runs and messages (another user's score is a 404)."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.request import Request
from rest_framework.response import Response

from core.api.viewsets import OwnedViewSet
from scores.api.filters import ScoreFilter
from scores.api.serializers import ScoreSerializer, ScoreWriteSerializer
from scores.models import Score
from scores.selectors import score_list
from scores.services import score_create, score_delete


class ScoreViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OwnedViewSet):
    key_scope = "chat"
    queryset = Score.objects.none()
    serializer_class = ScoreSerializer
    filterset_class = ScoreFilter
    ordering_fields = ("created_at", "name", "value")
    ordering = ("-created_at",)
    not_found = "score not found"

    def get_queryset(self):
        return score_list(user=self.request.user)

    @extend_schema(request=ScoreWriteSerializer, responses={201: ScoreSerializer})
    def create(self, request: Request) -> Response:
        serializer = ScoreWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        score = score_create(owner=request.user, name=data["name"], value=data["value"], data_type=data["data_type"],
                             comment=data["comment"], source=data["source"], execution_id=data.get("execution"),
                             message_id=data.get("message"))
        return Response(ScoreSerializer(score).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, pk: str) -> Response:
        score_delete(score=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)
