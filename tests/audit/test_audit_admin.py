"""The audit admin's "Verify audit chain" button (docs/usage.md#the-back-office-admin-and-analytics). Read-only-ness
is in tests/test_admin.py."""
import pytest
from django.db import connection
from django.urls import reverse

from audit.models import AuditEvent
from audit.services import audit_record

pytestmark = pytest.mark.django_db
CHANGELIST = "admin:audit_auditevent_changelist"
VERIFY = "admin:audit_auditevent_verify"


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


def notes(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_the_changelist_offers_the_button(staff_client):
    response = staff_client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    assert f'href="{reverse(VERIFY)}"' in response.content.decode()
    assert "Verify audit chain" in response.content.decode()


def test_it_reports_a_valid_chain(staff_client):
    audit_record(action="execution.started")
    audit_record(action="execution.completed")

    response = staff_client.get(reverse(VERIFY), follow=True)

    assert response.redirect_chain == [(reverse(CHANGELIST), 302)]
    assert notes(response) == ["Audit chain OK: 2 row(s) verified."]


def test_it_names_the_first_bad_row(staff_client):
    events = [audit_record(action="execution.started") for _ in range(3)]
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {AuditEvent._meta.db_table} WHERE id = %s", [events[1].pk])

    response = staff_client.get(reverse(VERIFY), follow=True)

    [note] = notes(response)
    assert note.startswith(f"Audit chain broken at row #{events[2].pk} (missing_row): ")


def test_a_user_who_is_not_staff_is_sent_to_the_login_page(client, alice):
    client.force_login(alice)
    response = client.get(reverse(VERIFY))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
