"""Writes of MCP tool servers: register, change, share, delete (each audited, header values masked), and the
discovery of a server's tools through the official MCP client (tools.mcp_client), kept with the server along with
its health."""
from __future__ import annotations

import asyncio
import json
import logging
import time

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from audit.services import audit_record
from core.encryption import secret_encrypt
from core.errors import Forbidden, InvalidInput, NotFound
from core.outbound import DestinationRefused, destination_check
from core.secrets import REDACTED
from engine.tools import tool_name_offerable
from tools.mcp_client import (MAX_PAGES, MAX_SCHEMA_BYTES, MAX_TOOLS, McpUnreachable, ToolList, ToolResult,
                              mcp_tool_call, mcp_tools_discover)
from tools.mcp_pool import mcp_pool, mcp_pool_forget
from tools.models import QUALIFIER, McpCredential, McpServer
from tools.selectors import (CredentialMissing, CredentialRefused, mcp_call_headers, mcp_endpoint, mcp_server_headers,
                             mcp_tool_get)

logger = logging.getLogger(__name__)
EDITABLE = ("name", "url", "transport", "headers", "per_user_headers", "shared", "enabled")
# What changes where the server is, or how it is reached: its tools are asked for again.
REACH = ("url", "transport", "headers", "per_user_headers")
LEFT_OUT_SHOWN, LEFT_OUT_NAME_CHARS = 5, 40  # how many tools left out at discovery `last_error` names, how long


def mcp_url_check(*, url: str, path: str = "url") -> None:
    """An MCP server's URL goes where webhooks may (core.outbound: http(s), no credentials in it, public addresses
    or the operator's allowed networks). InvalidInput naming `path` otherwise."""
    try:
        destination_check(url, unresolved_ok=True)
    except DestinationRefused as refused:
        raise InvalidInput(f"{path} is not an allowed destination: {refused}", details=[
            {"path": path, "code": "forbidden_destination", "message": str(refused)}]) from None


def mcp_server_create(*, owner, name: str, url: str, transport: str = McpServer.Transport.STREAMABLE_HTTP,
                      headers: dict[str, str] | None = None, per_user_headers: list[str] | None = None,
                      shared: bool = False, enabled: bool = True, ip: str | None = None,
                      discover: bool = True) -> McpServer:
    """Register a server (audited `mcp_server.registered`), then ask it for its tools (mcp_server_refresh, as the
    owner): a server that does not answer is registered all the same, unhealthy, with the reason."""
    if shared and not owner.is_staff:
        raise Forbidden("only staff may share an MCP server with everyone")
    mcp_url_check(url=url)
    server = McpServer(owner=owner, name=name, url=url, transport=transport, shared=shared, enabled=enabled,
                       per_user_headers=list(per_user_headers or []))
    _headers_set(server, headers or {})
    with transaction.atomic():
        _saved(server)
        audit_record(action="mcp_server.registered", actor=owner, target=server, ip=ip, data=_audited(server))
        if shared:  # shared as it is registered: said as a later sharing is
            audit_record(action="mcp_server.shared", actor=owner, target=server, ip=ip,
                         data={"name": server.name, "owner_id": server.owner_id})
    return _discovered(server, owner) if discover else server


def mcp_server_update(*, server: McpServer, actor, changes: dict, ip: str | None = None) -> McpServer:
    """Change a server (audited `mcp_server.changed`, and `mcp_server.shared` / `mcp_server.unshared` when its
    sharing changes); its tools are asked for again when where or how it is reached changed. The changes apply to
    the server as it is now (mcp_server_locked: NotFound when it was deleted meanwhile)."""
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise ValueError(f"not editable: {sorted(unknown)}")
    if "shared" in changes and changes["shared"] != server.shared and not actor.is_staff:
        raise Forbidden("only staff may share an MCP server with everyone")
    if "url" in changes:
        mcp_url_check(url=changes["url"])
    with transaction.atomic():
        server = mcp_server_locked(server)
        was_shared = server.shared
        changed = []
        for field, value in changes.items():
            if field == "headers":
                if value != mcp_server_headers(server=server):
                    _headers_set(server, value or {})
                    changed.append(field)
            elif getattr(server, field) != value:
                setattr(server, field, value)
                changed.append(field)
        if not changed:
            return server
        _saved(server)
        transaction.on_commit(lambda: mcp_pool_forget(server.pk))
        audit_record(action="mcp_server.changed", actor=actor, target=server, ip=ip,
                     data={**_audited(server), "changed": changed})
        if server.shared != was_shared:
            audit_record(action="mcp_server.shared" if server.shared else "mcp_server.unshared", actor=actor,
                         target=server, ip=ip, data={"name": server.name, "owner_id": server.owner_id})
    return _discovered(server, actor) if set(changed) & set(REACH) else server


