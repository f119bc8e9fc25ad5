"""Costs: the arithmetic that turns hours run into money (no database; the price table's edits are
`deployments.services.prices`).

A cluster costs `node_count × price_per_hour` of its VM size for every hour it exists
(`created_at` until `deleted_at`, or now), at the price each hour had: every size keeps its price
history (`VmPriceChange`), and an admin's edit applies from the moment it is saved, so the hours run
before keep their price. The price a size is first given (seeded, or added by an admin) covers its
past too. The local target is priced by the `local` row: free unless an admin sets a price.
A target that bills each deployment instead (`TargetTraits.billed_per_service`) prices every deployment
the same way, with its replicas as the nodes; its cluster costs the sum of its deployments' costs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from deployments.models import PRICE_HISTORY_START

LOCAL_PRICE_ROW = "local"
HOUR = Decimal(3600)
MAX_PRICE = Decimal("100000")


# --- the arithmetic (no database) -----------------------------------------------------------------


@dataclass(frozen=True)
class PriceSchedule:
    """A size's price per node-hour over time: (from, price) steps, oldest first. The first step also
    covers everything before it; a price of None is unknown."""

    steps: tuple[tuple[datetime, Decimal | None], ...]

    @classmethod
    def flat(cls, price: Decimal | None) -> PriceSchedule:
        return cls(((PRICE_HISTORY_START, price),))

    def at(self, when: datetime) -> Decimal | None:
        current = self.steps[0][1]
        for start, price in self.steps:
            if start > when:
                break
            current = price
        return current

    def cost(self, start: datetime, end: datetime, *, priced_only: bool = False) -> Decimal | None:
        """What one node costs from start to end; None when any of those hours has no price, unless
        priced_only, which counts only the hours that have one."""
        total = Decimal(0)
        for index, (step_start, price) in enumerate(self.steps):
            step_end = self.steps[index + 1][0] if index + 1 < len(self.steps) else None
            lo = start if index == 0 else max(start, step_start)
            hi = end if step_end is None else min(end, step_end)
            if hi <= lo:
                continue
            if price is None:
                if priced_only:
                    continue
                return None
            total += price * hours_between(lo, hi)
        return total


@dataclass(frozen=True)
class Priced:
    """What one cluster has cost: `rate` is per hour for all its nodes at its last hour (now, or when it was
    deleted); None when that hour has no price. `so_far` is None when any of its hours has none."""

    rate: Decimal | None
    hours: Decimal
    so_far: Decimal | None
    per_hour_now: Decimal | None


def priced_sum(parts: Iterable[Priced]) -> Priced:
    """What several things cost together (a cluster billed by its deployments): rates and costs add up,
    None when any part's is None; the hours are the longest part's. Nothing costs zero."""
    parts = list(parts)  # read more than once

    def total(values: list[Decimal | None]) -> Decimal | None:
        known = [value for value in values if value is not None]
        return sum(known, Decimal(0)) if len(known) == len(values) else None

    return Priced(
        rate=total([p.rate for p in parts]),
        hours=max((p.hours for p in parts), default=Decimal(0)),
        so_far=total([p.so_far for p in parts]),
        per_hour_now=total([p.per_hour_now for p in parts]),
    )


def price_key(*, priced_by_size: bool, vm_size: str) -> str:
    """The price-table row a cluster is billed by (sizes are case-insensitive, as in Azure)."""
    return (vm_size or "").strip().lower() if priced_by_size else LOCAL_PRICE_ROW


def hours_between(start: datetime, end: datetime) -> Decimal:
    seconds = max((end - start).total_seconds(), 0.0)
    return Decimal(str(seconds)) / HOUR


def _schedule(prices: PriceSchedule | Decimal | None) -> PriceSchedule:
    return prices if isinstance(prices, PriceSchedule) else PriceSchedule.flat(prices)


def cluster_price(
    *,
    created_at: datetime,
    deleted_at: datetime | None,
    node_count: int,
    price_per_hour: PriceSchedule | Decimal | None,
    now: datetime,
) -> Priced:
    """Cost so far and cost per hour now for one cluster's lifetime (a flat price or a size's history)."""
    schedule = _schedule(price_per_hour)
    end = min(deleted_at, now) if deleted_at else now
    hours = hours_between(created_at, end)
    last = schedule.at(end)
    rate = None if last is None else last * node_count
    per_node = schedule.cost(created_at, end) if end > created_at else Decimal(0)
    return Priced(
        rate=rate,
        hours=hours,
        so_far=None if per_node is None else per_node * node_count,
        per_hour_now=None if rate is None else (Decimal(0) if deleted_at else rate),
    )


def daily_costs(
    *,
    created_at: datetime,
    deleted_at: datetime | None,
    rate: PriceSchedule | Decimal,
    days: list[date],
    now: datetime,
    node_count: int = 1,
) -> dict[date, Decimal]:
    """Split a cluster's cost over UTC calendar days (only the days in `days`, and only the hours that have
    a price). `rate`: per hour for the whole cluster, or a size's price history per node."""
    schedule = _schedule(rate)
    start, end = created_at, min(deleted_at, now) if deleted_at else now
    out: dict[date, Decimal] = {}
    for day in days:
        day_start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        lo, hi = max(start, day_start), min(end, day_start + timedelta(days=1))
        if hi > lo:
            out[day] = (schedule.cost(lo, hi, priced_only=True) or Decimal(0)) * node_count
    return out


def last_days(now: datetime, count: int = 30) -> list[date]:
    today = now.astimezone(UTC).date()
    return [today - timedelta(days=offset) for offset in range(count - 1, -1, -1)]


# --- the price table (writes) ---------------------------------------------------------------------
