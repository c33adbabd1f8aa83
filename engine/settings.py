"""What the engine is configured with: one plain object, `settings`, that the application fills (Chatter's workflows
app does it from Django's settings as a process starts and again whenever one of them changes: workflows.engine_setup)
and the engine reads where it needs a value. Used alone, the engine runs on the defaults below: the local provider,
no deployments file, no registered graphs, counters in this process."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Iterable, Mapping, Protocol


class SharedCache(Protocol):
    """Where routing keeps its deployments' cooldowns and this minute's counts, seen by every process that shares
    it: Django's cache API (the subset used), which the application hands over."""

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]: ...

    def add(self, key: str, value: Any, timeout: float | None = None) -> bool: ...

    def incr(self, key: str, delta: int = 1) -> int: ...

    def set(self, key: str, value: Any, timeout: float | None = None) -> None: ...


class ProcessCache:
    """A SharedCache of this process alone (the engine's own, when it is given none): values with an expiry."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[Any, float]] = {}
        self._lock = threading.Lock()

    def _live(self, key: str) -> tuple[Any, float] | None:
        entry = self._values.get(key)
        if entry is not None and entry[1] <= time.monotonic():
            del self._values[key]
            return None
        return entry

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        with self._lock:
            return {key: entry[0] for key in keys if (entry := self._live(key)) is not None}

    def add(self, key: str, value: Any, timeout: float | None = None) -> bool:
        with self._lock:
            if self._live(key) is not None:
                return False
            self._values[key] = (value, time.monotonic() + timeout if timeout else float("inf"))
            return True

    def incr(self, key: str, delta: int = 1) -> int:
        with self._lock:
            entry = self._live(key)
            if entry is None:
                raise ValueError(f"key {key!r} not found")
            self._values[key] = (entry[0] + delta, entry[1])
            return entry[0] + delta

    def set(self, key: str, value: Any, timeout: float | None = None) -> None:
        with self._lock:
            self._values[key] = (value, time.monotonic() + timeout if timeout else float("inf"))


def _no_hooks() -> dict:
    return {}


@dataclass
class EngineSettings:
    """Every value the engine reads. Its attributes are replaced whole (`settings_update`), never mutated."""

    default_provider: str = "local"
    default_model: str = "local-echo-1"
    # The model a call gets when it names a provider but no model.
    provider_default_models: Mapping[str, str] = field(default_factory=lambda: {
        "local": "local-echo-1", "openai": "gpt-4o-mini", "anthropic": "claude-3-5-haiku-latest"})
    execution_timeout_s: float = 300
    provider_timeout_s: float = 120
    provider_max_retries: int = 2
    local_token_delay_ms: int = 0
    openai_api_key: str | None = field(default=None, repr=False)
    openai_base_url: str | None = None
    anthropic_api_key: str | None = field(default=None, repr=False)
    # A JSON or YAML file of deployments (routing); None: each provider's one upstream above.
    deployments: str | None = None
    # Python graphs of one's own: {name: (module file, attribute)} (graph_registry).
    graphs: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    # Values no error message may show (a provider's error may quote a key): errors.secrets_scrub.
    secrets: tuple[str, ...] = field(default=(), repr=False)
    shared_cache: SharedCache = field(default_factory=ProcessCache, repr=False)
    # httpx `event_hooks` for the engine's outbound HTTP clients (the application's tracing), asked for as each
    # client is made.
    outbound_hooks: Callable[[], dict] = field(default=_no_hooks, repr=False)


settings = EngineSettings()
_NAMES = frozenset(item.name for item in fields(EngineSettings))


def settings_update(**values: Any) -> None:
    """Set these of the engine's settings (the others keep theirs); an unknown name is a TypeError."""
    unknown = set(values) - _NAMES
    if unknown:
        raise TypeError(f"not engine settings: {', '.join(sorted(unknown))}")
    for name, value in values.items():
        setattr(settings, name, value)
