"""The one error hierarchy (docs/architecture.md#errors): the engine's errors (engine.errors: the base,
bad input, a run's ends), re-exported here, and the interfaces' own below, built on them. Every layer raises these;
interfaces render them in one shape:
{"error": {"code": ..., "message": ..., "details": [{"path": ..., "code": ..., "message": ...}, ...]}}."""
from engine.errors import (  # noqa: F401 - re-exported: the one hierarchy
    ChatterError,
    GraphRaised,
    InvalidInput,
    LimitExceeded,
    NodeFailed,
    ProviderError,
    RunCancelled,
    RunError,
    error_details,
)


class PayloadTooLarge(ChatterError):
    code = "payload_too_large"
    status = 413


class Forbidden(ChatterError):
    """The object is visible to the user but not theirs to change (e.g. a built-in template)."""

    code = "permission_denied"
    status = 403


class NotFound(ChatterError):
    code = "not_found"
    status = 404


class Conflict(ChatterError):
    code = "conflict"
    status = 409


class TooManyRuns(ChatterError):
    code = "too_many_runs"
    status = 429


class Unavailable(ChatterError):
    """Nothing was done, for a passing reason (the server is busy, the queue is down): try again."""

    code = "unavailable"
    status = 503


class UpstreamFailed(ChatterError):
    """A service a request needed (a provider's embeddings API) failed or answered what cannot be used: nothing
    was written."""

    code = "upstream_error"
    status = 502


class BudgetExceeded(LimitExceeded):
    """A run reached a hard budget: it stops before its next model call, its usage so far kept."""

    error_type = "budget_exceeded"
    code = "budget_exceeded"
