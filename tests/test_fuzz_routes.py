"""Every route of /api/v1/, /langgraph/ and /v1/ (walked from the URL conf), with every method, its path parameters
filled with the user's real ids and each in turn with a malformed one (the others real), is sent every kind of bad
input: NUL in body strings, keys, query values and paths; ORM lookup names as metadata and filter keys; bodies that
are not objects; wrong types; huge numbers; invalid JSON, oversize bodies and the wrong content type. No answer is a
5xx, and every 4xx is in the surface's own error shape (tests/surfaces.py). Each request to a sync view runs in a
transaction rolled back after it, so every request meets the same rows (the async views, which wait for runs,
change none when refused). The admin's and the live page's routes get malformed ids as staff: no 5xx.

What a schema can say is left to tests/api/test_schema_fuzz.py, which fuzzes every operation of the OpenAPI schema
(all of /api/v1/ and /v1/ but the MCP server writes) field by field: those operations are not sent here the bodies
it sends them in kind (TYPED_BY_THE_SCHEMA_FUZZ: the body as null, a number, a text, an array; each field's wrong
types; text/plain; multipart without a usable boundary). Everything else is sent to every route: what no schema
says (NUL, lookups, huge numbers, broken or deep JSON, size, the other content types), junk query values, malformed
ids, undeclared methods (which the schema fuzz sends as OPTIONS, TRACE and QUERY only), and all of it to /langgraph/
and to the routes no schema documents; but a DELETE that reads no body (it answers invalid JSON 2xx) is sent no other
body (UNREAD_BODIES says why that loses nothing)."""
from __future__ import annotations

import ipaddress
import json
import re
from asyncio import iscoroutinefunction
from urllib.parse import unquote

import pytest
from asgiref.sync import async_to_sync
from django.db import transaction
from django.http import Http404
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from drf_spectacular.generators import SchemaGenerator

from core.api.throttling import RUNS
from tests.factories import ApiTokenFactory
from tests.surfaces import assert_surface_error

# Transactional: the async views of /langgraph/ reach the ORM through database_sync_to_async, which closes the
# connection between calls; the other views' requests are each rolled back to a savepoint instead.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.fuzz]  # fuzz: not in make test-quick (pytest.ini)
SURFACES = ("api/v1/", "langgraph/", "v1/")
UNFUZZED = ("api/v1/schema/", "api/v1/docs/")  # read no input but ?format and ?lang; tests/api/test_schema.py
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
LOOKUP_LIKE = {"regex": "(", "iregex": "[", "isnull": True, "has_keys": "a", "has_any_keys": 1, "contains": "x",
               "a__b": 1, "startswith": None, "in": "x", "gt": {"a": 1}}
FIELDS = ("metadata", "filter", "values", "name", "message", "messages", "title", "content", "assistant_id", "input",
          "config", "context", "stream_mode", "graph", "nodes", "edges", "cron", "schedule", "timezone", "scopes",
          "expires_at", "model", "provider", "temperature", "max_tokens", "conversation_id", "template", "definition_id",
          "key", "value", "namespace", "namespace_prefix", "prefix", "suffix", "max_depth", "checkpoint",
          "checkpoint_id", "as_node", "supersteps", "thread_id", "ids", "if_exists", "status", "limit", "offset",
          "sort_by", "sort_order", "select", "enabled", "end_time", "webhook", "after_seconds", "command", "username",
          "password", "scope", "target_id", "period", "limit_usd", "limit_tokens", "mode", "answer", "answers",
          "stream", "background", "n", "stop", "tools", "tool_choice", "top_p", "seed", "user", "before", "graph_id",
          "description", "version")
# What /langgraph/ reads; /api/v1/'s: its OpenAPI schema.
QUERY_NAMES = {"limit", "offset", "status", "namespace", "key", "wait", "subgraphs", "stream_mode",
               "cancel_on_disconnect", "before", "delete_threads"}


def raw(value) -> str:
    return json.dumps(value)


