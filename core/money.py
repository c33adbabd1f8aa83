"""Amounts of money (USD) as text for every surface: the engine's `usd` (engine.money, a plain decimal to
the 1e-8 dollar, never in exponent form), and `dollars`, the same with its sign.

Templates: `{% load money %}` then `{{ amount|usd }}` (`0.00000000`) or `{{ amount|dollars }}` (`$0.00000000`)."""
from __future__ import annotations

from django import template

from engine.money import usd  # noqa: F401 - re-exported: the one way to show an amount

register = template.Library()


def dollars(amount) -> str:
    """`$0.00000000`; "" for None."""
    text = usd(amount)
    return f"-${text[1:]}" if text.startswith("-") else (f"${text}" if text else "")


register.filter("usd", usd)
register.filter("dollars", dollars)
