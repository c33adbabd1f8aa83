"""The one error hierarchy: the engine raises these, and the application builds its own on them (Chatter's are in
core.errors, which re-exports these). Every interface renders them in one shape:
{"error": {"code": ..., "message": ..., "details": [{"path": ..., "code": ..., "message": ...}, ...]}}."""
from typing import Any

from engine.redaction import secret_forms, secrets_scrubbed
from engine.settings import settings

def secrets_scrub(value):
    """`value` (text, or JSON-like: engine.redaction.secrets_scrubbed) without any configured secret
    (settings.secrets) in any of its forms: a provider's error may quote our key."""
    return secrets_scrubbed(value, secret_forms(settings.secrets))


class ChatterError(Exception):
    code = "error"
    status = 500

    def __init__(self, message: str, *, code: str | None = None, details: Any = None):
        # Messages reach responses, events, messages and logs; a provider's error may quote our API key.
        message = secrets_scrub(message)
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details

    def as_dict(self) -> dict:
        return {"error": {"code": self.code, "message": self.message,
                          "details": error_details(self.details, code=self.code)}}


ITEM_KEYS = {"path", "code", "message"}


def error_details(details: Any, *, code: str, path: str = "") -> list[dict]:
    """Every error's `details` in the one shape: a list of {path, code, message}, empty when there is nothing
    more to say. `path` is where in the input ("config.temperature", "nodes[3].id"; "" for the request as a
    whole). Accepts what raisers give: items already in that shape, DRF's field maps (their ErrorDetail codes
    kept), and {name: value} specifics such as a limit (the name is the path, the value the message)."""
    if details is None:
        return []
    if isinstance(details, dict):
        if set(details) == ITEM_KEYS:
            return [{"path": str(details["path"]), "code": str(details["code"]),
                     "message": str(details["message"])}]
        items = []
        for key, value in details.items():
            inner = path if key == "non_field_errors" else _path_join(path, str(key))
            items += error_details(value, code=code, path=inner)
        return items
    if isinstance(details, (list, tuple)):
        items = []
        for index, value in enumerate(details):
            nested = isinstance(value, dict) and set(value) != ITEM_KEYS
            items += error_details(value, code=code, path=f"{path}[{index}]" if nested else path)
        return items
    # a leaf: DRF's ErrorDetail (a str with a code), a plain message, or a value such as a limit
    return [{"path": path, "code": str(getattr(details, "code", None) or code), "message": str(details)}]


def _path_join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


class InvalidInput(ChatterError):
    """Bad input from a user: nothing was written."""

    code = "validation_error"
    status = 400


class RunError(ChatterError):
    """A run ended early. `error_type` is what lands on the execution row; `raised`, when the run ended on an
    exception of the graph's (its own code's, LangGraph's GraphRecursionError), that exception as LangGraph's
    server names it: {"error": its class's name, "message": its text}."""

    error_type = "internal_error"
    raised: dict | None = None

    def __init__(self, message: str, *, error_type: str | None = None, raised: BaseException | None = None,
                 **kwargs):
        super().__init__(message, **kwargs)
        if error_type:
            self.error_type = error_type
        if raised is not None:
            self.raised = {"error": type(raised).__name__, "message": secrets_scrub(str(raised))}


class GraphRaised(RunError):
    """A registered graph's own code raised: the run ends internal_error, as any exception that ends a run, and
    keeps what was raised (`raised`)."""

    def __init__(self, exc: Exception):
        super().__init__(f"{type(exc).__name__}: {exc}", raised=exc)


class OwnWorkFailed(RunError):
    """The run's own work during a model call (its hooks: a write, an event, a cancel check) raised: the run ends
    internal_error, not as the provider's failure (no other deployment is tried, none is faulted), the call recorded
    as cut short."""

    def __init__(self, exc: Exception):
        super().__init__(f"the run's own work failed during its model call: {type(exc).__name__}: {exc}")


class LimitExceeded(RunError):
    error_type = "limit_exceeded"
    code = "limit_exceeded"

    def __init__(self, limit: str, value: Any, message: str | None = None, raised: BaseException | None = None):
        super().__init__(message or f"run exceeded {limit} ({value})", raised=raised)
        self.limit = limit
        self.value = value


class RunCancelled(RunError):
    error_type = "cancelled"
    code = "cancelled"


class ProviderError(RunError):
    """A provider call failed. `upstream`: what its upstream said, as facts a caller's answer is made from (its HTTP
    status, its own error object, its Retry-After; see engine.provider_failures.upstream_facts), kept on the run."""

    error_type = "provider_error"
    code = "provider_error"

    def __init__(self, message: str, *, upstream: dict | None = None, **kwargs):
        super().__init__(message, **kwargs)
        self.upstream = secrets_scrub(upstream)  # its error object may quote our API key, as its message may


class NodeFailed(RunError):
    error_type = "node_error"
    code = "node_error"