BODIES = {  # name: (content type, body)
    "nul_in_values": ("application/json", raw({name: "a\x00b" for name in FIELDS} | {"metadata": {"k": "a\x00"},
                                                                                     "namespace": ["a\x00"]})),
    "nul_in_keys": ("application/json", raw({"a\x00b": 1, "metadata": {"k\x00": 1}})),
    "lookups_as_keys": ("application/json", raw({"metadata": LOOKUP_LIKE, "filter": LOOKUP_LIKE, "values": LOOKUP_LIKE,
                                                 "value": LOOKUP_LIKE, "namespace": ["n"], "namespace_prefix": ["n"],
                                                 "key": "k"})),
    "array": ("application/json", "[]"), "string": ("application/json", '"x"'), "number": ("application/json", "1"),
    "null": ("application/json", "null"),
    "wrong_types": ("application/json", raw({name: [{"x": [1]}] if i % 3 == 0 else ("x" if i % 3 == 1 else {"a": 1})
                                             for i, name in enumerate(FIELDS)})),
    "huge_numbers": ("application/json", raw({name: 10**40 for name in FIELDS} | {"temperature": 1e308})),
    "huge_negative_numbers": ("application/json", raw({name: -10**40 for name in FIELDS} | {"top_p": -1e308})),
    "huge_number_text": ("application/json", '{"limit": 1e400, "offset": 123456789012345678901234567890}'),
    "invalid_json": ("application/json", '{"metadata": '),
    "deep": ("application/json", "[" * 3000 + "]" * 3000),
    "text_plain": ("text/plain", "hello"),
    "form": ("application/x-www-form-urlencoded", "message=hi&metadata=x"),
    "oversize": ("application/json", raw({"input": "x" * 1_100_000})),  # over CHATTER_MAX_REQUEST_BYTES
    "octet_stream": ("application/octet-stream", "\x00\xff"),
    "multipart_garbage": ("multipart/form-data; boundary=x", "--x\r\nContent-Disposition: form-data\r\n\r\nx"),
    "no_content_type": ("", raw({"name": "x"})),
}


JUNK_VALUES = ["9" * 40, "(%5B%27", "2024-13-45T99:99", "-1", "1e400"]


# The bodies tests/api/test_schema_fuzz.py sends, in their kind, to every operation its schema gives a JSON body: the
# body as null, a number, a text and an array; each field (nested ones too) given each kind of wrong value its parser
# tells apart; text/plain and multipart without a boundary, which DRF refuses as it refuses any content type the view
# has no parser for (an operation that takes multipart still gets the garbage one here). Those operations get the
# other bodies here: what a schema cannot say (NUL, ORM lookups as keys, huge numbers, broken JSON, nesting, size, the
# other content types).
TYPED_BY_THE_SCHEMA_FUZZ = {"array", "string", "number", "null", "wrong_types", "text_plain", "multipart_garbage"}
# What tests/api/test_schema_fuzz.py leaves out of the schema it fuzzes (its `exclude`s)
UNTYPED = re.compile(r"^/langgraph/|^/api/v1/tools/servers/.*(POST|PATCH)$")

# A DELETE answered 2xx to invalid JSON read no body (every view that reads one parses it with a parser that refuses
# invalid JSON: DRF's JSONParser through request.data, the agent server's self.body()), and no middleware reads a
# body: the other bodies, whatever their content type, size or content, would reach exactly the code its plain
# DELETE (no body) reached, so they are not sent to it. A DELETE that reads its body (the store's items) gets them
# all.
UNREAD_BODIES = "invalid_json"  # sent first


