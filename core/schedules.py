"""The system's django-q2 schedules, each kept by name."""


def schedule_keep(name: str, **fields) -> None:
    """django-q2's schedule `name` with these fields: created when missing, updated when it differs, else untouched
    (one read: it runs after every migrate, and after each of the test suite's flushes)."""
    from django_q.models import Schedule

    if not Schedule.objects.filter(name=name, **fields).exists():
        Schedule.objects.update_or_create(name=name, defaults=fields)
