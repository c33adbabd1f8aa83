"""core/rows.py's joined read: the same instances a queryset with select_related reads, in one
statement."""
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.rows import column_of, db_value, rows_select_with
from keys.models import ApiToken
from keys.services import api_token_create, api_token_get

pytestmark = pytest.mark.django_db


def test_a_joined_read_gives_what_select_related_gives_in_one_statement(alice, bob):
    mine, _ = api_token_create(user=alice, name="ci", scopes=["read"], expires_at=timezone.now().replace(year=2999))
    api_token_create(user=bob)
    with CaptureQueriesContext(connection) as queries:
        found = rows_select_with(ApiToken, "user", f"{column_of(ApiToken, 'digest')} = %s", [mine.digest])
        assert [(t.pk, t.user.username) for t in found] == [(mine.pk, "alice")]  # the user came with the row
    assert len(queries.captured_queries) == 1
    orm = ApiToken.objects.select_related("user").get(pk=mine.pk)
    fields = [f.attname for f in ApiToken._meta.concrete_fields]
    assert [getattr(found[0], f) for f in fields] == [getattr(orm, f) for f in fields]
    user_fields = [f.attname for f in type(alice)._meta.concrete_fields]
    assert [getattr(found[0].user, f) for f in user_fields] == [getattr(orm.user, f) for f in user_fields]
    later = db_value(ApiToken, "created_at", timezone.now().replace(year=2998))
    assert rows_select_with(ApiToken, "user", f"{column_of(ApiToken, 'created_at')} > %s", [later]) == []


def test_a_key_is_found_until_it_is_revoked_or_expires(alice):
    token, key = api_token_create(user=alice)
    assert api_token_get(key=key).user == alice
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert api_token_get(key=key) is None
    ApiToken.objects.filter(pk=token.pk).update(expires_at=None, revoked_at=timezone.now())
    assert api_token_get(key=key) is None
    assert api_token_get(key="") is None and api_token_get(key="x" * 500) is None
