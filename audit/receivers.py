"""Audit rows for news the layers below send (connected in apps.py ready())."""
from django.dispatch import receiver

from audit.services import access_denied_record
from chatter_project.signals import access_denied


@receiver(access_denied, dispatch_uid="audit_access_denied")
def access_denied_audit(sender, *, user, ip, method, path, status, **kwargs) -> None:
    access_denied_record(user=user, ip=ip, method=method, path=path, status=status)
