"""Which models the gateway calls, and what a caller who asks for another is told: the models there are, why a
priced one cannot be called here (its provider is not set up), and how to price one. /api/v1/ says the same of an
unknown model. Out of the box only the offline `local` provider is set up."""
import pytest
from rest_framework.test import APIClient

from gateway.limits import key_limits_set
from tests.factories import ApiTokenFactory
from workflows.models import WorkflowExecution

HOW_TO_PRICE = "give it a price: POST /api/v1/pricing/ as staff, or in the admin (Model prices)"


@pytest.fixture
def out_of_the_box(settings):
    settings.OPENAI_API_KEY = settings.OPENAI_BASE_URL = settings.ANTHROPIC_API_KEY = None


@pytest.fixture
def keyed(alice, out_of_the_box):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiTokenFactory(user=alice, scopes=['gateway', 'chat']).key}")
    return api


def test_out_of_the_box_the_gateway_lists_the_local_models(keyed):
    response = keyed.get("/v1/models")

    assert [(m["id"], m["owned_by"]) for m in response.json()["data"]] == [
        ("all-MiniLM-L6-v2", "local"), ("local-echo-1", "local"), ("local-embed-1", "local")]


def test_a_key_held_to_some_models_sees_only_those(alice, out_of_the_box):
    """A key's `allowed_models` is what it sees: GET /v1/models lists those, GET /v1/models/{model} of another is
    the 404 of a model it has no access to, naming the ones it may call, as a call of an unknown model does (a
    call of one it may not call stays a 403 `model_not_allowed`)."""
    key = ApiTokenFactory(user=alice, scopes=["gateway"])
    key_limits_set(api_key=key, allowed_models=["local-echo-1"])
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key.key}")

    listed = api.get("/v1/models")
    mine, other = api.get("/v1/models/local-echo-1"), api.get("/v1/models/local-embed-1")
    unknown = api.post("/v1/chat/completions", {"model": "gpt-99-imaginary",
                                                "messages": [{"role": "user", "content": "Hi"}]}, format="json")
    refused = api.post("/v1/embeddings", {"model": "local-embed-1", "input": "Hi"}, format="json")

    assert [m["id"] for m in listed.json()["data"]] == ["local-echo-1"]
    assert mine.status_code == 200 and mine.json()["id"] == "local-echo-1"
    assert other.status_code == 404 and other.json()["error"]["code"] == "model_not_found"
    assert "Models you can call: local-echo-1 (GET /v1/models)" in other.json()["error"]["message"]
    assert "Models you can call: local-echo-1 (GET /v1/models)" in unknown.json()["error"]["message"]
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"


def test_an_unknown_model_names_the_models_there_are_and_how_to_price_one(keyed):
    response = keyed.post("/v1/chat/completions", {"model": "gpt-99-imaginary",
                                                   "messages": [{"role": "user", "content": "Hi"}]}, format="json")

    assert response.status_code == 404
    error = response.json()["error"]
    assert (error["code"], error["param"], error["type"]) == ("model_not_found", "model", "invalid_request_error")
    assert error["message"] == (
        "The model `gpt-99-imaginary` does not exist or you do not have access to it. Models you can call: "
        f"all-MiniLM-L6-v2, local-echo-1, local-embed-1 (GET /v1/models). To call another model, {HOW_TO_PRICE}.")
    assert not WorkflowExecution.objects.exists()


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]}),
    ("/v1/completions", {"prompt": "Hi"}),
    ("/v1/responses", {"input": "Hi"}),
], ids=["chat", "completions", "responses"])
@pytest.mark.parametrize("model", ["local-embed-1", "local/all-MiniLM-L6-v2"])
def test_an_embeddings_model_is_not_a_chat_model(keyed, path, body, model):
    response = keyed.post(path, {"model": model, **body}, format="json")

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("validation_error", "model") and "not a chat model" in error["message"]
    assert not WorkflowExecution.objects.exists()


def test_a_model_priced_for_a_provider_not_set_up_says_what_it_needs(keyed):
    response = keyed.post("/v1/chat/completions", {"model": "gpt-4o-mini",
                                                   "messages": [{"role": "user", "content": "Hi"}]}, format="json")

    assert response.status_code == 404
    message = response.json()["error"]["message"]
    assert "Models you can call: all-MiniLM-L6-v2, local-echo-1, local-embed-1 (GET /v1/models)." in message
    assert "`gpt-4o-mini` is priced for openai, which is not set up here: provider 'openai' needs OPENAI_API_KEY " \
           "(or OPENAI_BASE_URL for a local compatible server)." in message
    assert not WorkflowExecution.objects.exists()


def test_api_v1_names_the_providers_priced_models_for_an_unknown_model(keyed):
    response = keyed.post("/api/v1/chat/", {"message": "Hi", "model": "gpt-99-imaginary"}, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"] == ("unknown model 'gpt-99-imaginary' for provider 'local' (no price configured); "
                                f"local's priced models: all-MiniLM-L6-v2, local-echo-1; to call another, {HOW_TO_PRICE}")
    assert error["details"][0]["path"] == "config.model"
    assert not WorkflowExecution.objects.exists()
