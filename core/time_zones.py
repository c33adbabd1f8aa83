"""The time zones a user may name (a schedule's, a budget's): IANA's, by the names its database lists."""
from __future__ import annotations

import zoneinfo
from functools import cache

# Names a zoneinfo directory holds that are no place's time: the system's link to its own zone (the server's clock,
# not the user's), the database's file of default DST rules, and its placeholder for a clock not yet set ("-00").
NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})


@cache
def _zone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) - NOT_ZONES  # (a walk of the disk: once a process)


def time_zone_known(name) -> bool:
    """Whether `name` is an IANA time zone's (`Europe/Paris`, `UTC`): what zoneinfo would load, less NOT_ZONES."""
    return isinstance(name, str) and name in _zone_names()
