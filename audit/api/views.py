"""The audit trail over the API (docs/api/rest.md): a user's own rows (staff: all), and the chain check (staff)."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.api.filters import AuditEventFilter
from audit.api.serializers import AuditEventSerializer, ChainVerificationSerializer
from audit.models import AuditEvent
from audit.selectors import audit_chain_verify, audit_event_list
from audit.services import audit_queue_flush


class AuditEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    queryset = AuditEvent.objects.none()  # the real one, per user, is get_queryset()
    serializer_class = AuditEventSerializer
    filterset_class = AuditEventFilter
    ordering_fields = ("id", "created_at", "action")
    ordering = ("-id",)

    def get_queryset(self):
        # Another user's row is a 404 on retrieve, never a 403.
        return audit_event_list(user=self.request.user)

    # The trail as of the request: runs' rows still queued (audit.services.audit_queue) join the chain first.
    def list(self, request: Request, *args, **kwargs) -> Response:
        audit_queue_flush()
        return super().list(request, *args, **kwargs)

    def retrieve(self, request: Request, *args, **kwargs) -> Response:
        audit_queue_flush()
        return super().retrieve(request, *args, **kwargs)


class AuditVerifyView(APIView):
    """Recomputes every hash and link of the chain (I7); names the first bad row."""

    permission_classes = (IsAdminUser,)

    @extend_schema(responses=ChainVerificationSerializer)
    def get(self, request: Request) -> Response:
        audit_queue_flush()
        return Response(ChainVerificationSerializer(audit_chain_verify().as_dict()).data)
