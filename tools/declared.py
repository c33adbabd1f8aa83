"""MCP servers the operator declares in a settings file (CHATTER_MCP_SERVERS_FILE), in the `mcpServers` JSON shape
Claude Desktop and Cursor use (docs/tools.md#servers-the-operator-declares): a `url` entry is reached over
Streamable HTTP (or HTTP+SSE), a `command` entry is a stdio server, which only this file may declare. Each is kept as
an McpServer row (`declared`, no owner, shared), synced whenever the file's size or modification time changes; an
entry that is not valid is left out, and logged.
"""
from __future__ import annotations

import json
import logging
import os
import re
import threading

import httpx
from django.conf import settings
from django.db import IntegrityError, transaction

from core.encryption import secret_encrypt
from tools.models import SERVER_NAME_PATTERN, McpServer

logger = logging.getLogger(__name__)

TRANSPORTS = {"sse": McpServer.Transport.SSE, "http": McpServer.Transport.STREAMABLE_HTTP,
              "streamable_http": McpServer.Transport.STREAMABLE_HTTP,
              "streamable-http": McpServer.Transport.STREAMABLE_HTTP}
MAX_URL_CHARS = 500

_seen: tuple | None = None  # the file's (path, size, mtime) when this process last wrote its servers
_lock = threading.Lock()


class DeclaredInvalid(ValueError):
    pass


def declared_entries(text: str) -> tuple[dict[str, dict], list[str]]:
    """The file's valid servers by name, as McpServer fields (plus `headers` and `env`), and what was wrong with
    the others."""
    document = json.loads(text)
    servers = document.get("mcpServers") if isinstance(document, dict) else None
    if not isinstance(servers, dict):
        raise DeclaredInvalid('the file has no "mcpServers" object')
    entries, problems = {}, []
    for name, entry in servers.items():
        try:
            entries[name] = _entry(name, entry)
        except DeclaredInvalid as exc:
            problems.append(f"{name!r}: {exc}")
    return entries, problems


def _entry(name: str, entry) -> dict:
    if not re.match(SERVER_NAME_PATTERN, str(name)):
        raise DeclaredInvalid("a name is letters, digits, _ and -, at most 32, without __")
    if not isinstance(entry, dict) or ("url" in entry) == ("command" in entry):
        raise DeclaredInvalid('an entry has either a "url" or a "command"')
    if "command" in entry:
        command, args, env = entry["command"], entry.get("args", []), entry.get("env", {})
        if not isinstance(command, str) or not command or not _strings(args) or not _string_map(env):
            raise DeclaredInvalid('"command" is a string, "args" a list of strings, "env" an object of strings')
        return {"transport": McpServer.Transport.STDIO, "url": "", "command": [command, *args], "env": env,
                "headers": {}}
    url, headers = entry["url"], entry.get("headers", {})
    transport = TRANSPORTS.get(entry.get("type") or entry.get("transport") or "http")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > MAX_URL_CHARS:
        raise DeclaredInvalid('"url" is an http(s) URL')
    if _credentials_in(url):  # every user reads a declared server's URL: as the API, no credentials in it
        raise DeclaredInvalid('"url" has credentials in it (user:password@), which every user would read: give '
                              'them as "headers"')
    if transport is None or not _string_map(headers):
        raise DeclaredInvalid('"type" is "http" or "sse", "headers" an object of strings')
    return {"transport": transport, "url": url, "command": [], "env": {}, "headers": headers}


def _credentials_in(url: str) -> bool:
    try:
        return bool(httpx.URL(url).userinfo)
    except httpx.InvalidURL:
        raise DeclaredInvalid('"url" is an http(s) URL') from None


def _strings(value) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _string_map(value) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def declared_servers_sync() -> None:
    """Write the file's servers when it changed since this process last did (nothing without the setting)."""
    global _seen
    path = settings.CHATTER_MCP_SERVERS_FILE
    try:
        stat = os.stat(path) if path else None
    except OSError as exc:
        logger.error("CHATTER_MCP_SERVERS_FILE %s cannot be read: %s", path, exc)
        return
    seen = (path, stat.st_size, stat.st_mtime_ns) if stat else None
    if seen == _seen:
        return
    with _lock:
        if seen == _seen:
            return
        entries = {}
        if path:
            try:
                with open(path, encoding="utf-8") as file:
                    entries, problems = declared_entries(file.read())
            except (OSError, ValueError) as exc:
                logger.error("CHATTER_MCP_SERVERS_FILE %s is not valid: %s", path, exc)
                return
            for problem in problems:
                logger.error("CHATTER_MCP_SERVERS_FILE %s: server %s (left out)", path, problem)
        _write(entries)
        _seen = seen


def _write(entries: dict[str, dict]) -> None:
    from tools.selectors import mcp_server_env, mcp_server_headers
    from tools.services import mcp_servers_refresh
    from tools.mcp_pool import mcp_pool_forget

    removed = McpServer.objects.filter(declared=True).exclude(name__in=list(entries))
    for server_id in list(removed.values_list("pk", flat=True)):
        mcp_pool_forget(server_id)  # a stdio server's process ends with its session
    removed.delete()
    existing = {server.name: server for server in McpServer.objects.filter(declared=True)}
    changed = []
    for name, entry in entries.items():
        server = existing.get(name) or McpServer(name=name, declared=True, shared=True, owner=None)
        same = (server.pk is not None and server.url == entry["url"] and server.transport == entry["transport"]
                and server.command == entry["command"] and mcp_server_headers(server=server) == entry["headers"]
                and mcp_server_env(server=server) == entry["env"])
        if same:
            continue
        server.url, server.transport, server.command = entry["url"], entry["transport"], entry["command"]
        server.headers_encrypted = secret_encrypt(json.dumps(entry["headers"], sort_keys=True)) \
            if entry["headers"] else ""
        server.header_names = sorted(entry["headers"])
        server.env_encrypted = secret_encrypt(json.dumps(entry["env"], sort_keys=True)) if entry["env"] else ""
        try:
            with transaction.atomic():
                server.save()
        except IntegrityError:
            logger.error("CHATTER_MCP_SERVERS_FILE: server %r left out: a shared server has this name", name)
            continue
        mcp_pool_forget(server.pk)
        changed.append(server)
    # Asked for their tools all at once; one deleted meanwhile (the file changed again, and another process wrote it)
    # is passed over.
    mcp_servers_refresh(servers=changed)
