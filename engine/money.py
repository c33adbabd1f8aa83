"""Amounts of money (USD) as text, the one way every surface shows them: a plain decimal to the 1e-8 dollar, as
they are stored (`0.00000000`, `0.00001250`), never in exponent form. A Decimal read back from a database (or
quantized, or summed from such) may be `Decimal("0E-8")`, whose `str()` is `0E-8`: format through here instead."""
from __future__ import annotations

from decimal import Decimal, InvalidOperation

PLACES = 8


def usd(amount) -> str:
    """`amount` (a Decimal, an int, a float or a decimal string) as a plain decimal with 8 places; "" for None."""
    if amount is None or amount == "":
        return ""
    try:
        value = amount if isinstance(amount, Decimal) else Decimal(str(amount))
    except InvalidOperation:
        raise ValueError(f"not an amount of money: {amount!r}") from None
    return f"{value:.{PLACES}f}"
