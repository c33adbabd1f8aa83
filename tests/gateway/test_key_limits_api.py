"""/api/v1/keys/<id>/limits/: a key's owner sets and reads its gateway limits, which the gateway then holds it to;
limits staff set are the owner's to read, not to change; another user's key is a 404; only a key holding every
scope (or a session) changes them; bad limits are refused whole; every change is audited."""
import pytest
from rest_framework.test import APIClient

from audit.models import AuditEvent
from gateway.models import KeyLimits
from tests.factories import ApiTokenFactory
from workflows.models import WorkflowExecution

pytestmark = pytest.mark.django_db
ASK = {"model": "local-echo-1", "messages": [{"role": "user", "content": "hello there"}]}


def url(key) -> str:
    return f"/api/v1/keys/{key.uid}/limits/"


def gateway_call(key, body=ASK, path="/v1/chat/completions"):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key.key}")
    return client.post(path, body, format="json")


def test_a_keys_owner_limits_it_and_the_gateway_holds_it_to_them(api, alice, gateway_api):
    key = ApiTokenFactory(user=alice, name="app", scopes=["gateway"])
    assert api.get(url(key)).json() == {"api_key": str(key.uid), "allowed_models": [], "rpm": None, "tpm": None,
                                        "per_model": {}, "set_by_staff": False, "updated_at": None}

    answer = api.put(url(key), {"allowed_models": ["local-echo-1"], "rpm": 2,
                                "per_model": {"local-echo-1": {"tpm": 5000}}}, format="json")

    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert (body["allowed_models"], body["rpm"], body["tpm"], body["per_model"], body["set_by_staff"]) == (
        ["local-echo-1"], 2, None, {"local-echo-1": {"tpm": 5000}}, False)
    assert api.get(url(key)).json() == body
    assert gateway_call(key).status_code == 200
    refused = gateway_call(key, {"model": "local-embed-1", "input": "x"}, path="/v1/embeddings")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"
    assert gateway_call(key).status_code == 200 and gateway_call(key).status_code == 429  # past 2 a minute
    assert WorkflowExecution.objects.count() == 2
    [audited] = AuditEvent.objects.filter(action="api_key.limits_set")
    assert (audited.actor, audited.target_id, audited.data["rpm"]) == (alice, str(key.pk), 2)

    assert api.delete(url(key)).status_code == 204
    assert not KeyLimits.objects.exists() and AuditEvent.objects.filter(action="api_key.limits_removed").count() == 1
    assert gateway_call(key, {**ASK, "model": "local-echo-1"}).status_code == 200  # no limit left


def test_limits_staff_set_are_the_owners_to_read_not_to_change(api, alice, staff):
    key = ApiTokenFactory(user=alice, scopes=["gateway"])
    operator = APIClient()
    operator.force_authenticate(staff)
    assert operator.put(url(key), {"rpm": 10}, format="json").json()["set_by_staff"] is True

    assert api.get(url(key)).json()["rpm"] == 10
    for refused in (api.put(url(key), {"rpm": 1000}, format="json"), api.delete(url(key))):
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "set_by_staff"
    assert KeyLimits.objects.get().rpm == 10
    assert operator.delete(url(key)).status_code == 204 and not KeyLimits.objects.exists()


def test_another_users_key_is_a_404_and_a_narrow_key_cannot_widen_its_own_limits(api, alice, bob):
    bobs = ApiTokenFactory(user=bob)
    for answer in (api.get(url(bobs)), api.put(url(bobs), {"rpm": 5}, format="json"), api.delete(url(bobs))):
        assert answer.status_code == 404
    assert api.get("/api/v1/keys/not-a-uuid/limits/").status_code == 404

    narrow = ApiTokenFactory(user=alice, scopes=["gateway", "read"])
    own = APIClient()
    own.credentials(HTTP_AUTHORIZATION=f"Bearer {narrow.key}")
    assert own.put(url(narrow), {"rpm": 100000}, format="json").status_code == 403
    assert not KeyLimits.objects.exists()


@pytest.mark.parametrize("limits, path", [
    ({"rpm": 0}, "rpm"), ({"tpm": "many"}, "tpm"), ({"allowed_models": "gpt-4o"}, "allowed_models"),
    ({"per_model": {"gpt-4o": {"rpd": 3}}}, "per_model"), ({"burst": 3}, "burst")])
def test_bad_limits_are_refused_whole(api, alice, limits, path):
    key = ApiTokenFactory(user=alice)
    answer = api.put(url(key), limits, format="json")
    assert answer.status_code == 400 and path in str(answer.json()["error"])
    assert not KeyLimits.objects.exists() and not AuditEvent.objects.filter(action="api_key.limits_set").exists()