def mcp_server_delete(*, server: McpServer, actor, ip: str | None = None) -> None:
    """Delete a server with its users' credentials (audited `mcp_server.deleted`); NotFound when it was deleted
    meanwhile."""
    with transaction.atomic():
        server = mcp_server_locked(server)
        server_id, audited = server.pk, _audited(server)
        server.delete()
        audit_record(action="mcp_server.deleted", actor=actor, target_type=McpServer._meta.model_name,
                     target_id=str(server_id), ip=ip, data=audited)
        transaction.on_commit(lambda: mcp_pool_forget(server_id))


def mcp_server_locked(server: McpServer) -> McpServer:
    """The server's row as it is now, locked until the caller's transaction ends; NotFound when it was deleted.
    Every write of a server or of its users' credentials takes this lock first, before the rows it writes and the
    audit chain, so concurrent writes take turns instead of deadlocking, and none writes back a deleted server."""
    locked = McpServer.objects.select_for_update().filter(pk=server.pk).first()
    if locked is None:
        raise NotFound("MCP server not found")
    return locked


def _discovered(server: McpServer, actor) -> McpServer:
    """Registered or changed: its tools asked for as `actor`; not yet when the server asks for each user's own
    headers and the actor has not set theirs (their refresh, once they have, asks)."""
    try:
        return mcp_server_refresh(server=server, user=actor)
    except CredentialMissing:
        return server


def _mcp_limit_s(timeout_s: float | None) -> float:
    """How long a request to an MCP server may take: CHATTER_MCP_TIMEOUT_S, or the caller's `timeout_s` when shorter."""
    return min(settings.CHATTER_MCP_TIMEOUT_S, timeout_s or float("inf"))


def mcp_server_refresh(*, server: McpServer, user=None, timeout_s: float | None = None) -> McpServer:
    """Ask the server for its tools now (the official MCP client, within CHATTER_MCP_TIMEOUT_S, or `timeout_s` when
    shorter: a call's time left) as `user` (with their own values of its `per_user_headers`: CredentialMissing when
    they have none) and keep them with it: healthy with the new list, or unhealthy with the reason (the last list it
    gave is kept). A listing that a `timeout_s` shorter than CHATTER_MCP_TIMEOUT_S cut short says nothing of the
    server: nothing is written. NotFound when the server was deleted before the answer could be kept: nothing is
    written."""
    headers = mcp_call_headers(server=server, user=user)
    limit_s = _mcp_limit_s(timeout_s)
    now = timezone.now()
    try:
        listed = async_to_sync(mcp_tools_discover)(mcp_endpoint(server=server, headers=headers), timeout_s=limit_s)
    except McpUnreachable as exc:
        if user is not None and (refused := _own_credential_refused(server, exc)) is not None:
            raise CredentialRefused(refused) from None
        if exc.timed_out and limit_s < settings.CHATTER_MCP_TIMEOUT_S:  # the caller's limit, not the server's
            return server
        listed = exc
    return _listing_kept(server, listed, now=now)


def mcp_servers_refresh(*, servers: list[McpServer]) -> None:
    """mcp_server_refresh of each of `servers` (asked as no user: shared servers), asked all at once: the wait is the
    slowest one's, not their sum (a file declaring three servers that never answer held its next request three
    timeouts). A server deleted before its answer could be kept is passed over."""
    if not servers:
        return
    endpoints = [mcp_endpoint(server=server, headers=mcp_call_headers(server=server, user=None)) for server in servers]
    now = timezone.now()

    async def asked() -> list:
        return await asyncio.gather(*(mcp_tools_discover(endpoint, timeout_s=settings.CHATTER_MCP_TIMEOUT_S)
                                      for endpoint in endpoints), return_exceptions=True)

    for server, listed in zip(servers, async_to_sync(asked)()):
        if isinstance(listed, BaseException) and not isinstance(listed, McpUnreachable):
            raise listed
        try:
            _listing_kept(server, listed, now=now)
        except NotFound:  # removed meanwhile
            pass


