"""Costs: the price table (seeded from `deployments.vm_sizes`, edited by admins) and the arithmetic
that turns hours run into money.

A cluster costs `node_count × price_per_hour` of its VM size for every hour it exists
(`created_at` until `deleted_at`, or now), at the price each hour had: every size keeps its price
history (`VmPriceChange`), and an admin's edit applies from the moment it is saved, so the hours run
before keep their price. The price a size is first given (seeded, or added by an admin) covers its
past too. The local target is priced by the `local` row: free unless an admin sets a price.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from deployments.models import PRICE_HISTORY_START, VmPrice, VmPriceChange
from deployments.vm_sizes import CPU_SIZES, GPU_SIZES

from .audit import audit_record
from .operations import Refused

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


def price_key(*, is_local: bool, vm_size: str) -> str:
    """The price-table row a cluster is billed by (sizes are case-insensitive, as in Azure)."""
    return LOCAL_PRICE_ROW if is_local else (vm_size or "").strip().lower()


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


def _price_row(price: VmPrice) -> dict:
    return {
        "vm_size": price.vm_size,
        "price_per_hour": None if price.price_per_hour is None else str(price.price_per_hour),
        "currency": price.currency,
    }


def vm_prices_seed() -> int:
    """Fill the price table from `deployments.vm_sizes` plus a free `local` row. Idempotent: rows that
    exist keep their price (an admin may have changed it); their specs are brought up to date."""
    created = 0
    with transaction.atomic():
        for size in (*GPU_SIZES, *CPU_SIZES):
            price = None if size.price_eastus_per_hour is None else Decimal(str(size.price_eastus_per_hour))
            specs = {
                "vcpus": size.vcpus,
                "memory_gb": size.memory_gb,
                "gpu_count": size.gpu_count,
                "gpu_kind": size.gpu_kind,
                "retired_on": size.retirement_date(),
            }
            row, made = VmPrice.objects.get_or_create(
                vm_size=size.vm_size, defaults={**specs, "price_per_hour": price}
            )
            if made:
                created += 1
                VmPriceChange.objects.create(
                    price=row, price_per_hour=price, effective_from=PRICE_HISTORY_START
                )
            elif any(getattr(row, field) != value for field, value in specs.items()):
                VmPrice.objects.filter(pk=row.pk).update(**specs)
        local, made = VmPrice.objects.get_or_create(
            vm_size=LOCAL_PRICE_ROW, defaults={"price_per_hour": Decimal(0)}
        )
        if made:
            created += 1
            VmPriceChange.objects.create(
                price=local, price_per_hour=Decimal(0), effective_from=PRICE_HISTORY_START
            )
        if created:
            audit_record(
                actor=None,
                action="price.seed",
                resource=VmPrice(vm_size="price table"),
                after={"rows_added": created},
                message="seeded from Azure's East US pay-as-you-go list",
            )
    return created


def _clean_price(value: Decimal | None) -> Decimal | None:
    if value is None:
        return None
    if value < 0 or value >= MAX_PRICE:
        raise Refused(f"A price per hour is between 0 and {MAX_PRICE:,} (got {value}).")
    return value.quantize(Decimal("0.0001"))


def vm_price_set(*, user: AbstractBaseUser, price: VmPrice, price_per_hour: Decimal | None) -> VmPrice:
    """Change what an hour of one node of a size costs (None: unknown, shown as "no price"), from now on:
    the hours before keep the price they were run at."""
    new = _clean_price(price_per_hour)
    with transaction.atomic():
        # Locked and re-read, so two admins editing at once each record the price they replaced.
        current = VmPrice.objects.select_for_update().get(pk=price.pk)
        before = _price_row(current)
        now = timezone.now()
        VmPrice.objects.filter(pk=current.pk).update(price_per_hour=new, updated_by=user, updated_at=now)
        VmPriceChange.objects.create(price=current, price_per_hour=new, effective_from=now, set_by=user)
        current.refresh_from_db()
        audit_record(
            actor=user, action="price.update", resource=current, before=before, after=_price_row(current)
        )
    return current


def vm_price_create(
    *,
    user: AbstractBaseUser,
    vm_size: str,
    price_per_hour: Decimal | None,
    gpu_count: float = 0,
    gpu_kind: str = "",
    vcpus: int = 0,
    memory_gb: float = 0,
) -> VmPrice:
    """Add a size the seeded table does not know (a new Azure size, or another region's price)."""
    name = vm_size.strip()
    if not name:
        raise Refused("Name the VM size, as Azure spells it (e.g. Standard_NC4as_T4_v3).")
    if VmPrice.objects.filter(vm_size__iexact=name).exists():
        raise Refused(f"{name} is already in the price table: change its price there.")
    try:
        with transaction.atomic():
            price = VmPrice.objects.create(
                vm_size=name,
                price_per_hour=_clean_price(price_per_hour),
                gpu_count=gpu_count,
                gpu_kind=gpu_kind,
                vcpus=vcpus,
                memory_gb=memory_gb,
                updated_by=user,
            )
            # A size's first price covers its past too: clusters of it already running get a cost.
            VmPriceChange.objects.create(
                price=price,
                price_per_hour=price.price_per_hour,
                effective_from=PRICE_HISTORY_START,
                set_by=user,
            )
            audit_record(actor=user, action="price.create", resource=price, after=_price_row(price))
    except IntegrityError as exc:
        raise Refused(f"{name} is already in the price table: change its price there.") from exc
    return price
