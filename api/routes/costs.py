"""Costs: what the overview shows about money, for scripts. Read-only, any role."""

from __future__ import annotations

from datetime import date, datetime

from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone
from ninja import Router, Schema

from api.routes.clusters import usd
from api.schemas import REFUSALS
from deployments import selectors
from deployments.backends import target_traits
from deployments.costs import PriceSchedule, cluster_price, price_key
from deployments.models import Deployment
from deployments.selectors import CostTotal
from targets.azureml.selectors import external_resources_open, unmanaged_cost_per_hour

router = Router()
# As many findings as the overview shows: their cost per hour is what runs in Azure outside Lynx.
FINDINGS_SHOWN = 100


class CostTotalOut(Schema):
    name: str  # the owner's username or the team's name; "All" for the total
    running: int  # clusters (and, where a target bills each deployment, deployments) running now
    per_hour: float  # USD per hour now, of those that have a price
    so_far: float  # USD since each running thing was created, of those that have a price
    last_30_days: float  # USD over the last 30 UTC days, deleted things included
    unpriced: int  # running things left out of the sums: their VM size has no price


class ClusterCostOut(Schema):
    id: int
    name: str
    target: str
    owner: str | None
    vm_size: str
    node_count: int
    state: str
    billed_per_service: bool  # True: it costs what its deployments cost (listed under deployments)
    hours: float
    per_hour: float | None  # None: no price for its size
    so_far: float | None  # None: some of its hours have no price


class DeploymentCostOut(Schema):
    """A deployment on a target that bills each deployment: its cluster's size × its replicas."""

    id: int
    name: str
    cluster: str
    owner: str | None
    vm_size: str
    replicas: int
    state: str
    hours: float
    per_hour: float | None
    so_far: float | None


class DayCostOut(Schema):
    day: date  # a UTC day
    amount: float  # USD, every cluster and billed deployment that ran that day


class CostsOut(Schema):
    at: datetime  # the moment every figure is computed for
    total: CostTotalOut
    clusters: list[ClusterCostOut]  # every live cluster, oldest first
    deployments: list[DeploymentCostOut]  # live deployments on targets that bill each deployment
    owners: list[CostTotalOut]  # the costliest first
    teams: list[CostTotalOut]  # the costliest first; "no team" last
    per_day: list[DayCostOut]  # the last 30 UTC days, oldest first
    unpriced_sizes: list[str]  # VM sizes with no price: set them on the prices page
    unmanaged_per_hour: float  # what the Azure sync found running (and billing) that Lynx does not manage


def _total(total: CostTotal) -> dict:
    return {
        "name": total.name,
        "running": total.running,
        "per_hour": usd(total.per_hour, "0.0001"),
        "so_far": usd(total.so_far),
        "last_30_days": usd(total.last_30_days),
        "unpriced": total.unpriced,
    }


def _billed_deployments(now: datetime) -> list[dict]:
    """Each live deployment on a target that bills per deployment, priced as costs_summary prices it (two
    queries)."""
    kinds = [kind for kind in settings.LYNX_TARGETS if target_traits(kind).billed_per_service]
    deployments = (
        Deployment.objects.filter(
            cluster__backend__in=kinds,
            cluster__deleted_at__isnull=True,
            deleted_at__isnull=True,
            created_at__lte=now,
        )
        .select_related("cluster", "owner")
        .order_by("pk")
    )
    schedules = selectors.vm_price_schedules()
    out = []
    for deployment in deployments:
        size = deployment.cluster.vm_size
        schedule = schedules.get(price_key(priced_by_size=True, vm_size=size)) or PriceSchedule.flat(None)
        priced = cluster_price(
            created_at=deployment.created_at,
            deleted_at=None,
            node_count=deployment.replicas,
            price_per_hour=schedule,
            now=now,
        )
        out.append(
            {
                "id": deployment.pk,
                "name": deployment.name,
                "cluster": deployment.cluster.name,
                "owner": deployment.owner.get_username() if deployment.owner is not None else None,
                "vm_size": size,
                "replicas": deployment.replicas,
                "state": deployment.state,
                "hours": float(priced.hours),
                "per_hour": usd(priced.per_hour_now, "0.0001"),
                "so_far": usd(priced.so_far),
            }
        )
    return out


@router.get(
    "", response={200: CostsOut, **REFUSALS}, summary="What runs and what it costs (the overview's costs)"
)
def costs(request: HttpRequest) -> dict:
    now = timezone.now()
    summary = selectors.costs_summary(now=now)
    clusters = []
    for cluster in selectors.clusters_alive().order_by("pk"):
        priced = summary.by_cluster.get(cluster.pk)
        clusters.append(
            {
                "id": cluster.pk,
                "name": cluster.name,
                "target": cluster.backend,
                "owner": cluster.owner.get_username() if cluster.owner is not None else None,
                "vm_size": cluster.vm_size,
                "node_count": cluster.node_count,
                "state": cluster.provisioning_state,
                "billed_per_service": target_traits(cluster.backend).billed_per_service,
                "hours": float(priced.hours) if priced is not None else 0.0,
                "per_hour": usd(priced.per_hour_now, "0.0001") if priced is not None else None,
                "so_far": usd(priced.so_far) if priced is not None else None,
            }
        )
    findings = list(external_resources_open()[:FINDINGS_SHOWN])
    return {
        "at": now,
        "total": _total(summary.total),
        "clusters": clusters,
        "deployments": _billed_deployments(now),
        "owners": [_total(owner) for owner in summary.owners],
        "teams": [_total(team) for team in summary.teams],
        "per_day": [{"day": day, "amount": usd(amount)} for day, amount in summary.per_day],
        "unpriced_sizes": summary.unpriced_sizes,
        "unmanaged_per_hour": usd(unmanaged_cost_per_hour(findings), "0.0001") if findings else 0.0,
    }