def _listing_kept(server: McpServer, listed: ToolList | McpUnreachable, *, now) -> McpServer:
    """What the server answered its listing (or why it could not be asked) kept with it: healthy with the new list,
    or unhealthy with the reason; NotFound when it was deleted meanwhile."""
    if isinstance(listed, McpUnreachable):
        fields = {"health": McpServer.Health.UNHEALTHY, "last_error": str(listed), "checked_at": now}
    else:
        tools, left_out = _offerable(server, listed)
        fields = {"tools": tools, "tools_refreshed_at": now, "health": McpServer.Health.HEALTHY,
                  "last_error": left_out, "checked_at": now}
    # Kept only while the server is still reached as it was asked: a change meanwhile asked it again (a conditional
    # update; a slow answer of the old address must not overwrite the new one's).
    asked = McpServer.objects.filter(pk=server.pk, url=server.url, transport=server.transport,
                                     headers_encrypted=server.headers_encrypted)
    try:
        with transaction.atomic():
            written = asked.update(**fields)
    except DatabaseError as exc:  # what it answered cannot be kept: the server is registered all the same
        logger.warning("the MCP server %s's tools could not be stored: %s", server.pk, exc)
        fields = {"health": McpServer.Health.UNHEALTHY, "checked_at": now,
                  "last_error": f"its list of tools could not be stored ({type(exc).__name__})"}
        written = asked.update(**fields)
    if not written:  # changed (or deleted) meanwhile: the answer is dropped, the server answered as it is now
        try:
            server.refresh_from_db()
        except McpServer.DoesNotExist:
            raise NotFound("MCP server not found") from None
        return server
    for field, value in fields.items():
        setattr(server, field, value)
    return server


def _offerable(server: McpServer, listed: ToolList) -> tuple[list[dict], str]:
    """The tools whose qualified names a model can be offered, each name once, each schema at most MAX_SCHEMA_BYTES,
    and what says which were left out ("" for none): those no model takes, those listed again under a name listed
    before and those whose schema is too large, by name, and those past the MAX_TOOLS a server's list keeps, by
    number."""
    said, kept, unnamed, twice, oversized, named = [], [], [], [], [], set()
    for tool in listed.tools:
        if not tool_name_offerable(f"{server.name}{QUALIFIER}{tool['name']}"):
            unnamed.append(tool["name"])
        elif tool["name"] in named:  # a model is offered one function of a name (providers refuse two)
            twice.append(tool["name"])
        elif _schema_bytes(tool["input_schema"]) > MAX_SCHEMA_BYTES:
            oversized.append(tool["name"])
        else:
            named.add(tool["name"])
            kept.append(tool)
    if unnamed:
        said.append(f"left out {len(unnamed)} tool(s) whose name as {server.name}{QUALIFIER}<tool> a model cannot be "
                    f"offered (at most 64 letters, digits, _ and -): {_names_shown(unnamed)}")
    if twice:
        said.append(f"left out {len(twice)} tool(s) listed again under a name listed before (the first of each "
                    f"name is kept): {_names_shown(twice)}")
    if oversized:
        said.append(f"left out {len(oversized)} tool(s) whose input schema is over {MAX_SCHEMA_BYTES} bytes (as "
                    f"compact JSON): {_names_shown(oversized)}")
    if listed.cut or listed.unread:
        what = [f"{listed.cut} tool(s)"] if listed.cut else []
        what += ["those of the pages not asked for"] if listed.unread else []
        past = f"the first {MAX_TOOLS}" if len(listed.tools) >= MAX_TOOLS else f"its first {MAX_PAGES} pages"
        said.append(f"left out {' and '.join(what)} past {past} (a server's list is cut at {MAX_TOOLS} tools, "
                    f"{MAX_PAGES} pages)")
    return kept, "; ".join(said)


def _schema_bytes(schema) -> int:
    return len(json.dumps(schema, ensure_ascii=False, separators=(",", ":")).encode())


def _names_shown(names: list[str]) -> str:
    shown = ", ".join(repr(name[:LEFT_OUT_NAME_CHARS]) for name in names[:LEFT_OUT_SHOWN])
    return shown + (f" and {len(names) - LEFT_OUT_SHOWN} more" if len(names) > LEFT_OUT_SHOWN else "")


