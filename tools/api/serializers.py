"""Tool servers and tools over the API. A server's headers are write-only: a response names them (`header_names`)
and never holds a value."""
from __future__ import annotations

import re

from rest_framework import serializers

from core.api.serializers import StrictSerializer
from tools.models import SERVER_NAME_PATTERN, McpServer

MAX_URL_CHARS = 500
MAX_HEADERS = 20
MAX_HEADER_VALUE_CHARS = 4096
# An HTTP header name (RFC 9110's token).
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$")
# Headers the MCP transport sets itself, or that would change where or how a request goes.
RESERVED_HEADERS = {"host", "content-length", "content-type", "transfer-encoding", "connection", "accept", "te",
                    "upgrade", "keep-alive", "proxy-authorization", "mcp-session-id", "mcp-protocol-version",
                    "last-event-id"}


# What a server registered through the API may speak: stdio servers (a command to run) are the operator's only.
API_TRANSPORTS = [(McpServer.Transport.STREAMABLE_HTTP.value, McpServer.Transport.STREAMABLE_HTTP.label),
                  (McpServer.Transport.SSE.value, McpServer.Transport.SSE.label)]

class HeadersField(serializers.DictField):
    """{name: value}: a bearer token, an API key. Write-only."""

    def __init__(self, **kwargs):
        super().__init__(child=serializers.CharField(max_length=MAX_HEADER_VALUE_CHARS, trim_whitespace=False),
                         allow_empty=True, **kwargs)

    def to_internal_value(self, data):
        headers = super().to_internal_value(data)
        if len(headers) > MAX_HEADERS:
            raise serializers.ValidationError(f"at most {MAX_HEADERS} headers")
        lowered = set()
        for name, value in headers.items():
            if not HEADER_NAME.match(name):
                raise serializers.ValidationError(f"{name[:100]!r} is not an HTTP header name")
            if name.lower() in RESERVED_HEADERS:
                raise serializers.ValidationError(f"{name} is set by the MCP transport, not here")
            if name.lower() in lowered:
                raise serializers.ValidationError(f"{name} is given twice")
            lowered.add(name.lower())
            # (HTTP sends header values as ASCII: any other character could never be sent)
            if any(char in value for char in "\r\n\0") or not value.isprintable() or not value.isascii():
                raise serializers.ValidationError(f"the value of {name} has characters a header cannot carry "
                                                  "(printable ASCII only)")
        return headers


class HeaderNamesField(serializers.ListField):
    """Names of headers each user supplies for themselves (their token for a shared server)."""

    def __init__(self, **kwargs):
        super().__init__(child=serializers.CharField(max_length=100), allow_empty=True, max_length=MAX_HEADERS,
                         **kwargs)

    def to_internal_value(self, data):
        names = super().to_internal_value(data)
        lowered = set()
        for name in names:
            if not HEADER_NAME.match(name):
                raise serializers.ValidationError(f"{name[:100]!r} is not an HTTP header name")
            if name.lower() in RESERVED_HEADERS:
                raise serializers.ValidationError(f"{name} is set by the MCP transport, not here")
            if name.lower() in lowered:
                raise serializers.ValidationError(f"{name} is given twice")
            lowered.add(name.lower())
        return names


class McpServerWriteSerializer(StrictSerializer):
    name = serializers.RegexField(SERVER_NAME_PATTERN, help_text="letters, digits, _ and -, at most 32, no `__`: "
                                  "its tools are named `<name>__<tool>`")
    url = serializers.URLField(max_length=MAX_URL_CHARS, help_text="http(s), to a public address (or one the "
                               "operator allows: CHATTER_OUTBOUND_ALLOWED_NETWORKS)")
    # stdio servers (a command to run) are declared by the operator only (CHATTER_MCP_SERVERS_FILE), never here.
    transport = serializers.ChoiceField(choices=API_TRANSPORTS,
                                        default=McpServer.Transport.STREAMABLE_HTTP)
    headers = HeadersField(required=False, write_only=True, help_text="sent with every request to the server "
                           "(write-only: encrypted at rest, never returned)")
    per_user_headers = HeaderNamesField(required=False, help_text="headers each user sets for themselves "
                                        "(PUT .../credentials/): a call carries the caller's own values")
    shared = serializers.BooleanField(default=False, help_text="staff only: every user sees it and may call it")
    enabled = serializers.BooleanField(default=True)


class McpCredentialWriteSerializer(StrictSerializer):
    headers = HeadersField(write_only=True, help_text="your own values of the server's per_user_headers (all of "
                           "them): write-only, encrypted at rest, never returned")


class McpCredentialSerializer(serializers.Serializer):
    header_names = serializers.ListField(child=serializers.CharField(), help_text="which are set (never a value)")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class McpServerUpdateSerializer(McpServerWriteSerializer):
    """PATCH: any of the fields; `headers` replaces the whole set ({} clears it)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, partial=True, **kwargs)


class McpServerToolSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    input_schema = serializers.JSONField()


class McpServerSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True, allow_null=True,
                                  help_text="null for a server the operator declared")
    tools = McpServerToolSerializer(many=True, read_only=True)

    class Meta:
        model = McpServer
        fields = ("id", "name", "url", "transport", "header_names", "per_user_headers", "shared", "declared", "enabled",
                  "owner", "tools",
                  "tools_refreshed_at", "health", "last_error", "checked_at", "created_at", "updated_at")
        read_only_fields = fields


class ToolServerRefSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()


class ToolSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="the bare name of a built-in; `<server>__<tool>` for an MCP tool")
    description = serializers.CharField()
    input_schema = serializers.JSONField()
    server = ToolServerRefSerializer(allow_null=True, help_text="null for a built-in")
    enabled = serializers.BooleanField()
