"""django-q2 task functions of the audit trail: they call services, and are safe to deliver twice."""
from audit.services import access_denied_windows_close


def access_denied_windows_close_task() -> int:
    """Every minute (`chatter-audit-access-denied`, audit.services.access_denied_schedule_ensure): write the
    windows of anonymous refusals that are over as one `access.denied` row each."""
    return access_denied_windows_close()
