"""What a failed provider call means for a run and for its caller: rate limited, timed out or another provider error,
with why (a connection refused, reset, timed out; the URL that failed) for the operator, and what the upstream said
(its status, its own error object, its Retry-After) kept apart as facts, which a caller's answer is made from
(gateway.errors); and whether a failure is its deployment's fault (engine.routing tries another)."""
from __future__ import annotations

import math
from urllib.parse import urlsplit

from engine.errors import ProviderError

RETRY_AFTER_MOST_S = 86_400.0  # an upstream's Retry-After past a day is read as a day


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and what caused it, outermost first (client libraries wrap the transport's errors)."""
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def _kinds(chain: list[BaseException]) -> set[str]:
    # By class name, so that openai's (httpx2), anthropic's (httpx) and the gateway's (aiohttp) transport errors
    # read alike.
    return {cls.__name__ for exc in chain for cls in type(exc).__mro__}


def _request_url(chain: list[BaseException]) -> str:
    """The URL of the request that failed, as the client library recorded it, without credentials or query
    (either may carry a key)."""
    for exc in chain:
        try:
            url = getattr(getattr(exc, "request", None), "url", None)
        except RuntimeError:  # httpx: an error raised outside any request has none
            url = None
        if url is not None:
            return safe_url(str(url))
    return ""


def safe_url(url: str) -> str:
    """`url` without credentials or query (either may carry a key)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _connection_failure(chain: list[BaseException], *, timeout_s: float | None, mid_stream: bool) -> str:
    """Why the connection failed, in words, or "" when the failure is not the connection's (an HTTP status)."""
    kinds = _kinds(chain)
    where = "mid-stream" if mid_stream else "before any reply"
    if any(isinstance(exc, TimeoutError) for exc in chain) or kinds & {"APITimeoutError", "TimeoutException"}:
        after = f" after {timeout_s:g} s" if timeout_s else ""
        if kinds & {"ConnectTimeout", "ConnectionTimeoutError"}:
            return f"timed out{after} connecting"
        return f"timed out{after} without data mid-stream" if mid_stream else f"timed out{after} waiting for a reply"
    if "ConnectionRefusedError" in kinds:
        return "connection refused"
    if "gaierror" in kinds:
        return "host not found"
    if "ConnectionResetError" in kinds:
        return f"connection reset {where}"
    if kinds & {"RemoteProtocolError", "ServerDisconnectedError", "ClientPayloadError"}:
        return f"connection closed by the server {where}"
    if kinds & {"APIConnectionError", "TransportError", "ConnectionError", "ClientConnectionError"}:
        return "connection failed" + (f" {where}" if mid_stream else "")
    return ""


def provider_failure(exc: Exception, *, provider: str, timeout_s: float | None = None,
                     mid_stream: bool = False, url: str = "", answered_error: dict | None = None) -> ProviderError:
    """What a failed provider call means for the run: rate limited, timed out, or any other provider error. Its
    message names the URL that failed and, for a connection that failed, why (refused, reset, timed out):
    client libraries say only "Connection error." or "Request timed out.". That message is the operator's; what
    the upstream said is kept apart as facts (`upstream`), which a caller's answer is made from. `answered_error`:
    the error object the upstream answered 200 with (RawUsageReports.error), the call's failure whatever the client
    library raised of it (answered_error_failure)."""
    chain = _chain(exc)
    url = _request_url(chain) or (safe_url(url) if url else "")  # (`url`: the call's, where the error names none)
    if answered_error is not None:
        return answered_error_failure(answered_error, provider=provider, url=url)
    reason = _connection_failure(chain, timeout_s=timeout_s, mid_stream=mid_stream)
    if getattr(exc, "status_code", None) == 429:
        error_type = "provider_rate_limited"
    elif reason.startswith("timed out"):
        error_type = "provider_timeout"
    else:
        error_type = "provider_error"
    if reason:
        cause = chain[-1]
        reason += f" ({type(cause).__name__}: {cause})" if str(cause) else f" ({type(cause).__name__})"
    else:
        reason = f"{type(exc).__name__}: {exc}"
    target = f" to {url}" if url else ""
    return ProviderError(f"{provider} call{target} failed: {reason}{_path_hint(exc, url)}", error_type=error_type,
                         upstream=_facts(chain, timed_out=error_type == "provider_timeout"))


def answered_error_failure(said: dict, *, provider: str, url: str = "") -> ProviderError:
    """A call its upstream answered HTTP 200 with an error object (`said`: error_object's), as OpenAI-compatible servers
    may: the upstream failing (provider_error), its facts its status (200) and its error object."""
    target = f" to {safe_url(url)}" if url else ""
    return ProviderError(f"{provider} call{target} answered HTTP 200 with an error: "
                         f"{said.get('message') or 'no message'}", error_type="provider_error",
                         upstream=upstream_facts(status=200, body={"error": said}))


def upstream_facts(*, status: int | None, headers=None, body=None, timed_out: bool = False) -> dict:
    """What an upstream answered a failed call, as JSON-ready facts: its HTTP status (None: no answer at all), its
    own error object ({message, type, code, param}, from its JSON `body`) when it sent one, its Retry-After in
    seconds (from its `headers`), whether the call timed out. gateway.errors makes a caller's answer of them, for a
    call through a client library (provider_failure) or relayed as is."""
    return {"status": status, "timed_out": timed_out,
            "retry_after_s": retry_after_s(headers or {}) if status else None,
            "error": error_object(body) if status else None}


def _facts(chain: list[BaseException], *, timed_out: bool) -> dict:
    """upstream_facts of a client library's error: its status, its response's headers, the body it parsed (its
    `body`)."""
    body = next((e.body for e in chain if isinstance(getattr(e, "body", None), dict)), None)
    return upstream_facts(status=_status(chain), headers=_response_headers(chain), body=body, timed_out=timed_out)


def _status(chain: list[BaseException]) -> int | None:
    return next((e.status_code for e in chain if isinstance(getattr(e, "status_code", None), int)), None)


def _response_headers(chain: list[BaseException]):
    response = next((getattr(e, "response", None) for e in chain if getattr(e, "response", None) is not None), None)
    return getattr(response, "headers", None) or {}


def retry_after_s(headers) -> float | None:
    """An upstream's Retry-After (retry-after-ms first, as OpenAI's clients read it) in seconds, at most a day; None
    for none, an HTTP date (not read), a negative or not a number (`inf`, `nan`)."""
    said = headers.get("retry-after-ms") or headers.get("retry-after")
    try:
        seconds = float(said) / (1000 if headers.get("retry-after-ms") else 1) if said else math.nan
    except ValueError:
        return None
    return min(seconds, RETRY_AFTER_MOST_S) if math.isfinite(seconds) and seconds >= 0 else None


def error_object(body) -> dict | None:
    """The error object of an upstream's error body, its string fields only: OpenAI's {"error": {...}} (which
    OpenAI's client hands over unwrapped) and Anthropic's {"type": "error", "error": {...}}."""
    if not isinstance(body, dict):
        return None
    if isinstance(body.get("error"), dict):
        body = body["error"]
    kept = {name: body[name] for name in ("message", "type", "code", "param") if isinstance(body.get(name), str)}
    return kept or None


def _path_hint(exc: Exception, url: str) -> str:
    """A 404 from a server whose API path has no /v1: OpenAI-compatible servers answer under /v1, and without it
    most say only "not found" or "model not found", which sends one looking for the model instead of the URL."""
    path = urlsplit(url).path
    if getattr(exc, "status_code", None) != 404 or not path.endswith("/chat/completions") or "/v1/" in path:
        return ""
    base = url.removesuffix("/chat/completions")
    return f"; the path of OPENAI_BASE_URL looks wrong: OpenAI-compatible servers answer under /v1 (try {base}/v1)"


# HTTP statuses that say a deployment (not the request) is at fault: rate limited, overloaded or down, or its key or
# model wrong. A call that gets one before any reply is retried on another deployment.
DEPLOYMENT_FAULT_STATUSES = frozenset({401, 403, 404, 408, 409, 429}) | frozenset(range(500, 600))


def deployment_fault(exc: Exception) -> tuple[int | None, float | None] | None:
    """Whether a failed call is its deployment's fault (an HTTP status of DEPLOYMENT_FAULT_STATUSES, a timeout, a
    connection that failed): (its HTTP status or None, the Retry-After it sent in seconds or None); None when the
    request itself is at fault (another deployment would refuse it too)."""
    chain = _chain(exc)
    status = _status(chain)
    if status is None:
        return (None, None) if _connection_failure(chain, timeout_s=None, mid_stream=False) else None
    if status not in DEPLOYMENT_FAULT_STATUSES:
        return None
    return status, retry_after_s(_response_headers(chain))
