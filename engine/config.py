"""Run configuration: defaults from the engine's settings, then template params, then the request; validated once."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.errors import InvalidInput
from engine.providers import PROVIDERS
from engine.settings import settings
from engine.tools import DEFAULT_TOOLS, TOOLS, allowed_tool_unknown


@dataclass(frozen=True)
class Key:
    kind: type | tuple[type, ...]
    low: float | None = None
    high: float | None = None
    nullable: bool = False


CHECKPOINTS = ("every_step", "at_pause")

CONFIG_KEYS: dict[str, Key] = {
    "provider": Key(str),
    "model": Key(str, 1, 255),
    "temperature": Key((int, float), 0, 2, nullable=True),
    "max_tokens": Key(int, 1, 200_000, nullable=True),
    "system_prompt": Key(str, 0, 20_000, nullable=True),
    "enable_memory": Key(bool),
    "memory_window": Key(int, 1, 1000),
    "enable_tools": Key(bool),
    "allowed_tools": Key(list),
    "max_tool_calls": Key(int, 0, 100),
    "enable_retrieval": Key(bool),
    "max_documents": Key(int, 1, 50),
    "timeout_s": Key((int, float), 1, 3600),
    "max_total_tokens": Key(int, 1, 10**9, nullable=True),
    # When the graph's state is saved (LangGraph checkpoints): "every_step", or "at_pause" (when the run waits
    # for input and when it ends); null: every step for background and scheduled runs, at pauses for sync and
    # streamed ones, whose person is there (saving every step costs a chat turn a few ms of CPU).
    "checkpoints": Key(str, nullable=True),
    # Set by the OpenAI-compatible gateway (not in the defaults): the client's own tools (OpenAI function
    # schemas), bound instead of Chatter's and returned to the client as tool calls, never run here; its
    # tool_choice; and the other sampling parameters it passed through (top_p, stop, seed, user, …).
    "client_tools": Key(list, nullable=True),
    "tool_choice": Key((str, dict), nullable=True),
    "model_params": Key(dict, nullable=True),
    # Also the gateway's, for a client that did not ask for a stream: the provider is asked for the reply whole
    # (one response, not a stream), as the client asked Chatter.
    "reply_whole": Key(bool, nullable=True),
}


def config_defaults() -> dict[str, Any]:
    return {
        "provider": settings.default_provider,
        "model": settings.default_model,
        "temperature": None,
        "max_tokens": None,
        "system_prompt": None,
        "enable_memory": True,
        "memory_window": 10,
        "enable_tools": True,
        "allowed_tools": list(DEFAULT_TOOLS),
        "max_tool_calls": 10,
        "enable_retrieval": False,
        "max_documents": 5,
        "timeout_s": settings.execution_timeout_s,
        "max_total_tokens": None,
        "checkpoints": None,
    }


def checkpoints_every_step(config: dict, *, mode: str) -> bool:
    """Whether a run saves its graph's state after every step (else when it waits for input and when it ends)."""
    chosen = config.get("checkpoints")
    return chosen == "every_step" if chosen else mode in ("background", "scheduled")


def _error(path: str, code: str, message: str) -> dict:
    return {"path": path, "code": code, "message": message}


def config_errors(layer: Any, *, prefix: str = "config") -> list[dict]:
    if not isinstance(layer, dict):
        return [_error(prefix, "invalid_type", "config must be an object")]
    errors = []
    for name, value in layer.items():
        path = f"{prefix}.{name}"
        key = CONFIG_KEYS.get(name)
        if key is None:
            errors.append(_error(path, "unknown_key", f"unknown config key {name!r}"))
        elif value is None:
            if not key.nullable:
                errors.append(_error(path, "required", f"{name} may not be null"))
        elif isinstance(value, bool) and key.kind is not bool or not isinstance(value, key.kind):
            errors.append(_error(path, "invalid_type", f"{name} has the wrong type"))
        elif isinstance(value, str) and key.low is not None and not key.low <= len(value) <= key.high:
            errors.append(_error(path, "out_of_range", f"{name} must be {key.low:g}..{key.high:g} characters"))
        elif not isinstance(value, (str, bool, list)) and key.low is not None and not key.low <= value <= key.high:
            errors.append(_error(path, "out_of_range", f"{name} must be between {key.low:g} and {key.high:g}"))
        elif name == "checkpoints" and value not in CHECKPOINTS:
            errors.append(_error(path, "invalid_choice", f"checkpoints must be one of {', '.join(CHECKPOINTS)}"))
        elif name == "provider" and value not in PROVIDERS:
            errors.append(_error(path, "invalid_choice", f"provider must be one of {', '.join(PROVIDERS)}"))
        elif name == "allowed_tools":
            unknown = [t for t in value if allowed_tool_unknown(t)]
            if unknown:
                errors.append(_error(path, "invalid_choice", f"unknown tools {', '.join(map(repr, unknown))}; "
                                                             f"known: {', '.join(sorted(TOOLS))}, or an MCP tool "
                                                             "as <server>__<tool> or <server>__*"))
    return errors


def config_resolve(*layers: dict | None) -> dict[str, Any]:
    """Merge layers over the defaults (later wins) and validate each; raise InvalidInput listing every error."""
    resolved = config_defaults()
    errors: list[dict] = []
    for layer in layers:
        if layer is None:
            continue
        errors += config_errors(layer)
        if isinstance(layer, dict):
            resolved.update(layer)
    if errors:
        raise InvalidInput("invalid run configuration", details=errors)
    if "model" not in _explicit_keys(layers) and resolved["provider"] != settings.default_provider:
        resolved["model"] = settings.provider_default_models[resolved["provider"]]
    return resolved


def _explicit_keys(layers) -> set[str]:
    return {k for layer in layers if isinstance(layer, dict) for k in layer}

