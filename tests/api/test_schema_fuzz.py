"""The API against its own OpenAPI schema: schemathesis generates requests for every operation (bounded in
examples), then chains them in the stateful phase (links inferred from the schema: a list's ids feed the
detail, cancel, events and delete operations), and checks that no response is a 5xx or breaks the schema
(status codes, content types, headers, bodies). Both run on data already there, made through the API the way
other tests make it, so that the values only real data has (a definition made from raw nodes has no template,
a pending run has no start time, a schedule has a template or a definition) are in the responses checked."""
from datetime import timedelta

import httpx
import pytest
import schemathesis
from asgiref.sync import sync_to_async
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

from tests.api.sse import parse_sse
from tests.factories import ApiTokenFactory, WorkflowDefinitionFactory
from workflows.services.run_requests import ExecutionRequest
from workflows.services.runs import execution_create, execution_run

# Registering or changing an MCP server connects to the URL given: generated URLs (a public address among them) must
# never be reached from a test, so those writes are left to tests/tools/ (their bad input: tests/test_fuzz_routes.py).
schema = schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True)).exclude(
    path_regex=r"^/api/v1/tools/servers/", method=["POST", "PATCH"]).exclude(
    path_regex=r"^/langgraph/")  # LangGraph's API, documented as objects in and out: tests/test_fuzz_routes.py and
# the SDK suites (tests/agent_server/) hold it to LangGraph's shapes
schema.app = WSGIHandler()
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
RAW_GRAPH = {"nodes": [{"id": "start", "type": "start"}, {"id": "llm", "type": "model"}, {"id": "end", "type": "end"}],
             "edges": [{"source": "start", "target": "llm"}, {"source": "llm", "target": "end"}]}


@pytest.fixture
def keep_test_connection(existing_data):
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


@pytest.fixture
def existing_data(alice) -> None:
    data_left_by_other_tests(alice)


@pytest.fixture
def token_header(alice, keep_test_connection) -> dict:
    return {"Authorization": f"Token {ApiTokenFactory(user=alice).key}"}


@pytest.mark.django_db
@schema.parametrize()
@settings(max_examples=8, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_every_operation_answers_within_its_schema(case, token_header):
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


def run_of_raw_nodes(owner):
    definition = WorkflowDefinitionFactory(owner=owner, name="raw nodes", **RAW_GRAPH)
    return execution_run(execution_id=execution_create(ExecutionRequest(owner=owner, definition_id=definition.pk,
                                                                        message="hi")).pk)


@pytest.mark.django_db(transaction=True)
async def test_the_events_of_a_run_without_a_template_are_within_the_schema_as_json_and_as_sse(async_client,
                                                                                               alice):
    execution = await sync_to_async(run_of_raw_nodes)(alice)
    await async_client.aforce_login(alice)
    url = f"/api/v1/executions/{execution.pk}/events/"

    page = (await async_client.get(url)).json()
    streamed = await async_client.get(url, headers={"Accept": "text/event-stream"})
    frames = parse_sse(b"".join([chunk async for chunk in streamed.streaming_content]).decode())

    assert page["results"][0]["event"] == "workflow_started" and page["results"][0]["data"]["template"] is None
    assert [frame.envelope for frame in frames] == page["results"]  # SSE carries the very envelopes
    case = schema["/api/v1/executions/{id}/events/"]["GET"].Case(path_parameters={"id": str(execution.pk)})
    as_served = httpx.Response(200, json=page, request=httpx.Request("GET", f"http://testserver{url}"))
    as_served.elapsed = timedelta(0)
    case.validate_response(as_served, checks=[response_schema_conformance])
