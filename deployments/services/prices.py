"""The price table: seeded from `deployments.vm_sizes`, edited by admins (audited), each edit kept as a
price change so the hours already run keep their price (`deployments.costs` does the arithmetic)."""

from __future__ import annotations

from decimal import Decimal

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from deployments.costs import LOCAL_PRICE_ROW, MAX_PRICE
from deployments.models import PRICE_HISTORY_START, VmPrice, VmPriceChange
from deployments.vm_sizes import CPU_SIZES, GPU_SIZES

from .audit import audit_record
from .operations import Refused


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


def vm_price_set(*, user: User, price: VmPrice, price_per_hour: Decimal | None) -> VmPrice:
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
    user: User,
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
