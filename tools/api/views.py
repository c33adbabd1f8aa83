"""/api/v1/tools/: the tools a caller may use (built-ins and those of the MCP servers it sees), and
/api/v1/tools/servers/: MCP servers (yours and the shared ones; another user's own server is a 404). An API key
needs the `tools` scope. Thin: validate, call one service or selector, render."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.viewsets import OwnedViewSet
from core.errors import InvalidInput, NotFound
from tools.api.serializers import (McpCredentialSerializer, McpCredentialWriteSerializer, McpServerSerializer,
                                   McpServerUpdateSerializer, McpServerWriteSerializer, ToolSerializer)
from tools.models import McpServer
from tools.selectors import CredentialMissing, CredentialRefused, mcp_credential_get, mcp_server_list, tool_list
from tools.services import (mcp_credential_delete, mcp_credential_set, mcp_server_create, mcp_server_delete,
                            mcp_server_editable_check, mcp_server_refresh, mcp_server_update)

TOOLS_SCOPE = "tools"


def _ip(request: Request) -> str | None:
    return request.META.get("REMOTE_ADDR")


class ToolListView(APIView):
    """GET: every tool the caller may use, built-ins first."""

    key_scope_read = TOOLS_SCOPE

    @extend_schema(responses=ToolSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(ToolSerializer(tool_list(user=request.user), many=True).data)


class McpServerViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OwnedViewSet):
    queryset = McpServer.objects.none()
    serializer_class = McpServerSerializer
    ordering_fields = ("name", "created_at")
    ordering = ("name",)
    key_scope = TOOLS_SCOPE
    key_scope_read = TOOLS_SCOPE
    not_found = "MCP server not found"

    def get_queryset(self):
        return mcp_server_list(user=self.request.user)

    @extend_schema(request=McpServerWriteSerializer, responses={201: McpServerSerializer})
    def create(self, request: Request) -> Response:
        serializer = McpServerWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        server = mcp_server_create(owner=request.user, ip=_ip(request), **serializer.validated_data)
        return Response(McpServerSerializer(server).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=McpServerUpdateSerializer, responses=McpServerSerializer)
    def partial_update(self, request: Request, pk: str) -> Response:
        server = self.get_object()
        mcp_server_editable_check(server=server, actor=request.user)
        serializer = McpServerUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        server = mcp_server_update(server=server, actor=request.user, changes=dict(serializer.validated_data),
                                   ip=_ip(request))
        return Response(McpServerSerializer(server).data)

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, pk: str) -> Response:
        server = self.get_object()
        mcp_server_editable_check(server=server, actor=request.user)
        mcp_server_delete(server=server, actor=request.user, ip=_ip(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses=McpServerSerializer)
    @action(detail=True, methods=["post"], filter_backends=[])
    def refresh(self, request: Request, pk: str) -> Response:
        """Ask the server for its tools again; answers the server with its tools and health."""
        server = self.get_object()
        mcp_server_editable_check(server=server, actor=request.user, refresh=True)
        try:
            server = mcp_server_refresh(server=server, user=request.user)
        except CredentialMissing as missing:
            code = "credentials_refused" if isinstance(missing, CredentialRefused) else "credentials_missing"
            raise InvalidInput(str(missing), code=code) from None
        return Response(McpServerSerializer(server).data)

    @extend_schema(methods=["GET"], request=None, responses=McpCredentialSerializer)
    @extend_schema(methods=["PUT"], request=McpCredentialWriteSerializer, responses=McpCredentialSerializer)
    @extend_schema(methods=["DELETE"], request=None, responses={204: None})
    @action(detail=True, methods=["get", "put", "delete"], filter_backends=[])
    def credentials(self, request: Request, pk: str) -> Response:
        """Your own values of a server's `per_user_headers` (write-only): PUT sets them (all), GET says which are
        set, DELETE forgets them. Your calls of its tools carry them; nobody else's do."""
        server = self.get_object()
        if request.method == "PUT":
            serializer = McpCredentialWriteSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            credential = mcp_credential_set(server=server, user=request.user, ip=_ip(request),
                                            headers=serializer.validated_data["headers"])
            return Response(McpCredentialSerializer(credential).data)
        if request.method == "DELETE":
            mcp_credential_delete(server=server, user=request.user, ip=_ip(request))
            return Response(status=status.HTTP_204_NO_CONTENT)
        credential = mcp_credential_get(server=server, user=request.user)
        if credential is None:
            raise NotFound("you have set no credentials for this MCP server")
        return Response(McpCredentialSerializer(credential).data)
