"""A URL under /v1/ that the gateway does not serve, or a method it does not take there, is answered in OpenAI's
error shape (its clients read `error.code`), not with Django's HTML page."""
import openai
import pytest
from rest_framework.test import APIClient

from gateway.views import SERVED
from tests.factories import ApiTokenFactory
from tests.gateway.conftest import client
from workflows.models import WorkflowExecution


@pytest.fixture
def keyed(alice):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiTokenFactory(user=alice, scopes=['gateway']).key}")
    return api


@pytest.mark.parametrize("method, path", [
    ("get", "/v1/"), ("get", "/v1/nope"), ("post", "/v1/images/generations"), ("get", "/v1/responses/resp_1"),
    ("post", "/v1/chat/completions/"), ("delete", "/v1/files/file-1"),
])
@pytest.mark.parametrize("authenticated", [True, False], ids=["with a key", "without"])
def test_it_answers_unknown_urls_with_openais_404(keyed, method, path, authenticated):
    api = keyed if authenticated else APIClient()

    response = getattr(api, method)(path, {"model": "local-echo-1"}, format="json")

    assert response.status_code == 404 and response["Content-Type"] == "application/json"
    assert response.json() == {"error": {
        "message": f"Unknown request URL: {method.upper()} {path}. The gateway serves {SERVED}.",
        "type": "invalid_request_error", "param": None, "code": "unknown_url"}}
    assert not WorkflowExecution.objects.exists()


@pytest.mark.parametrize("method, path", [("get", "/v1/chat/completions"), ("put", "/v1/chat/completions"), ("get", "/v1/completions"),
                                          ("post", "/v1/models"), ("delete", "/v1/models")])
def test_it_answers_a_method_not_allowed_in_openais_shape(keyed, method, path):
    response = getattr(keyed, method)(path, format="json")

    assert response.status_code == 405 and response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "method_not_allowed", None)
    assert method.upper() in error["message"]


def test_the_official_client_reads_an_unknown_url_as_not_found(gateway):
    with pytest.raises(openai.NotFoundError) as unknown:
        client(gateway).files.list()

    assert (unknown.value.code, unknown.value.type) == ("unknown_url", "invalid_request_error")
    assert "GET /v1/files" in unknown.value.message
