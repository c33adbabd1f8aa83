"""The API against its own OpenAPI schema: schemathesis generates requests for every operation, then chains them in
the stateful phase (links inferred from the schema: a list's ids feed the detail, cancel, events and delete
operations), and checks that no response is a 5xx or breaks the schema (status codes, content types, headers,
bodies: a 4xx's Error shape too). Both run on data already there, made through the API the way other tests make it,
so that the values only real data has (a definition made from raw nodes has no template, a pending run has no start
time, a schedule has a template or a definition) are in the responses checked.

What is generated, and why it suffices (a request costs about 10 ms of CPU, once per database of make test):
- The coverage phase (deterministic; the bulk): every operation with each field and parameter at its boundaries and
  in each declared variant, alone and with the other optional ones; each keyword of its schema violated (lengths,
  bounds, formats, patterns, enums, required fields missing, unknown fields); a JSON body as multipart without its
  boundary and as text/plain. Three kinds of its cases are narrowed (filter_case), each to what tells code apart:
  - A wrong type: schemathesis sends a field every JSON type it does not declare, but a field's parser (listed at
    STANDS_FOR) takes a boolean in the branch of a number or of another wrong type the field is sent, an object in
    the array's, and a null in DRF's own check every field shares (no field class here overrides it). So a field in
    a JSON body is sent a number, a text and an array (those it does not declare), the body itself also a null, and
    one field of each operation a null. A query parameter reaches its parser as text: it is sent an integer's text,
    a decimal's, one word (true, null and AAA are all words to every parser the API uses) and itself repeated.
    A path parameter of a wrong type is not sent here: tests/test_fuzz_routes.py sends each path parameter of every
    route seven malformed ids, alone, the other parameters real, with every method the route takes.
  - A method the path does not declare: OPTIONS to every path (DRF answers it from each view's metadata); TRACE and
    QUERY to one (DRF answers every method a view lacks with the same 405, after the authentication, permissions and
    throttles tests/test_fuzz_routes.py reaches on every route with GET, POST, PUT, PATCH and DELETE; what these two
    add is Django's, the same for every path).
  6,109 coverage cases became 4,042 (body wrong types 1,764 to 1,038, query wrong types 1,025 to 367, path wrong
  types 301 to 0, undeclared methods 456 to 74).
- The fuzzing phase: 8 examples per operation drawn at random (derandomized: the same ones every run), valid and
  invalid, for what no single case of the coverage phase combines; not for the 35 operations whose only input is
  UUIDs in their path, or none (only_ids): their examples could differ only in random UUIDs, which name no row and
  get the unknown id's 404 the coverage phase's own case gets (the rows' ids: the stateful phase, and
  tests/test_fuzz_routes.py, which sends every route the user's real ids and seven malformed ones).
- The stateful phase: 25 scenarios of up to 6 chained calls, on the rows the API answered.
The LangGraph API and the writes that reach an MCP server's URL are left out (the `exclude`s below, with where they
are fuzzed instead)."""
import importlib.util
import re
import sys

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, transaction
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, Phase, settings
from rest_framework.test import APIClient
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.factories import ApiTokenFactory, UserFactory

pytestmark = pytest.mark.fuzz  # not in make test-quick (pytest.ini)
OPENAPI = SchemaGenerator().get_schema(request=None, public=True)


def only_ids(operation: dict) -> bool:
    """Whether an operation's only input is UUIDs in its path, or nothing."""
    return "requestBody" not in operation and all(
        parameter["in"] == "path" and parameter["schema"].get("format") == "uuid"
        for parameter in operation.get("parameters", []))


CONFIG = schemathesis.Config.from_dict({
    # The methods an operation's path does not declare, sent by the coverage phase (filter_case narrows them).
    "phases": {"coverage": {"unexpected-methods": ["OPTIONS", "TRACE", "QUERY"]}},
    # No fuzzing phase for the operations it could only send random UUIDs (see the module's docstring)
    "operations": [{"include-name": [f"{method.upper()} {path}" for path, operations in OPENAPI["paths"].items()
                                     for method, operation in operations.items() if only_ids(operation)],
                    "phases": {"fuzzing": {"enabled": False}}}],
})
# Registering or changing an MCP server connects to the URL given: generated URLs (a public address among them) must
# never be reached from a test, so those writes are left to tests/tools/ (their bad input: tests/test_fuzz_routes.py).
#
# The operations' tests are built when the test runs (schemathesis' lazy schema, from the `api_schema` fixture), not
# at collection: building them (the coverage phase's cases of 114 operations) costs seconds of CPU, which every make
# test worker would pay where only the one running this module needs them. The same cases are generated and
# checked; each operation is a subtest, and runs on the rows as the module made them (operation_savepoint).
def left_out(schema):
    return schema.exclude(path_regex=r"^/api/v1/tools/servers/", method=["POST", "PATCH"]).exclude(
        path_regex=r"^/langgraph/")  # LangGraph's API, documented as objects in and out: tests/test_fuzz_routes.py
    # and the SDK suites (tests/agent_server/) hold it to LangGraph's shapes


