"""A run's events as JSON and as SSE, held to the /api/v1/ OpenAPI schema (the schema of tests/api/test_schema_fuzz.py),
for a run that has no template. Apart from that module: this test is transactional, and that module's tests run in
savepoints of a transaction its data lives in."""
from datetime import timedelta

import httpx
import pytest
from asgiref.sync import sync_to_async
from schemathesis.checks import response_schema_conformance

from tests.api.sse import parse_sse
from tests.api.test_schema_fuzz import RAW_GRAPH, schema
from tests.factories import WorkflowDefinitionFactory
from workflows.services.run_requests import ExecutionRequest
from workflows.services.runs import execution_create, execution_run


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