def mcp_tool_run(*, user, name: str, arguments: dict, timeout_s: float | None = None) -> ToolResult:
    """Call the MCP tool `<server>__<tool>` that `user` may call (ToolUnavailable otherwise), with the server's
    headers, within CHATTER_MCP_TIMEOUT_S (or `timeout_s`, when shorter: a run's own limits), its text capped at
    CHATTER_MCP_MAX_RESULT_BYTES. A server asking for each user's own headers gets `user`'s (CredentialMissing, a
    ToolUnavailable, when they have set none). A server that could not be asked is marked unhealthy with the reason
    (and healthy again once it answers); the result then says so."""
    server, tool = mcp_tool_get(user=user, name=name)
    return mcp_server_tool_run(server=server, user=user, tool=tool, arguments=arguments, timeout_s=timeout_s)


def mcp_server_tool_run(*, server: McpServer, user, tool: str, arguments: dict,
                        timeout_s: float | None = None) -> ToolResult:
    """mcp_tool_run for a server and tool already found for `user` (mcp_tool_get): a run's tools path finds them
    once for both the call and its row."""
    headers = mcp_call_headers(server=server, user=user)
    limit_s, started = _mcp_limit_s(timeout_s), time.monotonic()
    try:
        result = mcp_pool().call(mcp_tool_call, mcp_endpoint(server=server, headers=headers), tool=tool,
                                 arguments=arguments, timeout_s=limit_s,
                                 max_result_bytes=settings.CHATTER_MCP_MAX_RESULT_BYTES)
    except McpUnreachable as exc:
        return ToolResult(ok=False, text="", error=mcp_server_unreachable(server, failure=exc))
    mcp_server_health_note(server, error="")
    return mcp_tool_gone_check(server=server, user=user, tool=tool, result=result,
                               time_left_s=limit_s - (time.monotonic() - started))


def mcp_tool_gone_check(*, server: McpServer, user, tool: str, result: ToolResult,
                        time_left_s: float | None = None) -> ToolResult:
    """A call that failed saying the server has no such tool: the server's tools are asked for again as `user` (and
    kept with it, so no later run is offered the tool) within the call's `time_left_s`, if any is left; when it no
    longer lists the tool, the result says so."""
    if result.ok or not _tool_gone(result.error, tool) or (time_left_s is not None and time_left_s <= 0):
        return result
    try:
        mcp_server_refresh(server=server, user=user, timeout_s=time_left_s)
    except CredentialMissing:  # (the call was made with the user's own headers: they have them)
        return result
    except NotFound:  # deleted meanwhile: no later run is offered its tools
        return result
    if tool in {each["name"] for each in server.tools}:
        return result
    return ToolResult(ok=False, text="", truncated=result.truncated, error=(
        f"the MCP server {server.name!r} no longer offers the tool {tool!r} (its list of tools was refreshed): "
        f"{result.error}"))


def _tool_gone(error: str, tool: str) -> bool:
    """What servers answer a call of a tool they do not have: "Unknown tool: <name>" (the MCP spec's example
    error, the Python SDK's servers), "Tool <name> not found" (the TypeScript SDK's)."""
    said = error.lower()
    return "unknown tool" in said or f"tool {tool.lower()} not found" in said


REFUSED_CREDENTIAL = (401, 403)  # statuses a server answers a credential it does not accept


def mcp_server_unreachable(server: McpServer, *, failure: McpUnreachable) -> str:
    """What a call that could not ask the server tells its caller (the JSON-workflow path's and the Python-graph
    path's alike). The server is marked unhealthy with it, unless it refused the caller's own credential: a 401 or
    403 from a server with `per_user_headers` is that user's, and says nothing of the server for others."""
    if (refused := _own_credential_refused(server, failure)) is not None:
        return refused
    mcp_server_health_note(server, error=str(failure))
    return f"the MCP server {server.name!r} could not be asked: {failure}"


def _own_credential_refused(server: McpServer, failure: McpUnreachable) -> str | None:
    """What says the server refused the caller's own credential (a 401 or 403 from a server with
    `per_user_headers`), or None when the failure is the server's."""
    if not server.per_user_headers or failure.status not in REFUSED_CREDENTIAL:
        return None
    return (f"the MCP server {server.name!r} refused your own credentials ({failure}): set them again with "
            f"PUT /api/v1/tools/servers/{server.pk}/credentials/")


