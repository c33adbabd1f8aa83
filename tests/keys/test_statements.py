"""keys/statements.py's KEY_LIVE (PostgreSQL): the key and its user come back as the ORM's queryset makes them,
every field equal and typed alike; revoked and expired keys, and unknown digests, are not found."""
from datetime import timedelta

import pytest
from django.utils import timezone

from keys import statements
from keys.models import ApiToken
from keys.services import token_digest
from tests.factories import ApiTokenFactory

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


def fields(instance) -> dict:
    return {field.attname: getattr(instance, field.attname) for field in instance._meta.concrete_fields}


def test_the_key_and_its_user_read_back_as_the_orm_reads_them(alice):
    made = ApiTokenFactory(user=alice, name="ci", scopes=["read", "write"],
                           expires_at=timezone.now() + timedelta(days=3))
    key = made.key
    found = statements.key_live(digest=token_digest(key), now=timezone.now())
    expected = ApiToken.objects.select_related("user").get(pk=made.pk)

    assert fields(found) == fields(expected)
    assert {k: type(v) for k, v in fields(found).items()} == {k: type(v) for k, v in fields(expected).items()}
    assert fields(found.user) == fields(expected.user)
    assert not found._state.adding and found._state.db == "default"


def test_revoked_expired_and_unknown_keys_are_not_found(alice):
    token = ApiTokenFactory(user=alice)
    key = token.key
    digest = token_digest(key)
    assert statements.key_live(digest=digest, now=timezone.now()) is not None
    assert statements.key_live(digest=token_digest("other"), now=timezone.now()) is None
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() + timedelta(minutes=1))
    assert statements.key_live(digest=digest, now=timezone.now() + timedelta(minutes=2)) is None
    ApiToken.objects.filter(pk=token.pk).update(expires_at=None, revoked_at=timezone.now())
    assert statements.key_live(digest=digest, now=timezone.now()) is None
