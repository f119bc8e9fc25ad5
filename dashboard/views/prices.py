"""The price table: everybody reads it, admins change it (each change audited)."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from accounts.roles import AuthedRequest, admin_required
from dashboard.forms import NewPriceForm, PriceForm
from deployments.costs import LOCAL_PRICE_ROW
from deployments.models import VmPrice
from deployments.services.operations import Refused
from deployments.services.prices import vm_price_create, vm_price_set


def _render(request: HttpRequest, new_form: NewPriceForm, status: int = 200) -> HttpResponse:
    prices = sorted(
        VmPrice.objects.select_related("updated_by"),
        key=lambda p: (p.vm_size != LOCAL_PRICE_ROW, p.gpu_count == 0, p.vm_size.lower()),
    )
    return render(
        request,
        "dashboard/price_list.html",
        {"prices": prices, "new_form": new_form, "today": timezone.now().date()},
        status=status,
    )


@require_GET
def price_list(request: AuthedRequest) -> HttpResponse:
    return _render(request, NewPriceForm())


@require_POST
@admin_required
def price_update(request: AuthedRequest, pk: int) -> HttpResponse:
    price = get_object_or_404(VmPrice, pk=pk)
    form = PriceForm(request.POST)
    if not form.is_valid():
        messages.error(
            request,
            f"{price.vm_size}: {' '.join(map(str, form.errors.get('price_per_hour', ['bad price'])))} "
            "Nothing was changed.",
        )
        return redirect("price_list")
    try:
        price = vm_price_set(
            user=request.user, price=price, price_per_hour=form.cleaned_data["price_per_hour"]
        )
    except Refused as exc:
        messages.error(request, str(exc))
    else:
        shown = f"${price.price_per_hour}/h" if price.price_per_hour is not None else "no price"
        messages.success(
            request,
            f"{price.vm_size} costs {shown} per node from now on; hours already run keep their price.",
        )
    return redirect("price_list")


@require_POST
@admin_required
def price_create(request: AuthedRequest) -> HttpResponse:
    form = NewPriceForm(request.POST)
    if form.is_valid():
        try:
            price = vm_price_create(
                user=request.user,
                vm_size=form.cleaned_data["vm_size"],
                price_per_hour=form.cleaned_data["price_per_hour"],
                gpu_count=form.cleaned_data["gpu_count"],
                gpu_kind=form.cleaned_data["gpu_kind"],
            )
        except Refused as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Added {price.vm_size} to the price table.")
            return redirect("price_list")
    return _render(request, form, status=400)
