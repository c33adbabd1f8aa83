"""POST /api/v1/auth/token/ (a new token each time, shown once, stored hashed), token and session
authentication, and the 401 shape."""
import hashlib

import pytest
from rest_framework.test import APIClient

from keys.models import ApiToken
from tests.api.conftest import assert_error
from tests.factories import ApiTokenFactory

pytestmark = pytest.mark.django_db
URL = "/api/v1/auth/token/"


def test_it_returns_a_new_token_for_good_credentials_and_stores_only_its_digest(alice):
    response = APIClient().post(URL, {"username": "alice", "password": "alice-password"})

    assert response.status_code == 200
    key = response.json()["token"]
    assert set(response.json()) == {"token"} and len(key) >= 40
    [token] = ApiToken.objects.filter(user=alice)
    assert token.digest == hashlib.sha256(key.encode()).hexdigest() and token.prefix == key[:8]
    assert key not in {token.digest, token.prefix}


def test_each_request_makes_a_new_token_and_every_one_works(alice):
    first = APIClient().post(URL, {"username": "alice", "password": "alice-password"}).json()["token"]
    second = APIClient().post(URL, {"username": "alice", "password": "alice-password"}).json()["token"]

    assert first != second  # a token is shown once: it cannot be handed out again
    assert ApiToken.objects.filter(user=alice).count() == 2
    for key in (first, second):
        assert APIClient().get("/api/v1/executions/", HTTP_AUTHORIZATION=f"Token {key}").status_code == 200


def test_it_rejects_bad_credentials_with_a_400_in_the_error_shape(alice):
    response = APIClient().post(URL, {"username": "alice", "password": "wrong"})

    details = assert_error(response, 400, "validation_error")
    assert details == [{"path": "", "code": "authorization", "message": "Unable to log in with provided credentials."}]
    assert not ApiToken.objects.exists()


def test_a_deleted_token_and_an_inactive_users_token_are_refused(alice):
    kept_key = ApiTokenFactory(user=alice).key
    gone_key = ApiTokenFactory(user=alice).key
    ApiToken.objects.filter(prefix=gone_key[:8]).delete()

    assert_error(APIClient().get("/api/v1/executions/", HTTP_AUTHORIZATION=f"Token {gone_key}"), 401,
                 "authentication_failed")
    alice.is_active = False
    alice.save()
    assert_error(APIClient().get("/api/v1/executions/", HTTP_AUTHORIZATION=f"Token {kept_key}"), 401,
                 "authentication_failed")


def test_it_names_missing_fields(db):
    details = assert_error(APIClient().post(URL, {}), 400, "validation_error")
    assert {(d["path"], d["code"]) for d in details} == {("username", "required"), ("password", "required")}


def test_it_ignores_a_session_cookie_so_no_csrf_token_is_needed(alice):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post(URL, {"username": "alice", "password": "alice-password"})
    assert response.status_code == 200


def test_the_token_authenticates_api_requests(alice):
    key = APIClient().post(URL, {"username": "alice", "password": "alice-password"}).json()["token"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")

    response = client.post("/api/v1/chat/", {"message": "hello"})

    assert response.status_code == 201
    assert response.json()["conversation"]["id"]
    assert client.get("/api/v1/conversations/").json()["count"] == 1


def test_a_token_post_needs_no_csrf_token(alice):
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Token {ApiTokenFactory(user=alice).key}")
    assert client.post("/api/v1/chat/", {"message": "hello"}).status_code == 201


def test_a_bad_token_is_a_401(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-key")
    response = client.get("/api/v1/executions/")
    assert_error(response, 401, "authentication_failed")
    assert response["WWW-Authenticate"] == "Token"


@pytest.mark.parametrize("method, path", [
    ("get", "/api/v1/executions/"),
    ("post", "/api/v1/executions/"),
    ("get", "/api/v1/executions/00000000-0000-0000-0000-000000000000/"),
    ("get", "/api/v1/executions/00000000-0000-0000-0000-000000000000/events/"),
    ("post", "/api/v1/executions/00000000-0000-0000-0000-000000000000/cancel/"),
    ("post", "/api/v1/chat/"),
    ("get", "/api/v1/conversations/"),
    ("get", "/api/v1/conversations/00000000-0000-0000-0000-000000000000/messages/"),
])
def test_unauthenticated_requests_get_a_401_in_the_error_shape(db, method, path):
    response = getattr(APIClient(), method)(path)
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Token"


def test_an_unauthenticated_event_stream_request_gets_a_json_401(db):
    response = APIClient().get("/api/v1/executions/00000000-0000-0000-0000-000000000000/events/",
                               HTTP_ACCEPT="text/event-stream")
    assert_error(response, 401, "not_authenticated")


def test_an_unknown_api_path_is_a_json_404(api):
    assert_error(api.get("/api/v1/no-such-thing/"), 404, "not_found")
