"""The answer to a /v1/ call that did not complete, as OpenAI's clients expect it: made in one place (call_failure)
from what the upstream said (engine.provider_failures.upstream_facts), for a whole answer, a stream's error
object and the Responses API's failed response alike. The request's own fault keeps the upstream's status and
error object, a rate limit is a 429 with Retry-After, an upstream failure a 502 (a timeout 504), Chatter's own
refusal (a budget, a limit, a cancellation) a 429, 400 or 409 that is not retried (refusal_headers, which the one
error path also sends for a budget's refusal at a call's start); the caller is told the model and the request id,
the operator's log has the rest (docs/api/gateway.md#errors).
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field

from engine.provider_failures import DEPLOYMENT_FAULT_STATUSES

logger = logging.getLogger(__name__)

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "invalid_request_error", 409: "invalid_request_error", 413: "invalid_request_error",
               422: "invalid_request_error", 429: "rate_limit_error"}
# Run errors that are Chatter's own refusals (a budget, a limit, a cancellation): their message shown as is, and an
# answer no client retries (x-should-retry: false, which OpenAI's clients obey; none of these statuses is a 5xx).
OWN_REFUSALS = {"budget_exceeded": 429, "limit_exceeded": 400, "cancelled": 409}
NOT_RETRIED = {"x-should-retry": "false"}
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>)]+", re.IGNORECASE)


def openai_error(*, status: int, code: str, message: str, param: str | None = None,
                 error_type: str | None = None) -> dict:
    """OpenAI's error object: {"error": {"message", "type", "code", "param"}}."""
    error_type = error_type or ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    if code == "budget_exceeded":
        error_type = "insufficient_quota"
    return {"error": {"message": message, "type": error_type, "code": code, "param": param}}


def refusal_headers(*, status: int, code: str) -> dict[str, str]:
    """The headers of an answer with `status` and error `code`: Chatter's own refusal (OWN_REFUSALS), mid-call or at
    the call's start (a hard budget with no room: gateway.views.OpenAIErrors), is not retried; any other answer
    (a rate limit, the limit of runs at once) says nothing of it, so a client may retry it."""
    return dict(NOT_RETRIED) if OWN_REFUSALS.get(code) == status else {}


@dataclass(frozen=True)
class CallFailure:
    status: int
    body: dict  # OpenAI's error object
    headers: dict[str, str] = field(default_factory=dict)


def client_fault(status: int | None) -> bool:
    """An upstream status that says the request itself is at fault: another deployment would refuse it too."""
    return status is not None and 400 <= status < 500 and status not in DEPLOYMENT_FAULT_STATUSES


def call_failure(*, upstream: dict | None, error_type: str, detail: str, model: str,
                 request_id: str) -> CallFailure:
    """The answer to a call that failed: `upstream` the facts of its upstream's answer (None: the call failed in
    Chatter, not upstream), `error_type` the run's, `detail` its full message (logged, never answered), `model` the
    model the caller asked for, `request_id` the call's (its run's) id."""
    facts = upstream or {}
    status = facts.get("status")
    retry_after = facts.get("retry_after_s")
    where = f"Request id: {request_id}."
    headers: dict[str, str] = {}
    if upstream is None and error_type in OWN_REFUSALS:
        answer = OWN_REFUSALS[error_type]
        headers = refusal_headers(status=answer, code=error_type)
        body = openai_error(status=answer, code=error_type, message=f"{_sentence(detail)} {where}")
    elif upstream is None:
        answer = 502
        message = f"The call to model `{model}` failed ({error_type or 'error'})."
        body = openai_error(status=answer, code=error_type or "error", message=f"{message} {where}")
    elif facts.get("unavailable") or status == 429:
        answer = 429
        wait = f" Retry after {math.ceil(retry_after)} s." if retry_after is not None else ""
        message = (f"No deployment of model `{model}` can take the call now: each is rate limited or cooling down."
                   if facts.get("unavailable") else f"The upstream of model `{model}` is rate limited.")
        body = openai_error(status=answer, code=error_type or "rate_limit_exceeded", message=f"{message}{wait} {where}")
        if retry_after is not None:
            headers = {"Retry-After": str(max(1, math.ceil(retry_after))),
                       "retry-after-ms": str(max(0, round(retry_after * 1000)))}
    elif client_fault(status):
        answer = status
        said = facts.get("error") or {}
        message = _URL.sub("<upstream>", said.get("message") or f"The upstream of model `{model}` refused the request.")
        body = openai_error(status=answer, code=said.get("code") or "invalid_request", message=message,
                            param=said.get("param"), error_type=said.get("type"))
    elif facts.get("timed_out") or status == 408:
        answer = 504
        body = openai_error(status=answer, code=error_type or "provider_timeout",
                            message=f"The upstream of model `{model}` did not answer in time. {where}")
    elif status is not None and status < 400:  # an error object answered 200, as some compatible servers answer
        answer = 502
        said = (facts.get("error") or {}).get("message")
        message = f"The upstream of model `{model}` answered with an error" + (
            f": {_sentence(_URL.sub('<upstream>', said))}" if said else ".")
        body = openai_error(status=answer, code=error_type or "provider_error", message=f"{message} {where}")
    else:
        answer = 502
        message = (f"The upstream of model `{model}` answered HTTP {status}." if status else
                   f"The connection to the upstream of model `{model}` failed.")  # refused, reset, closed
        body = openai_error(status=answer, code=error_type or "provider_error", message=f"{message} {where}")
    logger.warning("gateway call %s (model %s) failed, answered %s: %s: %s", request_id, model, answer,
                   error_type or "error", detail)
    return CallFailure(answer, body, headers)


def execution_failure(execution, *, model: str) -> CallFailure:
    """call_failure of a gateway run that did not complete, from what the run recorded."""
    return call_failure(upstream=(execution.output_data or {}).get("upstream"), error_type=execution.error_type,
                        detail=execution.error_message, model=model, request_id=str(execution.pk))


def _sentence(text: str) -> str:
    """`text` ending as a sentence ends, so that what follows it reads as the next one."""
    return text if text.endswith((".", "!", "?")) else f"{text}."
