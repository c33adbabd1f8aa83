"""A request that finds no free database connection in time (Django's pool, PostgreSQL) is a 503 `server_busy`
with Retry-After, in the one error shape: a busy server, not a broken one."""
import pytest
from django.db import OperationalError

from core.api.exceptions import api_exception_handler


class PoolTimeoutStandIn(Exception):
    pass


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")  # (only its pool's timeout is read here)
def test_a_pool_timeout_is_a_503_server_busy_with_retry_after(settings):
    from psycopg_pool import PoolTimeout

    settings.DATABASES = {"default": {**settings.DATABASES["default"], "OPTIONS": {"pool": {"timeout": 7}}}}
    try:
        raise OperationalError("couldn't get a connection after 7.00 sec") from PoolTimeout("timeout")
    except OperationalError as exc:
        response = api_exception_handler(exc, {})

    assert response.status_code == 503 and response["Retry-After"] == "1"
    assert response.data["error"]["code"] == "server_busy" and "7 s" in response.data["error"]["message"]


def test_any_other_database_error_stays_a_logged_500():
    try:
        raise OperationalError("server closed the connection") from PoolTimeoutStandIn()
    except OperationalError as exc:
        response = api_exception_handler(exc, {})
    assert response.status_code == 500 and response.data["error"]["code"] == "server_error"
