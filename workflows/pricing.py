"""The price of an LLM call, as runs ask for it (to check a model is priced, to price each call). Prices are kept
above workflows (analytics.ModelPrice), so the app that keeps them registers its lookup here at start-up
(analytics.apps.AnalyticsConfig.ready); workflows never imports it."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Protocol

from django.core.exceptions import ImproperlyConfigured

from engine.usage import Price


# What an error about an unpriced model says to do about it.
HOW_TO_PRICE = "give it a price: POST /api/v1/pricing/ as staff, or in the admin (Model prices)"


class PriceLookup(Protocol):
    def __call__(self, *, provider: str, model: str, at: datetime | None = None) -> Price | None: ...


class ModelsLookup(Protocol):
    def __call__(self, *, provider: str) -> list[str]: ...


_lookup: PriceLookup | None = None
_models: ModelsLookup | None = None


def price_lookup_register(lookup: PriceLookup, *, models: ModelsLookup) -> None:
    """Make `lookup` the one that price_for_call asks, and `models` the one that priced_model_names asks (the last
    registered win)."""
    global _lookup, _models
    _lookup, _models = lookup, models


def price_for_call(*, provider: str, model: str, at: datetime | None = None) -> Price | None:
    """The price in force for a call of `model` at `at` (default: now), or None when none is configured."""
    if _lookup is None:
        raise ImproperlyConfigured(
            "no price lookup is registered: workflows prices LLM calls through the app that keeps prices "
            "(add 'analytics' to INSTALLED_APPS, or call workflows.pricing.price_lookup_register)")
    return _lookup(provider=provider, model=model, at=at)


# The provider of price rows that price MCP tool calls (analytics.ModelPrice.TOOLS): per call, by `<server>__<tool>`.
TOOL_PRICES = "mcp"


def tool_price_for_call(*, tool: str, at: datetime | None = None) -> Decimal:
    """USD per call of the MCP tool `tool` (`<server>__<tool>`) in force at `at` (default: now); 0 when unpriced."""
    price = price_for_call(provider=TOOL_PRICES, model=tool, at=at)
    return (price.per_call or Decimal("0")) if price is not None else Decimal("0")


def priced_model_names(*, provider: str) -> list[str]:
    """The names of the models of `provider` that have a price in force (what a run may ask for)."""
    return _models(provider=provider) if _models is not None else []


def unpriced_model_message(*, provider: str) -> str:
    """What an unknown model's error adds: the models of `provider` there are, and how to add one."""
    names = priced_model_names(provider=provider)
    return f"{provider}'s priced models: {', '.join(names) or 'none'}; to call another, {HOW_TO_PRICE}"
