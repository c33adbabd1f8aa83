"""MCP (the Model Context Protocol) on /langgraph/mcp: the caller's assistants as tools, as LangGraph's Agent Server
exposes its graphs, over MCP's Streamable HTTP transport, stateless as the stock server's endpoint is
(docs/api/langgraph.md#mcp).

The transport is a view of /langgraph/ (agent_server.views.McpEndpoint, a LangGraphView): the key, its scopes, the
run throttle and the body-size limit are every /langgraph/ route's, refused in its `{"detail": …}` shape; what
reaches the protocol is answered in JSON-RPC's. A tool call runs the assistant as `POST /runs/wait` without a
thread does (agent_server.runs.run_start): one run, accounted like any other; a failed run is `isError: true`.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Literal

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError
from rest_framework.exceptions import ParseError
from rest_framework.request import Request
from rest_framework.response import Response

from agent_server.assistants import assistant_search
from agent_server.bodies import RunCreate
from agent_server.http import READ
from agent_server.meta import SERVER_VERSION
from agent_server.run_selectors import run_as_dict, run_interrupts, run_values
from agent_server.runs import run_cancel, run_start
from core.api.parsers import json_parse
from core.api.throttling import RUNS
from core.errors import Conflict, InvalidInput, NotFound
from workflows.models import WorkflowExecution

logger = logging.getLogger(__name__)
Status = WorkflowExecution.Status
Mode = WorkflowExecution.Mode

# The protocol revisions spoken, newest first: initialize agrees on the client's when it is one of them, else
# offers the newest. (2026-07-28's stateless envelope, `server/discover`, is not spoken: such a client's probe is
# refused and it falls back to initialize, as MCP's clients do.)
PROTOCOL_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
VERSION_HEADER = "MCP-Protocol-Version"
SERVER_INFO = {"name": "chatter", "title": "Chatter", "version": SERVER_VERSION}
INSTRUCTIONS = ("Each tool runs one of your Chatter assistants once, without a thread (nothing is remembered "
                "between calls); every run is recorded with its tokens and cost.")

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602

TOOL_NAME_MAX = 128  # MCP's tool names: 1 to 128 of A-Z a-z 0-9 _ - .
_NOT_IN_TOOL_NAMES = re.compile(r"[^A-Za-z0-9_.-]")
PAGE_SIZE = 100  # tools per tools/list page
ALL_ASSISTANTS = 10**6

CHAT_INPUT_SCHEMA = {
    "type": "object",
    "properties": {
        "message": {"type": "string", "description": "Your message to the assistant (one chat turn)."},
        "messages": {
            "type": "array",
            "description": "Or LangGraph-style input messages: the last user message is the turn, a system message "
                           "sets the system prompt.",
            "items": {"type": "object", "properties": {
                "role": {"type": "string", "enum": ["user", "assistant", "system", "tool"]},
                "content": {"type": "string"}}, "required": ["role", "content"]},
        },
    },
    "additionalProperties": False,
}
ANY_OBJECT_SCHEMA = {"type": "object"}


class RpcError(Exception):
    """An answer in JSON-RPC's error shape; `http_status` 400 for a message the transport cannot take."""

    def __init__(self, code: int, message: str, *, request_id=None, http_status: int = 200):
        super().__init__(message)
        self.code, self.message, self.request_id, self.http_status = code, message, request_id, http_status


# --- the messages a client sends ------------------------------------------------------------------------------

class Message(BaseModel):
    """One JSON-RPC 2.0 message from the client: a request (method and id), a notification (method, no id), or
    its answer to a request of the server's (result or error, no method: this server makes none)."""

    model_config = ConfigDict(extra="ignore")
    jsonrpc: Literal["2.0"]
    id: StrictInt | StrictStr | None = None
    method: StrictStr | None = None
    params: dict[str, Any] | None = None

    @property
    def is_request(self) -> bool:
        return self.method is not None and "id" in self.model_fields_set


