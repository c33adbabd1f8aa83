"""The price of an LLM call, as runs ask for it (to check a model is priced, to price each call). Prices are kept
above workflows (analytics.ModelPrice), so the app that keeps them registers its lookup here at start-up
(analytics.apps.AnalyticsConfig.ready); workflows never imports it."""
from __future__ import annotations

from datetime import datetime
from typing import Protocol

from django.core.exceptions import ImproperlyConfigured

from workflows.engine.usage import Price


class PriceLookup(Protocol):
    def __call__(self, *, provider: str, model: str, at: datetime | None = None) -> Price | None: ...


_lookup: PriceLookup | None = None


def price_lookup_register(lookup: PriceLookup) -> None:
    """Make `lookup` the one that price_for_call asks (the last registered wins)."""
    global _lookup
    _lookup = lookup


def price_for_call(*, provider: str, model: str, at: datetime | None = None) -> Price | None:
    """The price in force for a call of `model` at `at` (default: now), or None when none is configured."""
    if _lookup is None:
        raise ImproperlyConfigured(
            "no price lookup is registered: workflows prices LLM calls through the app that keeps prices "
            "(add 'analytics' to INSTALLED_APPS, or call workflows.pricing.price_lookup_register)")
    return _lookup(provider=provider, model=model, at=at)
