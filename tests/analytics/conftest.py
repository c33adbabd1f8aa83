import pytest
from rest_framework.test import APIClient


def logged_in(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


@pytest.fixture
def alice_api(alice) -> APIClient:
    return logged_in(alice)


@pytest.fixture
def bob_api(bob) -> APIClient:
    return logged_in(bob)


@pytest.fixture
def staff_api(staff) -> APIClient:
    return logged_in(staff)