def mcp_server_health_note(server: McpServer, *, error: str) -> None:
    """What a call found (the JSON-workflow path's and the Python-graph path's alike): `error`, why the server
    could not be asked, marks it unhealthy with it; "" (it answered) marks an unhealthy or unknown server healthy
    again (a healthy one is not written)."""
    if not error and server.health == McpServer.Health.HEALTHY:
        return
    fields = {"health": McpServer.Health.UNHEALTHY if error else McpServer.Health.HEALTHY, "last_error": error,
              "checked_at": timezone.now()}
    McpServer.objects.filter(pk=server.pk).update(**fields)
    for field, value in fields.items():
        setattr(server, field, value)


def mcp_credential_set(*, server: McpServer, user, headers: dict[str, str], ip: str | None = None) -> McpCredential:
    """`user`'s own values of the server's `per_user_headers` (all of them, no others), encrypted, replacing any
    they set before; audited `mcp_credential.set` with the values masked. NotFound when the server was deleted
    meanwhile."""
    with transaction.atomic():
        server = mcp_server_locked(server)
        wanted = {name.lower(): name for name in server.per_user_headers}
        if not wanted:
            raise InvalidInput(f"the MCP server {server.name!r} asks its users for no headers of their own", details=[
                {"path": "headers", "code": "invalid", "message": "this server has no per_user_headers"}])
        given = {name.lower(): name for name in headers}
        if given.keys() != wanted.keys():
            message = (f"the MCP server {server.name!r} asks each user for exactly these headers: "
                       f"{', '.join(server.per_user_headers)}")
            raise InvalidInput(message, details=[{"path": "headers", "code": "invalid", "message": message}])
        encrypted = secret_encrypt(json.dumps({wanted[key]: headers[name] for key, name in given.items()},
                                              sort_keys=True))
        credential, _ = McpCredential.objects.update_or_create(
            server=server, user=user, defaults={"headers_encrypted": encrypted,
                                                "header_names": sorted(server.per_user_headers)})
        audit_record(action="mcp_credential.set", actor=user, target=server, ip=ip,
                     data=_credential_audited(server, credential))
    return credential


def mcp_credential_delete(*, server: McpServer, user, ip: str | None = None) -> None:
    """Forget `user`'s own header values for the server (audited `mcp_credential.removed`); NotFound if none."""
    with transaction.atomic():
        server = mcp_server_locked(server)
        credential = McpCredential.objects.filter(server=server, user=user).first()
        if credential is None:
            raise NotFound("you have set no credentials for this MCP server")
        credential.delete()
        audit_record(action="mcp_credential.removed", actor=user, target=server, ip=ip,
                     data=_credential_audited(server, credential))


def _credential_audited(server: McpServer, credential: McpCredential) -> dict:
    return {"server": server.name, "user_id": credential.user_id,
            "headers": {name: REDACTED for name in credential.header_names}}


def mcp_server_editable_check(*, server: McpServer, actor, refresh: bool = False) -> None:
    """Only its owner changes a server; staff may also change a shared one. Forbidden otherwise (whoever may see
    a shared server may not change it). A server the operator declared is changed in its file only (staff may
    still ask it for its tools again: `refresh`)."""
    if server.declared and not (refresh and actor.is_staff):
        raise Forbidden(f"the MCP server {server.name!r} is declared by the operator (CHATTER_MCP_SERVERS_FILE): "
                        "it is changed there, not through the API")
    if server.owner_id != actor.pk and not (actor.is_staff and server.shared):
        raise Forbidden("only the server's owner (or staff, for a shared server) may change it")


def _headers_set(server: McpServer, headers: dict[str, str]) -> None:
    server.headers_encrypted = secret_encrypt(json.dumps(headers, sort_keys=True)) if headers else ""
    server.header_names = sorted(headers)


def _saved(server: McpServer) -> None:
    try:
        with transaction.atomic():
            server.save()
    except IntegrityError:
        message = ("a shared server already has this name" if server.shared
                   else "you already have a server with this name")
        raise InvalidInput(message, details=[{"path": "name", "code": "unique", "message": message}]) from None


def _audited(server: McpServer) -> dict:
    """What an audit row says of a server: never a header's value."""
    return {"name": server.name, "url": server.url, "transport": server.transport,
            "headers": {name: REDACTED for name in server.header_names},
            "per_user_headers": server.per_user_headers, "shared": server.shared,
            "enabled": server.enabled, "owner_id": server.owner_id}
