"""The overview (what runs, who owns it, what it costs, what expires) and the expiry buttons."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from accounts.roles import AuthedRequest, deployer_required
from dashboard.charts import cost_per_day_chart
from dashboard.forms import ExtendForm
from deployments import selectors
from deployments.backends import target_traits
from deployments.costs import Priced, price_key
from deployments.models import Cluster, VmPrice
from deployments.services.expiry import (
    MAX_EXTEND_HOURS,
    ExpiryStatus,
    cluster_expiry_cancel,
    cluster_expiry_extend,
    expiry_status,
    last_activity_of,
    warn_before,
)
from deployments.services.operations import Refused
from targets.azureml.selectors import external_resources_open, unmanaged_cost_per_hour

EXTEND_CHOICES = (4, 24)
OVERVIEW_ROWS, OVERVIEW_ALL_ROWS = 100, 5000


@dataclass(frozen=True)
class ClusterRow:
    cluster: Cluster
    cost: Priced | None
    expiry: ExpiryStatus
    gpus: float
    gpu_kind: str
    last_activity: datetime


def _cluster_rows(
    clusters: list[Cluster], costs: dict[int, Priced], prices: dict[str, VmPrice], now: datetime
) -> list[ClusterRow]:
    window = warn_before()
    rows = []
    for cluster in clusters:
        # Until the target reports its GPUs (while Creating), the price table says what the size has.
        by_size = target_traits(cluster.backend).priced_by_size
        size = prices.get(price_key(priced_by_size=by_size, vm_size=cluster.vm_size))
        per_node = cluster.gpu_count or (size.gpu_count if size is not None else 0)
        kind = cluster.gpu_kind or (size.gpu_kind if size is not None else "")
        activity = last_activity_of(cluster)
        rows.append(
            ClusterRow(
                cluster=cluster,
                cost=costs.get(cluster.pk),
                expiry=expiry_status(cluster, last_activity=activity, now=now, window=window),
                gpus=per_node * cluster.node_count,
                gpu_kind=kind,
                last_activity=activity,
            )
        )
    return rows


@require_GET
def overview(request: AuthedRequest) -> HttpResponse:
    now = timezone.now()
    costs = selectors.costs_summary(now=now)
    rows = _cluster_rows(
        list(selectors.clusters_with_activity()[:500]), costs.by_cluster, selectors.vm_price_map(), now
    )
    # The newest deployments by default: rendering thousands of rows is most of a big team's page time.
    shown = OVERVIEW_ALL_ROWS if request.GET.get("all") else OVERVIEW_ROWS
    deployments = list(selectors.deployments_overview()[:shown])
    deployments_total = selectors.deployments_overview().count()  # always: the query count stays constant
    # What the Azure sync found running (and billing) that Lynx did not create, or lost track of.
    findings = list(external_resources_open()[:100])
    return render(
        request,
        "dashboard/overview.html",
        {
            "rows": rows,
            "warnings": [row for row in rows if row.expiry.warn and row.cluster.owner_id == request.user.pk],
            "deployments": deployments,
            "deployments_total": deployments_total,
            "operations": selectors.operations_recent(10),
            "costs": costs,
            "chart": cost_per_day_chart(costs.per_day),
            "extend_choices": EXTEND_CHOICES,
            "findings": findings,
            "unmanaged_per_hour": unmanaged_cost_per_hour(findings) if findings else 0,
        },
    )


def _back(request: HttpRequest) -> HttpResponse:
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return redirect(target)
    return redirect("overview")


@require_POST
@deployer_required
def cluster_expiry_extend_view(request: AuthedRequest, pk: int) -> HttpResponse:
    cluster = get_object_or_404(Cluster, pk=pk)
    form = ExtendForm(request.POST)
    if not form.is_valid():
        messages.error(
            request,
            f"Extend by 1 to {MAX_EXTEND_HOURS} hours; nothing was changed.",
        )
        return _back(request)
    try:
        cluster = cluster_expiry_extend(user=request.user, cluster=cluster, hours=form.cleaned_data["hours"])
    except Refused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{cluster.name}: teardown postponed by {form.cleaned_data['hours']} h.")
    return _back(request)


@require_POST
@deployer_required
def cluster_expiry_cancel_view(request: AuthedRequest, pk: int) -> HttpResponse:
    cluster = get_object_or_404(Cluster, pk=pk)
    try:
        cluster = cluster_expiry_cancel(user=request.user, cluster=cluster)
    except Refused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{cluster.name} no longer expires: it runs until somebody deletes it.")
    return _back(request)
