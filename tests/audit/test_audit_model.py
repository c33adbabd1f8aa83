import pytest
from django.db import transaction
from django.utils import timezone

from audit.models import AppendOnlyError, AuditEvent
from audit.selectors import audit_chain_verify
from audit.services import audit_record

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


def test_a_chained_row_cannot_be_rewritten_in_bulk_either():
    event = audit_record(action="definition.created", target_id="d-1")
    event.target_id = "d-2"
    with pytest.raises(AppendOnlyError), transaction.atomic():
        AuditEvent.objects.bulk_update([event], ["target_id"])
    with pytest.raises(AppendOnlyError), transaction.atomic():
        AuditEvent.objects.update_or_create(pk=event.pk, defaults={"target_id": "d-2"})
    assert AuditEvent.objects.get().target_id == "d-1"
    assert audit_chain_verify().valid
