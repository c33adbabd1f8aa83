"""The Python graphs registered (settings.graphs: Chatter's CHATTER_GRAPHS): each one's module, loaded once, and what
it names (a compiled graph or a factory). Validation (node_configs) and the runs (python_graphs) both read it."""
from __future__ import annotations

import importlib.util
import inspect
import sys
import threading
from typing import Any, Callable

from engine.errors import InvalidInput
from engine.settings import settings

_modules: dict[str, Any] = {}
_loading = threading.Lock()


def registered_target(name: str):
    """What a registered name stands for: a compiled graph or a factory. Its module is imported once, as a module of its
    own (in sys.modules, so that postponed annotations and pickling resolve its names)."""
    if name not in settings.graphs:
        raise InvalidInput(f"no Python graph {name!r} is registered (CHATTER_GRAPHS)")
    path, attribute = settings.graphs[name]
    with _loading:
        if path not in _modules:
            module_name = f"chatter_graphs.{name}"
            spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(module_name, None)
                raise
            _modules[path] = module
        return getattr(_modules[path], attribute)


def is_factory(target) -> bool:
    return not hasattr(target, "astream")


def factory_takes_runtime(name: str) -> bool:
    """Whether a registered factory asks for a runtime besides the run's config (LangGraph's ServerRuntime)."""
    target = registered_target(name)
    return is_factory(target) and len(_positional(target)) >= 2


def _positional(factory: Callable) -> list:
    return [p for p in inspect.signature(factory).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def factory_arguments(factory: Callable, *, config: dict) -> list:
    """What a factory takes, by its signature: nothing, or the run's config."""
    return [config][:len(_positional(factory))]
