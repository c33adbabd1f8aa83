"""Waits that keep a test clear of a boundary of the wall clock."""
import time

MINUTE_S = 60  # gateway.limits.WINDOW_S and engine.routing.WINDOW_S: counts are per calendar minute


def inside_one_minute(*, at_least_s: float = 20) -> None:
    """Returns once at least `at_least_s` seconds are left in this calendar minute (sleeping into the next minute if
    fewer are), so the requests a test counts next fall in one counting window rather than starting anew midway."""
    left = MINUTE_S - time.time() % MINUTE_S
    if left < at_least_s:
        time.sleep(left + 0.1)