class InitializeParams(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    protocol_version: StrictStr = Field(alias="protocolVersion")


class ListParams(BaseModel):
    model_config = ConfigDict(extra="ignore")
    cursor: StrictStr | None = None


class CallParams(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: StrictStr
    arguments: dict[str, Any] | None = None


class ChatArguments(BaseModel):
    """What a chat assistant's tool takes (CHAT_INPUT_SCHEMA)."""

    model_config = ConfigDict(extra="forbid")
    message: StrictStr | None = None
    messages: list[dict[str, Any]] | None = None

    def as_input(self) -> dict:
        messages = [*(self.messages or []), *([{"role": "user", "content": self.message}] if self.message else [])]
        if not any(str(m.get("role") or m.get("type") or "").lower() in ("user", "human") for m in messages):
            raise InvalidInput("give `message`: the text to send to the assistant")
        return {"messages": messages}


def _body(request: Request) -> bytes:
    """The request's body as sent (agent_server.http.BodyBytes: size-limited like every body)."""
    return request.data if isinstance(request.data, bytes) else b""


def _message_of(request: Request) -> Message:
    """The request's one message; RpcError (HTTP 400) when it is not JSON, or not a JSON-RPC message."""
    try:
        raw = json_parse(_body(request))
    except ParseError as exc:
        raise RpcError(PARSE_ERROR, f"Parse error: {exc.detail}", http_status=400) from None
    if isinstance(raw, list):
        raise RpcError(INVALID_REQUEST, "Invalid Request: send one message per POST (batches are not supported)",
                       http_status=400)
    if not isinstance(raw, dict):
        raise RpcError(INVALID_REQUEST, "Invalid Request: a JSON-RPC 2.0 message is an object", http_status=400)
    request_id = _id_of(raw)
    try:
        message = Message.model_validate(raw)
    except ValidationError as exc:
        raise RpcError(INVALID_REQUEST, f"Invalid Request: {_first_error(exc)}", request_id=request_id,
                       http_status=400) from None
    if message.method is not None and "id" in message.model_fields_set and message.id is None:
        raise RpcError(INVALID_REQUEST, "Invalid Request: a request's id is a string or an integer", http_status=400)
    if message.method is None and not ({"result", "error"} & raw.keys()):
        raise RpcError(INVALID_REQUEST, "Invalid Request: no method", request_id=request_id, http_status=400)
    return message


def _id_of(raw: dict):
    """The message's id if it is a valid one, to answer a message refused as a whole by it where possible."""
    value = raw.get("id")
    return value if isinstance(value, (str, int)) and not isinstance(value, bool) else None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]


def _params(model: type[BaseModel], message: Message):
    try:
        return model.model_validate(message.params or {})
    except ValidationError as exc:
        raise RpcError(INVALID_PARAMS, f"Invalid params: {_first_error(exc)}", request_id=message.id) from None


def _requested_method(request: Request) -> str | None:
    """The method the request's message names, when it is one well-formed message (None otherwise: the handler
    answers it as the protocol says)."""
    try:
        raw = json_parse(_body(request))
    except ParseError:
        return None
    method = raw.get("method") if isinstance(raw, dict) else None
    return method if isinstance(method, str) else None


def mcp_scope(request: Request) -> str:
    """The key scope a message needs: a tool call starts a run ("runs"); the rest reads ("read")."""
    return RUNS if _requested_method(request) == "tools/call" else READ


def mcp_starts_run(request: Request) -> bool:
    """Whether the message takes one from the run throttle: a tool call does; initialize, listing, ping do not."""
    return mcp_scope(request) == RUNS


# --- the transport --------------------------------------------------------------------------------------------

def mcp_answer(request: Request, *, user) -> HttpResponse:
    """The answer to one POST: 202 without a body for a notification (or a client's answer), else a JSON-RPC
    response as JSON."""
    try:
        message = _message_of(request)
        if message.method != "initialize":
            _version_checked(request, message)
        if not message.is_request:
            return HttpResponse(status=202)
        result = _method_answer(message, request=request, user=user)
    except RpcError as exc:
        return Response({"jsonrpc": "2.0", "id": exc.request_id, "error": {"code": exc.code, "message": exc.message}},
                        status=exc.http_status)
    return Response({"jsonrpc": "2.0", "id": message.id, "result": result})


def _version_checked(request: Request, message: Message) -> None:
    """After initialize a client names the agreed revision in a header (none: 2025-03-26's clients, which send
    none); one not spoken here is a 400, as the transport's specification says."""
    version = request.headers.get(VERSION_HEADER)
    if version is not None and version not in PROTOCOL_VERSIONS:
        raise RpcError(INVALID_REQUEST, f"Bad Request: unsupported {VERSION_HEADER} {version!r} (supported: "
                                        f"{', '.join(PROTOCOL_VERSIONS)})", request_id=message.id, http_status=400)


def _method_answer(message: Message, *, request: Request, user) -> dict:
    if message.method == "initialize":
        asked = _params(InitializeParams, message).protocol_version
        return {"protocolVersion": asked if asked in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[0],
                "capabilities": {"tools": {}}, "serverInfo": SERVER_INFO, "instructions": INSTRUCTIONS}
    if message.method == "ping":
        return {}
    if message.method == "tools/list":
        cursor = _params(ListParams, message).cursor
        return tools_page(user=user, cursor=cursor, request_id=message.id)
    if message.method == "tools/call":
        params = _params(CallParams, message)
        return tool_call(user=user, name=params.name, arguments=params.arguments or {}, api_key=request.auth,
                         request_id=message.id)
    raise RpcError(METHOD_NOT_FOUND, f"Method not found: {message.method}", request_id=message.id)


# --- tools ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tool:
    name: str
    assistant: dict  # as assistant_search gives it

    @property
    def runs_registered_graph(self) -> bool:
        return self.assistant["graph_id"] in settings.CHATTER_GRAPHS


def tools_of(*, user) -> list[Tool]:
    """The user's assistants as tools, in assistant_search's order, each with its own valid, unique name: an
    assistant id that is a valid tool name is the name (the first one that claims it, as assistant_row resolves
    ids in that order); any other is made one (characters outside A-Z a-z 0-9 _ - . become _, and a suffix _2,
    _3… keeps it apart)."""
    assistants = assistant_search(user=user, limit=ALL_ASSISTANTS)
    names: list[str | None] = [None] * len(assistants)
    taken: set[str] = set()
    for as_is in (True, False):
        for index, assistant in enumerate(assistants):
            if names[index] is not None:
                continue
            base = _NOT_IN_TOOL_NAMES.sub("_", assistant["assistant_id"])[:TOOL_NAME_MAX] or "assistant"
            if as_is and (base != assistant["assistant_id"] or base in taken):
                continue
            name, n = base, 2
            while name in taken:
                suffix = f"_{n}"
                name, n = base[:TOOL_NAME_MAX - len(suffix)] + suffix, n + 1
            taken.add(name)
            names[index] = name
    return [Tool(name=name, assistant=assistant) for name, assistant in zip(names, assistants)]


def tools_page(*, user, cursor: str | None, request_id=None) -> dict:
    """tools/list: a page of the user's tools; `nextCursor` where more follow."""
    try:
        offset = int(cursor) if cursor else 0
    except ValueError:
        offset = -1
    if offset < 0:
        raise RpcError(INVALID_PARAMS, "Invalid params: unknown cursor", request_id=request_id)
    tools = tools_of(user=user)
    page = {"tools": [tool_as_dict(tool) for tool in tools[offset:offset + PAGE_SIZE]]}
    if offset + PAGE_SIZE < len(tools):
        page["nextCursor"] = str(offset + PAGE_SIZE)
    return page


def tool_as_dict(tool: Tool) -> dict:
    assistant = tool.assistant
    return {
        "name": tool.name, "title": assistant["name"],
        "description": assistant["description"] or f"Runs the assistant {assistant['name']!r}.",
        "inputSchema": graph_input_schema(assistant["graph_id"]) if tool.runs_registered_graph else CHAT_INPUT_SCHEMA,
        "_meta": {"chatter/assistant_id": assistant["assistant_id"], "chatter/graph_id": assistant["graph_id"]},
    }


_graph_schemas: dict[str, tuple[Any, dict]] = {}  # name: (the compiled graph it was read from, its schema)


def graph_input_schema(name: str) -> dict:
    """A registered graph's input schema, as LangGraph gives it (`get_input_jsonschema()`); a graph whose schema
    cannot be made (a factory that needs what only a run has, a state type pydantic cannot read) takes any object.
    Kept per compiled graph: a compiled graph is loaded once, a factory builds a new one each time."""
    from engine.python_graphs import graph_load

    try:
        graph = graph_load(name)
        kept = _graph_schemas.get(name)
        if kept is not None and kept[0] is graph:
            return kept[1]
        schema = graph.get_input_jsonschema()
    except Exception as exc:  # the graph's own code, whatever it raises: the tool is still listed
        logger.warning("graph %r: no input schema for its MCP tool (%s: %s)", name, type(exc).__name__, exc)
        return ANY_OBJECT_SCHEMA
    schema = input_schema_compact(schema) if schema.get("type") == "object" else ANY_OBJECT_SCHEMA  # (MCP's
    # tool input is an object)
    _graph_schemas[name] = (graph, schema)
    return schema


MESSAGE_DEF = "Message"
MESSAGE_SCHEMA = {  # a message as a caller writes one (LangGraph's add_messages takes it as it takes its class)
    "type": "object",
    "description": "A message: its role (user, assistant, system, tool) or LangChain type, and its content.",
    "properties": {"role": {"type": "string"}, "type": {"type": "string"},
                   "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
                   "id": {"type": "string"}, "name": {"type": "string"}, "tool_call_id": {"type": "string"},
                   "tool_calls": {"type": "array", "items": {"type": "object"}}},
    "required": ["content"],
}


def _is_message_class(name: str) -> bool:
    import langchain_core.messages as lc_messages
    from langchain_core.messages import BaseMessage

    found = getattr(lc_messages, name, None)
    return isinstance(found, type) and issubclass(found, BaseMessage)


def input_schema_compact(schema: dict) -> dict:
    """A graph's input schema as a tool's: LangChain's message classes (pydantic writes each one, its tool calls
    and usage, in full: about 20 KB for any graph with messages) are one message object, as a caller writes it;
    the rest is the graph's own, its definitions that are no longer referred to left out."""
    defs = schema.get("$defs") or {}
    messages = {name for name in defs if _is_message_class(name)}
    if not messages:
        return schema

    def rewritten(value):
        if isinstance(value, dict):
            ref = value.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/") and ref[len("#/$defs/"):] in messages:
                return {"$ref": f"#/$defs/{MESSAGE_DEF}"}
            value = {key: rewritten(item) for key, item in value.items() if key != "$defs"}
            one_of = value.get("oneOf") or value.get("anyOf")
            if isinstance(one_of, list) and one_of and all(item == {"$ref": f"#/$defs/{MESSAGE_DEF}"}
                                                         for item in one_of):
                return {"$ref": f"#/$defs/{MESSAGE_DEF}"}  # any of the message classes: a message
            return value
        if isinstance(value, list):
            return [rewritten(item) for item in value]
        return value

    compact = rewritten(schema)
    kept = {name: rewritten(definition) for name, definition in defs.items() if name not in messages}
    kept[MESSAGE_DEF] = MESSAGE_SCHEMA
    used: set[str] = set()
    pending = [compact]
    while pending:  # the definitions the schema refers to, directly or through others
        value = pending.pop()
        if isinstance(value, dict):
            ref = value.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/") and ref[len("#/$defs/"):] not in used:
                used.add(ref[len("#/$defs/"):])
                pending.append(kept.get(ref[len("#/$defs/"):]))
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    compact["$defs"] = {name: definition for name, definition in kept.items() if name in used}
    return compact


def tool_named(*, user, name: str, request_id=None) -> Tool:
    for tool in tools_of(user=user):
        if tool.name == name:
            return tool
    raise RpcError(INVALID_PARAMS, f"Unknown tool: {name}", request_id=request_id)


def tool_call(*, user, name: str, arguments: dict, api_key, request_id=None) -> dict:
    """tools/call: run the tool's assistant once without a thread, as POST /runs/wait does: here, to its end or its
    question (a run without a thread is never queued behind another)."""
    tool = tool_named(user=user, name=name, request_id=request_id)
    try:
        run_input = arguments if tool.runs_registered_graph else _chat_input(arguments)
        body = RunCreate(assistant_id=tool.assistant["assistant_id"], input=run_input)
        started = run_start(owner=user, body=body, mode=Mode.SYNC, api_key=api_key)
    except (InvalidInput, NotFound) as exc:  # what the model gave (or the graph it names) does not do
        return _error_result(exc.message)
    return tool_result(execution=started.execution, inputs=started.inputs, actor=user)


def _chat_input(arguments: dict) -> dict:
    try:
        return ChatArguments.model_validate(arguments).as_input()
    except ValidationError as exc:
        raise InvalidInput(f"invalid arguments: {_first_error(exc)}") from None


def tool_result(*, execution: WorkflowExecution, inputs: list[dict], actor) -> dict:
    """The run's answer as a tool's result. A run that stopped to ask a person (an interrupt) is cancelled: a
    stateless call has no thread to answer it on."""
    execution.refresh_from_db()
    if execution.status == Status.WAITING:
        questions = run_interrupts(execution)
        try:
            execution = run_cancel(execution=execution, actor=actor)
        except Conflict:
            execution.refresh_from_db()  # answered or ended meanwhile
        return _error_result("the assistant stopped to ask for input, which a tool call cannot give (run it on a "
                             f"thread instead); it asked: {_json(questions)}", execution=execution)
    values = json.loads(_json(run_values(execution=execution, inputs=inputs)))
    error = values.get("__error__")
    if error is not None:
        return _error_result(f"the run failed ({error.get('error')}): {error.get('message')}", execution=execution)
    return {"content": [{"type": "text", "text": _answer_text(values)}], "structuredContent": values,
            "isError": False, "_meta": _run_meta(execution)}


def _answer_text(values: dict) -> str:
    """The last AI message's text when the output ends with one (a chat's answer), else the output as JSON."""
    messages = values.get("messages")
    last = messages[-1] if isinstance(messages, list) and messages else None
    if isinstance(last, dict) and last.get("type") in ("ai", "AIMessageChunk"):
        content = last.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "".join(block.get("text", "") for block in content if isinstance(block, dict))
    return _json(values)


def _error_result(text: str, *, execution: WorkflowExecution | None = None) -> dict:
    result = {"content": [{"type": "text", "text": text}], "isError": True}
    if execution is not None:
        result["_meta"] = _run_meta(execution)
    return result


def _run_meta(execution: WorkflowExecution) -> dict:
    """The run behind a result, with Chatter's accounting (as a run's `chatter` field on /langgraph/)."""
    return {"chatter/run": {"run_id": str(execution.pk), **run_as_dict(execution)["chatter"]}}


def _json(value) -> str:
    return json.dumps(value, cls=DjangoJSONEncoder, ensure_ascii=False)
