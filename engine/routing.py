"""Routing of model calls over deployments (settings.deployments, a JSON or YAML file): a model name served by several
deployments, chosen by weight among the healthy ones, with ordered fallbacks
(docs/api/gateway.md#routing-over-deployments).

The file is read and validated once per process (Chatter reads it as it starts: workflows.engine_setup); a call reads
the table from memory. Cooldowns and each deployment's requests and tokens this minute are kept in the shared cache
(settings.shared_cache), so choosing a deployment costs one cache read, never a database query; if the cache cannot be
reached every deployment counts as healthy (logged).
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.settings import settings

logger = logging.getLogger(__name__)

WINDOW_S = 60  # the counting window of a deployment's rpm and tpm
COOLDOWN_MAX_S = 3600.0
ROUTED_PROVIDERS = ("openai", "anthropic")


class DeploymentsInvalid(ValueError):
    """A deployments file that cannot be used: every problem named (a variable that is not set by its name, its
    value never shown)."""

    def __init__(self, path: str, problems: str):
        super().__init__(f"deployments file {path}: {problems}")
        self.path, self.problems = path, problems


class _DeploymentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    provider: Literal["openai", "anthropic"] = "openai"
    base_url: str = Field(min_length=1, max_length=500)
    api_key_env: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    model: str | None = Field(default=None, min_length=1, max_length=255)
    weight: float = Field(default=1.0, gt=0, le=1_000_000)
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    timeout_s: float | None = Field(default=None, gt=0, le=3600)

    @field_validator("base_url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or len(value.split("://", 1)[1].strip("/")) == 0:
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _key(self) -> "_DeploymentSpec":
        if self.provider == "anthropic" and not self.api_key_env:
            raise ValueError("an anthropic deployment needs api_key_env (the variable holding its key)")
        return self


class _RouteSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: Literal["openai", "anthropic"] | None = None
    deployments: list[_DeploymentSpec] = Field(min_length=1, max_length=100)
    fallbacks: list[str] = Field(default_factory=list, max_length=20)


class _FileSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cooldown_s: float = Field(default=30.0, gt=0, le=COOLDOWN_MAX_S)
    models: dict[str, _RouteSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _names(self) -> "_FileSpec":
        problems = []
        for name, route in self.models.items():
            if not name or "/" in name or len(name) > 255 or any(char.isspace() for char in name):
                problems.append(f"models.{name}: a model name is 1 to 255 characters, without '/' or spaces")
            for index, fallback in enumerate(route.fallbacks):
                if fallback == name or fallback not in self.models:
                    problems.append(f"models.{name}.fallbacks.{index}: {fallback!r} must be another model of this "
                                    "file")
                elif route.fallbacks.index(fallback) != index:
                    problems.append(f"models.{name}.fallbacks.{index}: {fallback!r} is listed twice")
            seen = set()
            for index, deployment in enumerate(route.deployments):
                label = deployment.name or str(index + 1)
                if label in seen:
                    problems.append(f"models.{name}.deployments.{index}.name: {label!r} is used twice")
                seen.add(label)
        if problems:
            raise ValueError("; ".join(problems))
        return self


@dataclass(frozen=True)
class Deployment:
    """One upstream of a model name: where it is, how it is called, how much it takes."""

    name: str  # unique within its model name (default: its position, 1, 2, …)
    route: str  # the model name it serves
    provider: str  # how it is called: openai (any OpenAI-compatible server) or anthropic
    base_url: str
    model: str  # the model name the upstream is asked for
    weight: float
    rpm: int | None
    tpm: int | None
    timeout_s: float | None
    api_key: str | None = field(default=None, repr=False, compare=False)  # read from api_key_env; never shown

    @property
    def label(self) -> str:
        """How the deployment is named on attempts, calls and pages: `model name/deployment name`."""
        return f"{self.route}/{self.name}"


@dataclass(frozen=True)
class Route:
    name: str
    provider: str  # the provider its calls are recorded and priced under
    deployments: tuple[Deployment, ...]
    fallbacks: tuple[str, ...]


@dataclass(frozen=True)
class RoutingTable:
    routes: dict[str, Route]
    cooldown_s: float

    def route_for(self, provider: str, model: str) -> Route | None:
        route = self.routes.get(model)
        return route if route is not None and route.provider == provider else None


def _read(path: Path):
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(str(exc).replace("\n", " ")) from None
    return json.loads(text)


def deployments_load(raw: str, *, environ=os.environ) -> RoutingTable:
    """The routing table of the file `raw` names, validated; DeploymentsInvalid naming the file and every problem."""
    path = Path(raw).expanduser()
    try:
        data = _read(path)
    except OSError as exc:
        raise DeploymentsInvalid(raw, f"the file cannot be read ({exc.strerror or exc})") from None
    except ValueError as exc:  # json's and yaml's parse errors
        raise DeploymentsInvalid(raw, f"not valid {'YAML' if path.suffix in ('.yaml', '.yml') else 'JSON'} "
                                      f"({str(exc).splitlines()[0]})") from None
    try:
        spec = _FileSpec.model_validate(data)
    except ValidationError as exc:
        problems = [f"{'.'.join(map(str, error['loc'])) or 'file'}: {error['msg'].removeprefix('Value error, ')}"
                    for error in exc.errors(include_input=False, include_url=False)]
        raise DeploymentsInvalid(raw, "; ".join(problems)) from None
    missing, anthropic = [], False
    routes = {}
    for name, route in spec.models.items():
        deployments = []
        for index, item in enumerate(route.deployments):
            if item.api_key_env and not environ.get(item.api_key_env):
                missing.append(f"models.{name}.deployments.{index}.api_key_env: the environment variable "
                               f"{item.api_key_env} is not set")
            anthropic = anthropic or item.provider == "anthropic"
            deployments.append(Deployment(
                name=item.name or str(index + 1), route=name, provider=item.provider, base_url=item.base_url,
                model=item.model or name, weight=item.weight, rpm=item.rpm, tpm=item.tpm, timeout_s=item.timeout_s,
                api_key=environ.get(item.api_key_env) if item.api_key_env else None))
        routes[name] = Route(name=name, provider=route.provider or deployments[0].provider,
                             deployments=tuple(deployments), fallbacks=tuple(route.fallbacks))
    if anthropic:
        import importlib.util

        if importlib.util.find_spec("langchain_anthropic") is None:
            missing.append("an anthropic deployment needs the optional package langchain-anthropic")
    if missing:
        raise DeploymentsInvalid(raw, "; ".join(missing))
    return RoutingTable(routes=routes, cooldown_s=spec.cooldown_s)


_tables: dict[str, RoutingTable] = {}
_tables_lock = threading.Lock()


def routing_table() -> RoutingTable | None:
    """The table of the deployments file (settings.deployments), read once per process; None without one."""
    raw = settings.deployments
    if not raw:
        return None
    table = _tables.get(raw)
    if table is None:
        with _tables_lock:
            table = _tables.get(raw) or deployments_load(raw)
            _tables[raw] = table
    return table


def route_for(provider: str, model: str) -> Route | None:
    """The route of a call of `model` under `provider`, when the deployments file has one."""
    table = routing_table()
    return table.route_for(provider, model) if table is not None else None


# --- the shared state of deployments: cooldowns, and this minute's requests and tokens --------------------------
def _key(kind: str, deployment: Deployment, window: int | None = None) -> str:
    return f"route:{kind}:{deployment.route}:{deployment.name}" + (f":{window}" if window is not None else "")


def _weighted_order(deployments: list[Deployment], rng: random.Random) -> list[Deployment]:
    """A weighted order without replacement (Efraimidis and Spirakis): the first is chosen with probability
    weight / total, and so on among the rest."""
    return sorted(deployments, key=lambda d: rng.random() ** (1.0 / d.weight), reverse=True)


@dataclass
class Skipped:
    deployment: Deployment
    why: str  # "cooling down", "at its rpm", "at its tpm"
    retry_after_s: float  # how long until it may take a call again (its cooldown's rest, or the minute's)


def route_deployments(route: Route, *, table: RoutingTable, rng: random.Random | None = None,
                      skipped: list[Skipped] | None = None) -> Iterator[Deployment]:
    """The deployments to try for a call of `route`, in order: its own healthy ones by weight, then each
    fallback's. Those cooling down or at their rpm/tpm this minute are left out (and listed in `skipped`); one
    cache read per model name, made only when the name's turn comes; a deployment's request is counted as it is
    handed out."""
    rng = rng or random
    for name in (route.name, *route.fallbacks):
        candidates = list(table.routes[name].deployments)
        window = int(time.time() // WINDOW_S)
        keys = {d.name: (_key("cooldown", d), _key("rpm", d, window), _key("tpm", d, window)) for d in candidates}
        try:
            state = settings.shared_cache.get_many([key for group in keys.values() for key in group])
        except Exception:  # noqa: BLE001 - a cache outage does not stop calls
            logger.warning("routing: deployments' state not read, the shared cache failed", exc_info=True)
            state = {}
        usable = []
        now = time.time()
        next_window_s = (window + 1) * WINDOW_S - now
        for deployment in candidates:
            cooling, requests, tokens = (state.get(key) for key in keys[deployment.name])
            cooling = cooling if cooling and float(cooling) > now else None  # its entry outlives it by < 1 s
            why = ("cooling down" if cooling else
                   "at its rpm" if deployment.rpm and (requests or 0) >= deployment.rpm else
                   "at its tpm" if deployment.tpm and (tokens or 0) >= deployment.tpm else "")
            if why and skipped is not None:
                wait = float(cooling) - now if cooling else next_window_s  # a cooldown's entry holds its end
                skipped.append(Skipped(deployment, why, wait))
            elif not why:
                usable.append(deployment)
        for deployment in _weighted_order(usable, rng):
            if deployment.rpm and _counted(keys[deployment.name][1]) > deployment.rpm:
                if skipped is not None:  # another process took the last request of the minute meanwhile
                    skipped.append(Skipped(deployment, "at its rpm", next_window_s))
                continue
            yield deployment


def _counted(key: str, amount: int = 1) -> int:
    try:
        settings.shared_cache.add(key, 0, timeout=WINDOW_S * 2)
        return settings.shared_cache.incr(key, amount)
    except Exception:  # noqa: BLE001 - a cache outage does not stop calls
        logger.warning("routing: a deployment's count not kept, the shared cache failed", exc_info=True)
        return 0


def deployment_cool_down(deployment: Deployment, *, table: RoutingTable, retry_after_s: float | None = None) -> float:
    """Keep a failing deployment out of every process's choice for the table's cooldown (or the upstream's own
    Retry-After when longer, up to an hour). Returns the seconds it cools down."""
    seconds = min(max(table.cooldown_s, retry_after_s or 0.0), COOLDOWN_MAX_S)
    try:
        settings.shared_cache.set(_key("cooldown", deployment), time.time() + seconds, timeout=math.ceil(seconds))
    except Exception:  # noqa: BLE001 - a cache outage does not stop calls
        logger.warning("routing: %s not cooled down, the shared cache failed", deployment.label, exc_info=True)
    return seconds


def deployment_tokens_count(deployment: Deployment, tokens: int) -> None:
    """Count a call's tokens against its deployment's tpm for this minute."""
    if deployment.tpm and tokens:
        _counted(_key("tpm", deployment, int(time.time() // WINDOW_S)), tokens)
