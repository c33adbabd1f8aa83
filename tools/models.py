"""MCP tool servers a user registers (or staff shares with everyone): where they are, how to reach them (the
headers, encrypted at rest), and the tools they offered when last asked."""
import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

# A server's name prefixes its tools' qualified names (`<server>__<tool>`), which reach models as function names
# (letters, digits, _ and -, at most 64): no "__" in it, so a qualified name splits one way.
SERVER_NAME_PATTERN = r"^(?!.*__)[A-Za-z0-9](?:[A-Za-z0-9_-]{0,30}[A-Za-z0-9])?$"
QUALIFIER = "__"
# Which qualified names a model can be offered (and so discovery keeps): engine.tools.tool_name_offerable.


class McpServer(models.Model):
    class Transport(models.TextChoices):
        STREAMABLE_HTTP = "streamable_http", "Streamable HTTP"
        SSE = "sse", "HTTP+SSE (the older transport)"
        STDIO = "stdio", "stdio (a process; declared by the operator only)"

    class Health(models.TextChoices):
        UNKNOWN = "unknown"
        HEALTHY = "healthy"
        UNHEALTHY = "unhealthy"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # None for a server the operator declared (CHATTER_MCP_SERVERS_FILE: tools.declared), shared and read-only.
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mcp_servers",
                              null=True, blank=True)
    declared = models.BooleanField(default=False)
    name = models.CharField(max_length=32)
    url = models.CharField(max_length=500)
    transport = models.CharField(max_length=16, choices=Transport.choices, default=Transport.STREAMABLE_HTTP)
    # {name: value} as JSON, encrypted (core.encryption): write-only, never returned, never in an audit row.
    headers_encrypted = models.TextField(blank=True, default="")
    header_names = models.JSONField(default=list, blank=True)  # which headers are set (their values are not)
    # Headers each user supplies for themselves (McpCredential), e.g. ["Authorization"]: a call carries the caller's.
    per_user_headers = models.JSONField(default=list, blank=True)
    # stdio (declared servers only): the command and its arguments, and its environment as JSON, encrypted.
    command = models.JSONField(default=list, blank=True)
    env_encrypted = models.TextField(blank=True, default="")
    shared = models.BooleanField(default=False)  # staff only: every user sees it and may call its tools
    enabled = models.BooleanField(default=True)
    # The tools the server listed when last asked: [{"name", "description", "input_schema"}].
    tools = models.JSONField(default=list, blank=True)
    tools_refreshed_at = models.DateTimeField(null=True, blank=True)
    health = models.CharField(max_length=16, choices=Health.choices, default=Health.UNKNOWN)
    last_error = models.TextField(blank=True, default="")
    checked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "created_at"]
        verbose_name = "MCP server"
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="mcp_server_name_unique_per_owner"),
            # Every user sees every shared server: their names (their tools' prefixes) must not collide.
            models.UniqueConstraint(fields=["name"], condition=Q(shared=True), name="mcp_server_shared_name_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.url})"


class McpCredential(models.Model):
    """A user's own values of a server's `per_user_headers` (their token for a shared server): write-only, encrypted
    like the server's headers, sent only with that user's calls."""
    server = models.ForeignKey(McpServer, on_delete=models.CASCADE, related_name="credentials")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mcp_credentials")
    headers_encrypted = models.TextField()  # {name: value} as JSON, encrypted (core.encryption)
    header_names = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "MCP credential"
        constraints = [models.UniqueConstraint(fields=["server", "user"], name="mcp_credential_unique_per_user")]

    def __str__(self) -> str:
        return f"{self.user_id} @ {self.server_id}"
