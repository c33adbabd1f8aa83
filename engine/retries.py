"""The retries the engine makes itself, for the providers whose client library cannot be held to a run's deadline:
Anthropic's (LangChain's ChatAnthropic makes its own HTTP client, so no transport can bound its requests and retries
as engine.openai_http bounds the openai library's). The library would give each retry the whole of its timeout
again: a run whose upstream stopped answering lasted its timeout_s once per retry. Its client is made not to retry;
the call is made again (a new request, waiting at most what is left of the run) where the library would have retried,
after the back-off it would have waited, and never past the run's deadline."""
from __future__ import annotations

from engine.provider_failures import deployment_fault
from engine.settings import settings

RETRIED_BY_THE_ENGINE = frozenset({"anthropic"})
# What the client libraries retry: a connection that failed or timed out, and these statuses.
RETRIED_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600))
BACKOFF_FIRST_S, BACKOFF_MOST_S = 0.5, 8.0  # the libraries' back-off: doubling from the first, at most the most
RETRY_AFTER_MOST_S = 60.0  # a Retry-After the libraries wait out; a longer one is backed off instead


def retry_wait_s(exc: Exception, *, provider: str, retries_taken: int, time_left: float) -> float | None:
    """How long to wait before `provider`'s failed call (nothing of it received) is made again, or None when it is not
    (a provider whose client library retries, the request's own fault, CHATTER_PROVIDER_MAX_RETRIES taken, or a retry
    that would begin past the run's deadline: `time_left`, in seconds)."""
    if provider not in RETRIED_BY_THE_ENGINE or retries_taken >= settings.provider_max_retries:
        return None
    fault, said = deployment_fault(exc), _should_retry_said(exc)
    status, retry_after = fault or (None, None)
    if not (said == "true" or said != "false" and fault is not None and status in RETRIED_STATUSES | {None}):
        return None
    wait = retry_after if retry_after is not None and 0 < retry_after <= RETRY_AFTER_MOST_S else min(
        BACKOFF_FIRST_S * 2 ** retries_taken, BACKOFF_MOST_S)
    return wait if wait < time_left else None


def _should_retry_said(exc: BaseException | None) -> str | None:
    """What the upstream's error answer said of a retry (x-should-retry: "true" or "false"), which the libraries obey."""
    while exc is not None:
        response = getattr(exc, "response", None)
        if response is not None:
            return response.headers.get("x-should-retry")
        exc = exc.__cause__
    return None