schema = left_out(schemathesis.openapi.from_dict(OPENAPI, config=CONFIG))
schema.app = WSGIHandler()
lazy_schema = left_out(schemathesis.pytest.from_fixture("api_schema"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
RAW_GRAPH = {"nodes": [{"id": "start", "type": "start"}, {"id": "llm", "type": "model"}, {"id": "end", "type": "end"}],
             "edges": [{"source": "start", "target": "llm"}, {"source": "llm", "target": "end"}]}


# A wrong type dropped when the same field was already sent the one standing for it. In every field class the API
# reads JSON with (DRF's CharField, IntegerField, FloatField, DecimalField, ChoiceField, UUIDField, DateTimeField,
# ListField, DictField, nested serializers; the project's Strict*Field, StringField, MetadataField, HeadersField,
# HeaderNamesField), a boolean takes the branch of the number or of another wrong type the same field is sent (a text,
# an array), and an object the branch of the array.
STANDS_FOR = {"boolean": "number", "object": "array"}
kept: set[tuple] = set()  # (operation, where, parameter or field, kind) of the cases kept so far


def json_kind(value) -> str:
    return ("null" if value is None else "boolean" if isinstance(value, bool) else
            "number" if isinstance(value, (int, float)) else "string" if isinstance(value, str) else
            "array" if isinstance(value, list) else "object")


def query_kind(value) -> str:
    """What a query parameter's parser meets: an integer's text, a decimal's, a word (true, null, AAA: no parser
    the API uses reads one of these differently from the others), or the parameter repeated."""
    if isinstance(value, (list, dict)):
        return json_kind(value)
    if value is None or isinstance(value, bool):
        return "word"
    if re.fullmatch(r"-?\d+", str(value)):
        return "integer"
    try:
        float(value)
    except ValueError:
        return "word"
    return "decimal"


def body_value(body, pointer: str):
    """The value a coverage case put where `pointer` (into the body's schema, to a /type) points."""
    parts = [part.replace("~1", "/").replace("~0", "~") for part in pointer.strip("/").split("/")[:-1]]
    while parts:
        if parts[0] == "properties":
            body, parts = body[parts[1]], parts[2:]
        elif parts[0] == "items":
            body, parts = body[0], parts[1:]
        elif parts[0] in ("anyOf", "oneOf", "allOf"):
            parts = parts[2:]
        else:
            raise LookupError(pointer)
    return body


@schema.hook
def filter_case(context, case) -> bool:
    """The coverage phase's cases but those the module's docstring says are left out: a wrong type sent once per kind
    its parser tells apart, a null once per operation, TRACE and QUERY once, no path parameter of a wrong type."""
    data = case.meta.phase.data if case.meta and case.meta.phase.name == "coverage" else None
    if data is None:
        return True
    if data.scenario == "unspecified_http_method":
        return case.method not in ("TRACE", "QUERY") or keep_first(("any operation", case.method))
    if data.scenario != "incorrect_type":
        return True
    label, where = case.operation.label, data.parameter_location
    if where == "path":
        return False  # tests/test_fuzz_routes.py: each path parameter malformed alone, the others real
    try:
        if where == "query":
            return keep_first((label, where, data.parameter, query_kind(case.query[data.parameter])))
        if where == "body":
            field, kind = (data.parameter, data.location), json_kind(body_value(case.body, data.location))
            if kind == "null" and data.location != "/type":
                field = (data.parameter, "a field")  # DRF's Field.validate_empty_values refuses it in every field
            return (label, where, field, STANDS_FOR.get(kind)) not in kept and keep_first((label, where, field, kind))
    except (LookupError, TypeError):
        pass
    return True


def keep_first(key: tuple) -> bool:
    if key in kept:
        return False
    kept.add(key)
    return True


@pytest.fixture(scope="module", autouse=True)
def flask_not_searched():
    """schemathesis' WSGI transport tries `from flask import ...` at every call (to hear a Flask app's exceptions),
    twice a case; Flask is not installed, and each failed import searched sys.path anew: 0.4 ms of CPU, about 3 s
    a run. None in sys.modules is Python's own "not importable" entry: the import fails at once, as it did."""
    if importlib.util.find_spec("flask") is not None:
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "flask", None)
        yield


@pytest.fixture
def keep_test_connection(existing_data, db):
    """Like Django's test client: the request cycle must not close the connection holding the test's
    transaction. (After the data is made: the test client reconnects these receivers after each request.)"""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def data_left_by_other_tests(user) -> None:
    """Alice's rows as the rest of the suite leaves them, every nullable column null somewhere: a definition from
    raw nodes (no template) and its runs, a raw graph's run, a pending background run (no start, no end), a chat
    turn (messages, tool and LLM calls), schedules of a definition (no template) and of a template (no
    definition), her own template, a document."""
    client = APIClient()
    client.force_login(user)

    def made(path: str, body: dict, status: int = 201) -> dict:
        response = client.post(path, body, format="json")
        assert response.status_code == status, (path, response.content)
        return response.json()

    definition = made("/api/v1/workflows/definitions/", {"name": "raw nodes", **RAW_GRAPH})
    assert definition["template"] is None
    made("/api/v1/executions/", {"definition_id": definition["id"], "input": {"message": "hi"}})
    made("/api/v1/executions/", {"graph": RAW_GRAPH, "input": {"message": "hi"}})
    made("/api/v1/executions/", {"definition_id": definition["id"], "input": {"message": "later"},
                                 "mode": "background"}, status=202)
    made("/api/v1/chat/", {"message": "What is 12*7?"})
    made("/api/v1/workflows/definitions/from-template/", {"template": "summarize"})
    made("/api/v1/schedules/", {"name": "raw", "definition_id": definition["id"], "cron": "0 7 * * *"})
    made("/api/v1/schedules/", {"name": "builtin", "template": "summarize", "cron": "0 7 * * *"})
    made("/api/v1/workflows/templates/", {"key": "brief", "name": "Brief", "graph": RAW_GRAPH})
    made("/api/v1/documents/", {"title": "Refunds", "content": "Refunds take 14 days."})


@pytest.fixture(scope="module")
def existing_data(django_db_setup, django_db_blocker):
    """Made once for the module, in a transaction rolled back after its last test; each test runs in a savepoint
    inside it (pytest-django's `db`), so every test meets the same rows, as if each had made them."""
    with django_db_blocker.unblock(), transaction.atomic():
        user = UserFactory(username="alice")
        data_left_by_other_tests(user)
        token = ApiTokenFactory(user=user).key
        yield token
        transaction.set_rollback(True)


@pytest.fixture
def token_header(existing_data, keep_test_connection) -> dict:
    return {"Authorization": f"Token {existing_data}"}


@pytest.fixture
def api_schema():
    return schema


@pytest.fixture
def operation_savepoint(db):
    """Each operation's cases run on the module's rows: what an operation's cases wrote is rolled back before the
    next operation's first case (the operations run one after the other), as if each were a test of its own."""
    current = {}

    def enter(label: str) -> None:
        if current.get("label") != label:
            if "savepoint" in current:
                transaction.savepoint_rollback(current["savepoint"])
                transaction.savepoint_commit(current["savepoint"])
            current.update(label=label, savepoint=transaction.savepoint())

    return enter


@pytest.mark.timeout(900)  # 227 s in make test's PostgreSQL phase; past the default 300 s on a loaded machine
@pytest.mark.django_db
@lazy_schema.parametrize()
@settings(max_examples=8, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_every_operation_answers_within_its_schema(case, token_header, operation_savepoint):
    operation_savepoint(case.operation.label)
    case.call_and_validate(headers=token_header, checks=CHECKS)


@pytest.mark.django_db
def test_chained_operations_answer_within_their_schema(token_header):
    """The stateful phase: schemathesis chains operations by the links it infers (POST or list → detail, cancel,
    events, PATCH, DELETE), so responses about the rows that exist are checked, not only 404s."""

    class Workflow(schema.as_state_machine()):
        # Each scenario starts from the same rows: what one deleted or made is rolled back, so Hypothesis sees
        # the same responses (and so the same links to follow) when it replays a scenario.
        def setup(self):
            self.savepoint = transaction.savepoint()

        def teardown(self):
            transaction.savepoint_rollback(self.savepoint)
            super().teardown()

        def get_call_kwargs(self, case):
            return {"headers": token_header}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs)

    Workflow.run(settings=settings(max_examples=25, stateful_step_count=6, deadline=None, derandomize=True,
                                   database=None, phases=[Phase.generate],
                                   suppress_health_check=list(HealthCheck)))
