"""Money as the overview shows it: totals to the cent, hourly rates to as many digits as the price has."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from django import template

register = template.Library()


@register.filter
def usd(value: Decimal | float | None) -> str:
    """$1,234.57 (to the cent); "—" when there is no amount."""
    if value is None or value == "":
        return "—"
    amount = Decimal(value).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return f"${amount:,.2f}"


@register.filter
def usd_rate(value: Decimal | float | None) -> str:
    """$0.526, $0.90, $14.692: at least two decimals, up to four, no trailing zeros past the cent."""
    if value is None or value == "":
        return "—"
    amount = Decimal(value).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)
    digits = format(amount.normalize(), "f").partition(".")[2]
    places = min(max(len(digits), 2), 4)
    return f"${amount:,.{places}f}"
