"""API tokens at rest: only SHA-256 digests are stored (nothing in the database authenticates), tokens DRF stored
in plain text keep working after the migration that hashed them (over HTTP and websockets), the admin shows
prefixes only, and `create_api_token` prints a new token once."""
import io

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse
from rest_framework.authtoken.models import Token, TokenProxy
from rest_framework.test import APIClient

from chatter_project.asgi import application
from keys.models import ApiToken
from keys.services import token_digest
from tests.factories import ApiTokenFactory

BEFORE = [("chatter_project", "0001_initial")]
AFTER = [("chatter_project", "0002_hash_plain_tokens")]
MOVED = [("chatter_project", "0003_api_keys")]
OLD_KEY = "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"  # DRF's shape: 40 hex characters


def authenticates(key: str) -> bool:
    response = APIClient().get("/api/v1/executions/", HTTP_AUTHORIZATION=f"Token {key}")
    assert response.status_code in (200, 401), response.content
    return response.status_code == 200


async def websocket_accepts(key: str) -> bool:
    """/ws/events/ with `?token=` (no cookie, no Origin): it stays open for a user, closes 4401 otherwise."""
    communicator = WebsocketCommunicator(application, f"/ws/events/?token={key}")
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    stays_open = await communicator.receive_nothing(timeout=0.5)
    if not stays_open:
        assert (await communicator.receive_output())["code"] == 4401
    await communicator.disconnect()
    return stays_open


def stored_strings() -> list[str]:
    """Every text value of every row of both token tables, DRF's included."""
    values = []
    for model in (ApiToken, Token):
        for row in model.objects.values():
            values += [value for value in row.values() if isinstance(value, str) and value]  # names may be ""
    return values


@pytest.mark.django_db
def test_the_database_holds_no_token_that_authenticates(alice, bob):
    keys = [APIClient().post("/api/v1/auth/token/", {"username": user, "password": f"{user}-password"}).json()["token"]
            for user in ("alice", "bob")]
    keys.append(ApiTokenFactory(user=alice).key)
    assert all(authenticates(key) for key in keys)

    stored = stored_strings()
    assert len(stored) == 2 * len(keys)  # a digest and a prefix each; DRF's table is empty
    assert not [value for value in stored if any(key in value for key in keys)]
    assert not [value for value in stored if authenticates(value)]


@pytest.mark.django_db(transaction=True)
def test_tokens_from_before_the_hashing_and_before_the_keys_app_keep_working_after_their_migrations(alice, staff):
    """One trip back through the migrations (each costs seconds: every app after chatter_project 0001 is unapplied
    and applied again) for two kinds of old key: a plain-text token as DRF stored it, hashed by chatter_project 0002
    (the plain-text row deleted, the key still authenticating over HTTP and websockets), and a key made in
    chatter_project's table before the keys app existed, which keys 0001 takes over as it is: its row, and its
    content type with the admin permissions on it."""
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    try:
        Token.objects.create(key=OLD_KEY, user=alice)  # as DRF stored it
        executor.loader.build_graph()
        executor.migrate(AFTER)
        hashed_apps = executor.loader.project_state(AFTER).apps
        assert not hashed_apps.get_model("authtoken", "Token").objects.exists()  # the plain-text key is gone
        [hashed] = hashed_apps.get_model("chatter_project", "ApiToken").objects.all()  # one key for one token
        assert hashed.user_id == alice.pk and hashed.prefix == OLD_KEY[:8]

        executor.loader.build_graph()
        executor.migrate(MOVED)  # chatter_project's ApiToken grown into an API key; the keys app not yet there
        old_apps = executor.loader.project_state(MOVED).apps
        key = "made-before-the-move-" + "x" * 20
        old_apps.get_model("chatter_project", "ApiToken").objects.create(
            user_id=alice.pk, digest=token_digest(key), prefix=key[:8], name="old", scopes=["read"])
        ContentType.objects.filter(app_label="keys").delete()  # as before the keys app existed
        content_type = ContentType.objects.get_or_create(app_label="chatter_project", model="apitoken")[0]
        view = Permission.objects.get_or_create(content_type=content_type, codename="view_apitoken",
                                                defaults={"name": "Can view API key"})[0]
        staff.user_permissions.add(view)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())

    assert not Token.objects.exists()
    from_token, made_before = ApiToken.objects.order_by("name")  # exactly these two
    assert from_token.user == alice and from_token.prefix == OLD_KEY[:8] and OLD_KEY not in stored_strings()
    assert authenticates(OLD_KEY)
    assert async_to_sync(websocket_accepts)(OLD_KEY)
    assert not async_to_sync(websocket_accepts)(OLD_KEY[:-1] + "0")

    assert (made_before.name, made_before.scopes, made_before.user) == ("old", ["read"], alice) and authenticates(key)
    ContentType.objects.clear_cache()
    assert ContentType.objects.get_for_model(ApiToken).pk == content_type.pk  # the same row, now the keys app's
    assert type(staff).objects.get(pk=staff.pk).has_perm("keys.view_apitoken")


@pytest.mark.django_db(transaction=True)
def test_a_new_token_authenticates_a_websocket(alice):
    key = ApiTokenFactory(user=alice).key
    assert async_to_sync(websocket_accepts)(key)
    ApiToken.objects.all().delete()
    assert not async_to_sync(websocket_accepts)(key)


@pytest.mark.django_db
def test_the_admin_shows_prefixes_only_and_cannot_make_or_show_a_key(client, staff, alice):
    token = ApiTokenFactory(user=alice)
    key = token.key
    client.force_login(staff)

    pages = [client.get(reverse("admin:keys_apitoken_changelist")),
             client.get(reverse("admin:keys_apitoken_change", args=[token.pk]))]

    assert all(page.status_code == 200 for page in pages)
    assert all(token.prefix in page.content.decode() and key not in page.content.decode() for page in pages)
    assert client.get(reverse("admin:keys_apitoken_add")).status_code == 403
    assert not admin.site.is_registered(TokenProxy)  # DRF's admin made plain-text keys
    assert client.post(reverse("admin:keys_apitoken_delete", args=[token.pk]), {"post": "yes"}).status_code == 302
    assert not authenticates(key)  # deleting revokes


@pytest.mark.django_db
def test_the_command_prints_a_new_token_once(alice):
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_token", "alice", stdout=out, stderr=err)

    key = out.getvalue().strip()
    assert authenticates(key)
    assert key[:8] in err.getvalue() and key not in err.getvalue()
    assert ApiToken.objects.get().user == alice
