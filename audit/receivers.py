"""Audit rows for news the layers below send (connected in apps.py ready())."""
from django.dispatch import receiver

from audit.services import access_denied_record, audit_record
from core.signals import access_denied
from keys.signals import api_key_changed


@receiver(access_denied, dispatch_uid="audit_access_denied")
def access_denied_audit(sender, *, user, ip, method, path, status, **kwargs) -> None:
    access_denied_record(user=user, ip=ip, method=method, path=path, status=status)


@receiver(api_key_changed, dispatch_uid="audit_api_key_changed")
def api_key_changed_audit(sender, *, action, token, actor, ip=None, **kwargs) -> None:
    """Which key (its public id and prefix, never the key), whose, and what it may do."""
    audit_record(action=action, actor=actor, target_type="api_key", target_id=str(token.uid), ip=ip, data={
        "name": token.name, "prefix": token.prefix, "scopes": token.scopes,
        "expires_at": token.expires_at.isoformat() if token.expires_at else None, "owner_id": token.user_id})
