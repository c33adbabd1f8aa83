"""api_token_get, on every API request: one statement reads the live key and its user; a revoked or expired key
is refused by the lookup itself."""
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.cache import HOT_READS_VERSION, hot_reads
from keys.models import ApiToken
from keys.services import api_token_get
from tests.factories import ApiTokenFactory

pytestmark = pytest.mark.django_db


def test_a_key_is_read_with_its_user_in_one_statement(alice, bob):
    mine = ApiTokenFactory(user=alice, name="ci", scopes=["read"],
                           expires_at=timezone.now().replace(year=2999))
    key = mine.key
    ApiTokenFactory(user=bob)
    with CaptureQueriesContext(connection) as queries:
        found = api_token_get(key=key)
        assert (found.pk, found.user.username) == (mine.pk, "alice")  # the user came with the row
    # (and the hot reads' version, where it is in the database: once a request)
    assert len([query for query in queries.captured_queries if query["sql"] != HOT_READS_VERSION]) == 1


def test_a_key_is_found_until_it_is_revoked_or_expires(alice):
    token = ApiTokenFactory(user=alice)
    key = token.key
    assert api_token_get(key=key).user == alice
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    hot_reads.renew()  # (a bare UPDATE sends no signal: renewed as a change would)
    assert api_token_get(key=key) is None
    ApiToken.objects.filter(pk=token.pk).update(expires_at=None, revoked_at=timezone.now())
    hot_reads.renew()  # (a bare UPDATE sends no signal: renewed as a change would)
    assert api_token_get(key=key) is None
    assert api_token_get(key="") is None and api_token_get(key="x" * 500) is None
