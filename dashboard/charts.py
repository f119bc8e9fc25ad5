"""Charts as inline SVG, drawn on the server: bar geometry here, markup in a template."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    day: date
    amount: Decimal
    label: str  # the x-axis label under this bar ("" for most bars)


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    plot_top: int
    plot_bottom: int
    bars: list[Bar]
    top_value: Decimal
    total: Decimal


def _nice_ceiling(value: Decimal) -> Decimal:
    """The smallest 1, 2 or 5 × 10^n at or above `value`, so the axis reads in round numbers."""
    if value <= 0:
        return Decimal(1)
    exponent = value.adjusted()
    for step in (1, 2, 5, 10):
        candidate = Decimal(step).scaleb(exponent)
        if candidate >= value:
            return candidate
    return Decimal(10).scaleb(exponent)  # pragma: no cover - the loop always returns


def cost_per_day_chart(series: list[tuple[date, Decimal]], width: int = 720, height: int = 160) -> BarChart:
    left, right, top, bottom = 48, 8, 10, 22
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max((amount for _, amount in series), default=Decimal(0))
    ceiling = _nice_ceiling(peak)
    slot = plot_w / max(len(series), 1)
    bars = []
    for index, (day, amount) in enumerate(series):
        h = float(amount / ceiling) * plot_h if amount > 0 else 0.0
        h = max(h, 1.0) if amount > 0 else 0.0  # a cent still shows
        # Every seventh day, counted back from today, so the newest bar is always labelled.
        label = day.strftime("%b %d") if (len(series) - 1 - index) % 7 == 0 else ""
        bars.append(
            Bar(
                x=round(left + index * slot + 1, 1),
                y=round(top + plot_h - h, 1),
                width=round(max(slot - 2, 1), 1),
                height=round(h, 1),
                day=day,
                amount=amount,
                label=label,
            )
        )
    return BarChart(
        width=width,
        height=height,
        plot_top=top,
        plot_bottom=top + plot_h,
        bars=bars,
        top_value=ceiling,
        total=sum((a for _, a in series), Decimal(0)),
    )
