"""The clock of a test: waits that keep it clear of a boundary of the wall clock, and clocks held where a boundary
cannot reach it (a test that starts before midnight UTC and ends after it must read the same days, periods and
months throughout)."""
import time
from datetime import date, datetime, timedelta
from datetime import timezone as dt_timezone

from django.utils import timezone

MINUTE_S = 60  # gateway.limits.WINDOW_S and engine.routing.WINDOW_S: counts are per calendar minute


def inside_one_minute(*, at_least_s: float = 20) -> None:
    """Returns once at least `at_least_s` seconds are left in this calendar minute (sleeping into the next minute if
    fewer are), so the requests a test counts next fall in one counting window rather than starting anew midway."""
    left = MINUTE_S - time.time() % MINUTE_S
    if left < at_least_s:
        time.sleep(left + 0.1)


def noon_of(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), tzinfo=dt_timezone.utc) + timedelta(hours=12)


def on_day(monkeypatch, day: date) -> None:
    """The clock (django.utils.timezone.now) reads noon UTC of `day`, standing still: every row written now is booked
    on that day."""
    noon = noon_of(day)
    monkeypatch.setattr(timezone, "now", lambda: noon)


def at(monkeypatch, moment: datetime) -> dict:
    """The clock reads `moment`, standing still, until the test moves it: `clock["now"] = …`."""
    clock = {"now": moment}
    monkeypatch.setattr(timezone, "now", lambda: clock["now"])
    return clock


def from_noon(monkeypatch) -> None:
    """The clock runs as the wall clock does, but from noon UTC of today: hours from any midnight UTC (and from the
    first of a month), so the days and budget periods a test reads cannot change under it. Server processes a test
    starts keep the wall clock."""
    wall = timezone.now
    shift = noon_of(wall().date()) - wall()
    monkeypatch.setattr(timezone, "now", lambda: wall() + shift)
