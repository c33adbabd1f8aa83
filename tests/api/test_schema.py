"""The OpenAPI schema is valid without warnings, documents the one error shape, and its UI works offline."""
import re

import pytest
from django.contrib.staticfiles import finders
from django.core.management import call_command
from drf_spectacular.generators import SchemaGenerator


def test_spectacular_validates_the_schema_without_warnings(tmp_path):
    target = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    assert "/api/v1/workflows/definitions/validate/" in target.read_text()


@pytest.mark.django_db
def test_every_operation_documents_the_error_shape(api):
    schema = api.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    assert schema["components"]["schemas"]["Error"]["required"] == ["error"]
    for path, item in schema["paths"].items():
        invalid = "422" if path.startswith("/langgraph/") else "400"  # LangGraph's server answers bad input 422
        for method, operation in item.items():
            assert {invalid, "404", "429"} <= set(operation["responses"]), (method, path)


@pytest.mark.django_db
def test_the_docs_page_uses_only_assets_served_by_the_project(api):
    page = api.get("/api/v1/docs/").content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert assets and not [a for a in assets if a.startswith(("http:", "https:", "//"))]
    assert "cdn" not in page.lower()
    bundle = [a for a in assets if a.endswith("swagger-ui-bundle.js")]
    assert bundle and finders.find(bundle[0].removeprefix("/static/"))


AREAS = ["chat", "conversations", "workflows", "runs", "tools", "knowledge", "prompts", "datasets", "experiments",
         "analytics", "keys", "budgets", "audit", "gateway", "Agent Server"]


@pytest.fixture(scope="module")
def schema():
    """The document /api/v1/schema/ serves (test_every_operation_documents_the_error_shape reads it there)."""
    return SchemaGenerator().get_schema(request=None, public=True)


def test_item_openapi_every_operation_has_one_area_tag(schema):
    from collections import Counter

    tagged = Counter()
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            assert len(operation.get("tags", [])) == 1 and operation["tags"][0] in AREAS, (method, path)
            tagged[operation["tags"][0]] += 1
    assert [tag["name"] for tag in schema["tags"]] == AREAS  # each described, in the docs' order
    assert set(tagged) == set(AREAS)  # every area has its operations
    area = {path: item[next(iter(item))]["tags"][0] for path, item in schema["paths"].items()}
    assert area["/api/v1/chat/"] == "chat" and area["/api/v1/executions/{id}/cancel/"] == "runs"
    assert area["/api/v1/documents/"] == "knowledge" and area["/api/v1/keys/"] == "keys"
    assert area["/v1/chat/completions"] == "gateway" and area["/langgraph/threads"] == "Agent Server"


def test_item_openapi_documents_langgraph_and_v1_in_their_shapes(schema):
    paths = schema["paths"]
    for path, method in (("/langgraph/threads", "post"), ("/langgraph/threads/{thread_id}/runs/wait", "post"),
                         ("/langgraph/assistants/search", "post"), ("/langgraph/runs/crons", "post"),
                         ("/langgraph/store/items", "put"), ("/langgraph/threads/{thread_id}/runs/{run_id}", "get")):
        operation = paths[path][method]
        assert operation["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
            "/LangGraphError"), path
        assert {"apiKeyHeader": []} in operation["security"]
    assert not [path for path in paths if path.startswith("/langgraph/") and "{path}" in path]  # the catch-all
    assert len({operation["operationId"] for item in paths.values() for operation in item.values()}) == sum(
        len(item) for item in paths.values())
    for path, item in paths.items():
        if path.startswith("/v1/"):
            for operation in item.values():
                assert operation["externalDocs"]["url"].startswith("https://platform.openai.com/docs/api-reference/")
                assert "OpenAI's" in operation["responses"]["200"]["description"]
                assert operation["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith(
                    "/OpenAIError")


def test_item_openapi_schema_is_valid_for_openapi_spec_validator(schema):
    from openapi_spec_validator import validate

    assert schema["openapi"].startswith("3.")
    validate(schema)  # raises on any error