def declared() -> dict[tuple[str, str], tuple[set[str], set[str]]]:
    """{(path with its parameters as X, method): (the query parameters its OpenAPI operation declares, the BODIES
    tests/api/test_schema_fuzz.py sends it in kind)}."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return {(re.sub(r"\{\w+\}", "X", path), method.upper()): (
        {parameter["name"] for parameter in operation.get("parameters", []) if parameter["in"] == "query"},
        typed_bodies(operation.get("requestBody", {}).get("content", {}), f"{path} {method.upper()}"))
        for path, operations in schema["paths"].items() for method, operation in operations.items()}


def typed_bodies(content_types: dict, operation: str) -> set[str]:
    if "application/json" not in content_types or UNTYPED.search(operation):
        return set()
    return TYPED_BY_THE_SCHEMA_FUZZ - ({"multipart_garbage"} if "multipart/form-data" in content_types else set())


def queries(names: set[str]) -> list[str]:
    """Every parameter at once with each junk value, each one alone with each, a NUL, and an unknown format."""
    names = names - {"format"}  # DRF answers an unknown ?format= 404 before it reads the rest
    together = ["&".join(f"{name}={value}" for name in sorted(names)) for value in JUNK_VALUES]
    alone = [f"{name}={value}" for name in sorted(names) for value in JUNK_VALUES[:3]] if len(names) > 1 else []
    return ["q=%00", "format=%28", *together, *alone]


def routes() -> list[str]:
    return [route for route in every_route() if route.startswith(SURFACES) and not route.startswith(UNFUZZED)]


PARAMETER = re.compile(r"<(?:\w+:)?(?P<a>\w+)>|\(\?P<(?P<b>\w+)>[^)]*\)")


def path_of(route: str, fill) -> str:
    return "/" + PARAMETER.sub(lambda m: fill(m.group("a") or m.group("b")), route.replace("^", "").replace("$", ""))


class World:
    """Alice's rows, one of each kind a route may name, made through the API the way a user makes them."""

    def __init__(self, client: Client, headers: dict, mcp_url: str):
        def send(method: str, path: str, body=None) -> dict | list:
            response = client.generic(method, path, json.dumps(body) if body is not None else "",
                                      content_type="application/json", **headers)
            assert response.status_code < 300, (path, response.content)
            return response.json() if response.content else {}

        turn = {"messages": [{"role": "user", "content": "What is 12*7?"}]}
        self.thread = send("POST", "/langgraph/threads", {"metadata": {"team": "a"}})["thread_id"]
        send("POST", f"/langgraph/threads/{self.thread}/runs/wait", {"assistant_id": "universal_chat", "input": turn,
                                                                    "context": {"checkpoints": "every_step"}})
        self.run = send("GET", f"/langgraph/threads/{self.thread}/runs")[0]["run_id"]
        self.checkpoint = next(state["checkpoint"]["checkpoint_id"] for state in send(
            "GET", f"/langgraph/threads/{self.thread}/history") if state["checkpoint"]["checkpoint_id"])
        self.cron = send("POST", "/langgraph/runs/crons", {"assistant_id": "universal_chat", "schedule": "0 7 * * *",
                                                           "input": turn})["cron_id"]
        send("PUT", "/langgraph/store/items", {"namespace": ["n"], "key": "k", "value": {"regex": "("}})
        self.assistant = send("POST", "/langgraph/assistants", {"graph_id": "universal_chat", "name": "a",
                                                                "metadata": {"team": "a"}})["assistant_id"]
        definition = send("POST", "/api/v1/workflows/definitions/from-template/", {"template": "summarize"})["id"]
        graph = {"nodes": [{"id": "start", "type": "start"}, {"id": "end", "type": "end"}],
                 "edges": [{"source": "start", "target": "end"}]}
        self.ids = {
            "keys": send("POST", "/api/v1/keys/", {"name": "ci", "scopes": ["read"]})["id"],
            "budgets": send("POST", "/api/v1/budgets/", {"scope": "user", "period": "day", "limit_tokens": 10**6,
                                                         "mode": "soft"})["id"],
            "executions": self.run, "conversations": self.thread, "workflows/definitions": definition,
            "schedules": send("POST", "/api/v1/schedules/", {"name": "s", "definition_id": definition,
                                                             "cron": "0 7 * * *"})["id"],
            "workflows/templates": send("POST", "/api/v1/workflows/templates/", {"key": "brief", "name": "Brief",
                                                                                 "graph": graph})["id"],
            "documents": send("POST", "/api/v1/documents/", {"title": "Refunds", "content": "14 days."})["id"],
            "pricing": send("GET", "/api/v1/pricing/")["results"][0]["id"],
            "audit/events": send("GET", "/api/v1/audit/events/")["results"][0]["id"],
            "prompts": send("POST", "/api/v1/prompts/", {"name": "support", "prompt": "Help with {{product}}.",
                                                         "labels": ["production"]})["name"],
            "scores": send("POST", "/api/v1/scores/", {"name": "q", "value": 1, "execution": self.run})["id"],
            "datasets": send("POST", "/api/v1/datasets/", {"name": "qa"})["id"],
            "tools/servers": send("POST", "/api/v1/tools/servers/", {"name": "t", "url": mcp_url})["id"],
            "collections": send("POST", "/api/v1/collections/", {"name": "c",
                                                                 "embedding_model": "local/local-embed-1"})["id"],
        }
        self.document = send("POST", f"/api/v1/collections/{self.ids['collections']}/documents/",
                             {"title": "Refunds", "text": "Refunds within 14 days."})["id"]
        self.ids["analytics/prompts"] = self.ids["prompts"]
        send("POST", f"/api/v1/datasets/{self.ids['datasets']}/items/", {"input": "question"})
        self.ids["experiments"] = send("POST", "/api/v1/experiments/", {
            "name": "try", "dataset": self.ids["datasets"], "targets": [{"template": "universal_chat"}],
            "start": False})["id"]

    def real(self, route: str, name: str) -> str:
        named = {"thread_id": self.thread, "run_id": self.run, "cron_id": self.cron, "checkpoint_id": self.checkpoint,
                 "assistant_id": self.assistant, "namespace": "n", "number": "1", "label": "production",
                 "item": "00000000-0000-0000-0000-000000000000",
                 "path": "no/such/route",  # the gateway's catch-all for URLs it does not serve
                 "model": "local-echo-1",  # the gateway's /v1/models/<model>
                 "document_id": self.document}  # a collection's document
        if name in named:
            return str(named[name])
        collection = next(prefix for prefix in self.ids if route.replace("^", "").startswith(f"api/v1/{prefix}/"))
        return str(self.ids[collection])


