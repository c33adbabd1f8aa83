import pytest
from django.utils import timezone

from audit.models import AppendOnlyError, AuditEvent

pytestmark = pytest.mark.django_db


def make_event(**kwargs):
    return AuditEvent.objects.create(created_at=timezone.now(), action="execution.started", prev_hash="0" * 64,
                                     hash="a" * 64, **kwargs)


def test_an_audit_row_cannot_be_changed_or_deleted_through_the_orm():
    event = make_event()
    event.action = "tampered"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).update(action="tampered")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.get().action == "execution.started"
