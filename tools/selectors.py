"""Reads of tool servers and the tool registry: what a user may see and call."""
from __future__ import annotations

import json

from django.db.models import Q, QuerySet

from core.encryption import secret_decrypt
from engine.redaction import secret_forms
from engine.tools import TOOLS, tool_name_offerable
from tools.declared import declared_servers_sync
from tools.mcp_pool import Endpoint
from tools.models import QUALIFIER, McpCredential, McpServer


def mcp_server_list(*, user) -> QuerySet[McpServer]:
    """The servers `user` sees: their own and the shared ones (the operator's declared ones among them, written
    first when their file changed)."""
    return _visible(user=user).select_related("owner")


def _visible(*, user) -> QuerySet[McpServer]:
    declared_servers_sync()
    return McpServer.objects.filter(Q(owner=user) | Q(shared=True))


# The server of a name that a user sees, their own before a shared one (what mcp_server_list finds), read through
# Manager.raw(). Parameters: the user's id, True, the name, the user's id.
SERVER_BY_NAME = ('SELECT * FROM "tools_mcpserver" WHERE ("owner_id" = %s OR "shared" = %s) AND "name" = %s '
                  'ORDER BY CASE WHEN "owner_id" = %s THEN 0 ELSE 1 END LIMIT 1')


class ToolUnavailable(Exception):
    """The caller may not call this tool now (no such server or tool that it sees, or the server is switched off);
    the message says which."""


def mcp_tool_get(*, user, name: str) -> tuple[McpServer, str]:
    """The server and the server's own name of the MCP tool `<server>__<tool>` that `user` may call (their own
    server before a shared one of the same name), or ToolUnavailable."""
    server_name, qualifier, tool = name.partition(QUALIFIER)
    if not qualifier or not server_name or not tool:
        raise ToolUnavailable(f"{name!r} is not an MCP tool's name (<server>__<tool>)")
    # Every call of a run asks (a server switched off or unshared meanwhile is not called): one named statement
    # (bench/RESULTS.md, B11: the ORM's own work was most of this path's cost).
    declared_servers_sync()
    server = next(iter(McpServer.objects.raw(SERVER_BY_NAME, [user.pk, True, server_name, user.pk])), None)
    if server is None:
        raise ToolUnavailable(f"there is no MCP server {server_name!r}")
    if not server.enabled:
        raise ToolUnavailable(f"the MCP server {server_name!r} is switched off")
    if tool not in {each["name"] for each in server.tools} or not tool_name_offerable(name):
        raise ToolUnavailable(f"the MCP server {server_name!r} offers no tool {tool[:100]!r}")
    return server, tool


def mcp_server_headers(*, server: McpServer) -> dict[str, str]:
    """The server's headers, decrypted: for the MCP client only, never for a response or a log."""
    return json.loads(secret_decrypt(server.headers_encrypted)) if server.headers_encrypted else {}


class CredentialMissing(ToolUnavailable):
    """The server asks each user for their own header values (`per_user_headers`) and this user has not given
    them: the message names the server and the headers."""


class CredentialRefused(CredentialMissing):
    """The server refused this user's own header values (a 401 or 403): theirs to set again, not the server's
    fault; the message names the server."""


def mcp_credential_get(*, server: McpServer, user) -> McpCredential | None:
    return McpCredential.objects.filter(server=server, user=user).first()


def mcp_call_headers(*, server: McpServer, user) -> dict[str, str]:
    """The headers of a request to `server` on `user`'s behalf, decrypted (for the MCP client only): the server's,
    and for a server with `per_user_headers` the user's own values of those (never another user's), or
    CredentialMissing."""
    headers = mcp_server_headers(server=server)
    if not server.per_user_headers:
        return headers
    credential = mcp_credential_get(server=server, user=user) if user is not None else None
    own = json.loads(secret_decrypt(credential.headers_encrypted)) if credential is not None else {}
    given = {name.lower() for name in own}
    missing = [name for name in server.per_user_headers if name.lower() not in given]
    if missing:
        raise CredentialMissing(
            f"the MCP server {server.name!r} needs your own {', '.join(missing)}: set it with "
            f"PUT /api/v1/tools/servers/{server.pk}/credentials/")
    wanted = {name.lower() for name in server.per_user_headers}
    kept = {name: value for name, value in headers.items() if name.lower() not in wanted}
    return {**kept, **{name: value for name, value in own.items() if name.lower() in wanted}}