# A watch answered 2xx streams until its client leaves (a thread's stream, LangGraph's threads.join_stream): its status
# is what is checked; its body, never ending, is not read (tests/agent_server/test_threads.py reads its frames).
WATCHES = re.compile(r"^/langgraph/threads/[^/]+/stream$")


def content_of(response) -> bytes:
    """The whole body, streams read to their end (an error in a stream is an error too)."""
    if not response.streaming:
        return response.content
    if response.is_async:
        async def read() -> bytes:
            return b"".join([chunk async for chunk in response.streaming_content])

        return async_to_sync(read)()
    return b"".join(response.streaming_content)


# Malformed ids: of a UUID's length but not one (all dashes, 36 hex digits, not hex), unknown, huge, unicode, path
# tricks (dot segments, an encoded slash, a semicolon).
JUNK_IDS = ["-" * 36, "0123456789abcdef" * 2 + "0123", "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz", "9" * 40, "a" * 300,
            "é漢字🧨", "..%2F..;a"]
PAGE_JUNK_IDS = ["-" * 36, "9" * 40, "é漢字🧨"]  # the admin's ids are Django's own lookups: fewer kinds


# One test walks every route: make test gives a test file to one worker (--dist loadfile), so shards of it would only
# make the world (and, the test being transactional, empty the database) once each.
@pytest.mark.timeout(1200)  # the four shards' 300 s each: about a minute on a quiet machine, 14 on a loaded one
def test_item_13_no_route_answers_bad_input_with_a_5xx_or_outside_its_surfaces_error_shape(
        alice, staff, mcp_server, settings):
    """Also issue 43 item 13: each path parameter is malformed alone, the others real, so the lookup of each is
    reached (/api/v1/datasets/<id>/items/<36 dashes>/ answered 500); the admin's and the live page's routes too."""
    settings.CHATTER_OUTBOUND_ALLOWED_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"),)  # the real MCP server's
    # The runs throttle would answer 429 before the input is read: every request takes from an allowance it never
    # exhausts (the throttle still runs). Not by clearing the cache before each request: on Redis that also drops
    # the hot reads' version (core.cache.HotReads), so every request read its key, its user, the prices and the
    # templates afresh: about 4,800 statements and three Redis commands a request more in the PostgreSQL + Redis
    # phase, which took twice the CPU of the SQLite one (there the version is in the database).
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {RUNS: "1000000/s"}}
    client = Client(raise_request_exception=False)
    alices, staffs = (token_headers(user) for user in (alice, staff))
    world = World(client, alices, mcp_server.url)
    operations = declared()
    failures: list[str] = []
    sent = 0

    def call(method: str, path: str, *, waits: bool, headers: dict, content_type: str = "application/json",
             body: str = "", query: str = "") -> int:
        nonlocal sent
        sent += 1
        url = f"{path}?{query}" if query else path
        if waits:
            response = client.generic(method, url, body, content_type=content_type, **headers)
        else:
            with transaction.atomic():
                response = client.generic(method, url, body, content_type=content_type, **headers)
                transaction.set_rollback(True)
        content = b"" if response.streaming and WATCHES.match(path) else content_of(response)
        what = f"{method} {url[:200]} {content_type} {body[:60]!r}"
        if response.status_code >= 500:
            failures.append(f"{response.status_code} {what}: {content[:200]!r}")
        elif response.status_code >= 400:
            try:
                assert_surface_error(response.status_code, response.get("Content-Type", ""), content, path=path)
            except (AssertionError, ValueError) as exc:
                failures.append(f"shape {what}: {exc}")
        return response.status_code

    def fuzz(route: str, path: str, *, waits: bool, headers: dict) -> dict[str, set[int]]:
        """{method the route takes: the statuses it answered}"""
        taken = {}
        for method in METHODS:
            status = call(method, path, waits=waits, headers=headers)
            if status == 405:
                continue  # the route does not take this method; its 405 was checked
            statuses = taken[method] = {status}
            names, typed = operations.get(
                (PARAMETER.sub("X", "/" + route.replace("^", "").replace("$", "")), method), (set(), set()))
            for query in queries(QUERY_NAMES if route.startswith("langgraph/") and method == "GET" else names):
                statuses.add(call(method, path, query=query, waits=waits, headers=headers))
            if method != "GET":
                for name, (content_type, body) in sorted(BODIES.items(), key=lambda item: item[0] != UNREAD_BODIES):
                    if name not in typed:
                        status = call(method, path, content_type=content_type, body=body, waits=waits,
                                      headers=headers)
                        statuses.add(status)
                        if method == "DELETE" and name == UNREAD_BODIES and status < 300:
                            break  # it read no body: see UNREAD_BODIES
        return taken

    for route in routes():
        path = path_of(route, lambda name: world.real(route, name))
        waits = iscoroutinefunction(resolve(path).func)
        taken = fuzz(route, path, waits=waits, headers=alices)
        if any(403 in statuses for statuses in taken.values()):
            fuzz(route, path, waits=waits, headers=staffs)  # what only staff may send (prices, audit verify)
        for name in parameters(route):
            for junk in JUNK_IDS:
                junk_path = path_of(route, lambda other: junk if other == name else world.real(route, other))
                for method in taken:
                    call(method, junk_path, body=BODIES["lookups_as_keys"][1], headers=alices,
                         waits=waits_at(junk_path, otherwise=waits))

    pages = Client(raise_request_exception=False)  # the admin and the live page: staff's session, HTML answers
    pages.force_login(staff)
    for route in every_route():
        if route.startswith(SURFACES) or not parameters(route):
            continue
        for name in parameters(route):
            for junk in PAGE_JUNK_IDS:  # GET: the admin's views read an object the same way for every method
                sent += 1
                with transaction.atomic():
                    response = pages.get(path_of(route, lambda other: junk if other == name else
                                                 PAGE_PARAMETERS.get(other, "1")))
                    transaction.set_rollback(True)
                if response.status_code >= 500:
                    failures.append(f"{response.status_code} GET {route} {name}={junk!r}")

    assert len(routes()) > 100 and sent > 3000 and not failures, "\n".join(failures)


PAGE_PARAMETERS = {"app_label": "datasets"}  # what the admin's patterns take besides ids


def every_route() -> list[str]:
    def walk(patterns, prefix: str):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                yield prefix + str(pattern.pattern)

    return list(walk(get_resolver().url_patterns, ""))


def parameters(route: str) -> list[str]:
    return [match.group("a") or match.group("b") for match in PARAMETER.finditer(route)]


def waits_at(path: str, *, otherwise: bool) -> bool:
    """Whether the view a path reaches (decoded, as the client sends it) is async; a path no pattern takes: as
    the route's."""
    try:
        return iscoroutinefunction(resolve(unquote(path)).func)
    except Http404:
        return otherwise


def token_headers(user) -> dict:
    key = ApiTokenFactory(user=user).key
    return {"HTTP_AUTHORIZATION": f"Bearer {key}", "HTTP_X_API_KEY": key}
