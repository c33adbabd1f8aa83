"""Model prices: the seeded rows, a staff member's new price row, and retiring or restoring one."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.utils import timezone

from analytics.models import ModelPrice
from audit.services import audit_record
from core.errors import InvalidInput

PRICE_EDITABLE = ("is_active",)

# Seeded prices, USD per million tokens. The `local` price is simulated, so accounting shows out of the box.
SEED_PRICES = [
    ("local", r"local-.*", "0.50", None, "1.50"),
    ("local", r"all-MiniLM-L6-v2", "0.02", None, "0"),  # simulated, as text-embedding-3-small's
    ("openai", r"gpt-4o-mini(-\d{4}-\d{2}-\d{2})?", "0.15", "0.075", "0.60"),
    ("openai", r"gpt-4o(-\d{4}-\d{2}-\d{2})?", "2.50", "1.25", "10.00"),
    ("openai", r"gpt-4\.1(-\d{4}-\d{2}-\d{2})?", "2.00", "0.50", "8.00"),
    ("openai", r"gpt-4\.1-mini(-\d{4}-\d{2}-\d{2})?", "0.40", "0.10", "1.60"),
    ("openai", r"o3-mini(-\d{4}-\d{2}-\d{2})?", "1.10", "0.55", "4.40"),
    ("openai", r"text-embedding-3-small", "0.02", None, "0"),
    ("openai", r"text-embedding-3-large", "0.13", None, "0"),
    ("openai", r"text-embedding-ada-002", "0.10", None, "0"),
    ("anthropic", r"claude-3-5-haiku.*", "0.80", "0.08", "4.00"),
    ("anthropic", r"claude-sonnet-4.*|claude-3-7-sonnet.*", "3.00", "0.30", "15.00"),
]


def prices_seed() -> None:
    """Idempotent: the seed prices for (provider, pattern) pairs that have no row yet (one read, one insert)."""
    epoch = timezone.make_aware(timezone.datetime(2024, 1, 1))
    seeded = set(ModelPrice.objects.filter(
        provider__in={seed[0] for seed in SEED_PRICES}, model_pattern__in={seed[1] for seed in SEED_PRICES},
    ).values_list("provider", "model_pattern"))
    ModelPrice.objects.bulk_create([
        ModelPrice(provider=provider, model_pattern=pattern, input_per_million=price_in,
                   cached_input_per_million=price_cached, output_per_million=price_out, effective_from=epoch)
        for provider, pattern, price_in, price_cached, price_out in SEED_PRICES
        if (provider, pattern) not in seeded])


def price_create(*, actor, **values) -> ModelPrice:
    """A new price row (price_checked's). Prices are never edited in place: a change is a new row from its
    effective_from on, so calls priced before keep the price they had (recompute_costs re-prices them only when
    asked)."""
    price = price_checked(**values)
    with transaction.atomic():
        price.save()
        _price_audit(price, actor=actor, change="created")
    return price


def price_checked(*, provider: str, model_pattern: str, input_per_million: Decimal | None = None,
                  output_per_million: Decimal | None = None, cached_input_per_million: Decimal | None = None,
                  per_call: Decimal | None = None, effective_from: datetime | None = None,
                  is_active: bool = True) -> ModelPrice:
    """The new price row these values make, not saved yet, or InvalidInput naming each value refused (the admin's
    form shows the same). A row of provider "mcp" prices MCP tool calls: `per_call` only, its pattern matching
    `<server>__<tool>`."""
    errors = []
    if provider == ModelPrice.TOOLS:
        if per_call is None:
            errors.append({"path": "per_call", "code": "required", "message": "an MCP tool's price is per call"})
        errors += [{"path": name, "code": "invalid", "message": "an MCP tool's price is per call, not per token"}
                   for name, value in (("input_per_million", input_per_million),
                                       ("cached_input_per_million", cached_input_per_million),
                                       ("output_per_million", output_per_million)) if value]
        input_per_million = output_per_million = Decimal("0")
    else:
        if provider != ModelPrice.WILDCARD and provider not in settings.CHATTER_PROVIDERS:
            errors.append({"path": "provider", "code": "unknown_provider",
                           "message": f"provider must be one of {sorted(settings.CHATTER_PROVIDERS)}, '*' or "
                                      f"'{ModelPrice.TOOLS}' (MCP tools)"})
        errors += [{"path": name, "code": "required", "message": f"{name} is required"}
                   for name, value in (("input_per_million", input_per_million),
                                       ("output_per_million", output_per_million)) if value is None]
        if per_call is not None:
            errors.append({"path": "per_call", "code": "invalid",
                           "message": f"only an MCP tool's price (provider '{ModelPrice.TOOLS}') is per call"})
    if errors:
        raise InvalidInput("invalid price", details=errors)
    price = ModelPrice(provider=provider, model_pattern=model_pattern, input_per_million=input_per_million,
                       cached_input_per_million=cached_input_per_million, output_per_million=output_per_million,
                       per_call=per_call, effective_from=effective_from or timezone.now(), is_active=is_active)
    try:
        price.full_clean(exclude=["created_at"])
    except DjangoValidationError as exc:
        errors += [{"path": name, "code": "invalid", "message": message}
                   for name, messages in exc.message_dict.items() for message in messages]
    if errors:
        raise InvalidInput("invalid price", details=errors)
    return price


def price_update(*, price: ModelPrice, actor, **changes) -> ModelPrice:
    """Only `is_active` changes (retiring or restoring a row); figures and dates are history."""
    fixed = sorted(set(changes) - set(PRICE_EDITABLE))
    if fixed:
        raise InvalidInput("a price row's figures cannot be changed; create a new row with its effective_from",
                           details=[{"path": name, "code": "read_only",
                                     "message": f"{name} is fixed once the price exists"} for name in fixed])
    with transaction.atomic():
        ModelPrice.objects.filter(pk=price.pk).update(**changes)  # (renews the memo of prices: core.cache)
        price.refresh_from_db()
        _price_audit(price, actor=actor, change="updated")
    return price


def _price_audit(price: ModelPrice, *, actor, change: str) -> None:
    audit_record(action="price.changed", actor=actor, target=price, data={
        "change": change, "provider": price.provider, "model_pattern": price.model_pattern,
        "input_per_million": price.input_per_million, "cached_input_per_million": price.cached_input_per_million,
        "output_per_million": price.output_per_million, "per_call": price.per_call,
        "effective_from": price.effective_from,
        "is_active": price.is_active,
    })