def mcp_secrets(*, server_id, user, server: McpServer | None = None) -> tuple[str, ...]:
    """The registered secrets a call of the server's tools on `user`'s behalf may carry, which nothing stored may
    hold, in every form (engine.redaction.secret_forms): the server's header values, its environment's (a stdio
    server's) and the user's own values of its per_user_headers (`server`: read already)."""
    server = server or McpServer.objects.filter(pk=server_id).first()
    if server is None:
        return ()
    credential = mcp_credential_get(server=server, user=user) if server.per_user_headers else None
    own = json.loads(secret_decrypt(credential.headers_encrypted)) if credential is not None else {}
    return secret_forms(tuple(value for value in (*mcp_server_headers(server=server).values(),
                                                  *mcp_server_env(server=server).values(), *own.values()) if value))


def mcp_server_ids_existing(*, ids) -> set[str]:
    """Which of the servers `ids` (as text) still exist: a call's row names its server only while it does."""
    return {str(pk) for pk in McpServer.objects.filter(pk__in=ids).values_list("pk", flat=True)}


def mcp_server_env(*, server: McpServer) -> dict[str, str]:
    """A stdio server's environment, decrypted: for the MCP client, and the secrets its calls keep none of."""
    return json.loads(secret_decrypt(server.env_encrypted)) if server.env_encrypted else {}


def mcp_endpoint(*, server: McpServer, headers: dict[str, str] | None = None) -> Endpoint:
    """How the MCP client reaches `server` (the headers a request sends, `mcp_call_headers`, else the server's own;
    or a stdio server's environment, decrypted): what a kept session is keyed by."""
    headers = tuple(sorted((mcp_server_headers(server=server) if headers is None else headers).items()))
    if server.transport == McpServer.Transport.STDIO:
        command, *args = server.command
        return Endpoint(server_id=str(server.pk), transport=server.transport, command=command, args=tuple(args),
                        env=tuple(sorted(mcp_server_env(server=server).items())))
    return Endpoint(server_id=str(server.pk), transport=server.transport, url=server.url, headers=headers)


def builtin_tool_list() -> list[dict]:
    """The built-in tools (engine.tools), in the registry's shape."""
    from langchain_core.utils.function_calling import convert_to_openai_tool

    described = [convert_to_openai_tool(tool)["function"] for tool in TOOLS.values()]
    return [{"name": each["name"], "description": each["description"], "input_schema": each["parameters"],
             "server": None, "enabled": True} for each in described]


def tool_names_known() -> set[str]:
    """Every name a tool call can be of, whoever may call it: the built-ins' and each MCP server's listed tools as
    `<server>__<tool>`. A model may call any name: this is what bounds a label counting calls by tool (/metrics)."""
    names = set(TOOLS)
    for server, tools in McpServer.objects.values_list("name", "tools"):
        names.update(f"{server}{QUALIFIER}{tool['name']}" for tool in tools or ()
                     if isinstance(tool, dict) and isinstance(tool.get("name"), str))
    return names


def tool_list(*, user) -> list[dict]:
    """Every tool `user` may use: the built-ins by their bare names, then each visible server's tools as
    `<server>__<tool>` (`enabled` false while the server is disabled). A user's own server comes before a shared
    one of the same name, whose tools it hides."""
    tools = builtin_tool_list()
    seen: set[str] = set()
    servers = sorted(mcp_server_list(user=user), key=lambda server: (server.owner_id != user.pk, server.name))
    for server in servers:
        if server.name in seen:
            continue
        seen.add(server.name)
        tools += [{"name": f"{server.name}{QUALIFIER}{tool['name']}", "description": tool["description"],
                   "input_schema": tool["input_schema"], "server": {"id": str(server.pk), "name": server.name},
                   "enabled": server.enabled} for tool in server.tools
                  # (a server renamed since its discovery may make a name too long for a model: not offered)
                  if tool_name_offerable(f"{server.name}{QUALIFIER}{tool['name']}")]
    return tools


def mcp_server_name_taken(*, owner, name: str, shared: bool, server: McpServer | None = None) -> str | None:
    """Why `name` cannot be used by a server of `owner` (shared or not), `server` itself aside: None when it can.
    The same rules the database holds (its owner's names, and every shared server's, are unique)."""
    others = McpServer.objects.filter(name=name).exclude(pk=server.pk if server else None)
    if others.filter(owner=owner).exists():
        return "its owner already has a server with this name"
    if shared and others.filter(shared=True).exists():
        return "a shared server already has this name"
    return None
