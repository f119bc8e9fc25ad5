"""Reads: what pages show. Query counts stay constant however much history there is."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db.models import Max, Q, QuerySet
from django.utils import timezone

from accounts.roles import ROLES
from deployments.backends import target_traits
from deployments.costs import (
    Priced,
    PriceSchedule,
    cluster_price,
    daily_costs,
    last_days,
    price_key,
    priced_sum,
)
from deployments.models import AuditEvent, Cluster, Deployment, Operation, VmPrice, VmPriceChange
from deployments.states import ProvisioningState, ServiceState


def clusters_alive() -> QuerySet[Cluster]:
    return Cluster.objects.exclude(provisioning_state=ProvisioningState.DELETED).select_related(
        "owner", "workspace"
    )


def deployments_alive() -> QuerySet[Deployment]:
    return Deployment.objects.exclude(state=ServiceState.DELETED).select_related("owner", "cluster", "model")


def deployments_overview() -> QuerySet[Deployment]:
    """Live deployments with what the overview shows about their cluster and target."""
    return Deployment.objects.exclude(state=ServiceState.DELETED).select_related(
        "owner", "cluster__workspace", "model"
    )


def operations_recent(limit: int = 20) -> QuerySet[Operation]:
    return Operation.objects.select_related("requested_by").order_by("-created_at")[:limit]


def audit_for(resource_type: str, resource_id: int, limit: int = 50) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(resource_type=resource_type, resource_id=resource_id)[:limit]


# --- the overview: activity, expiry and costs ------------------------------------------------------


def clusters_with_activity() -> QuerySet[Cluster]:
    """Live clusters with the two facts the idle rule needs: their deployments' last scoring request
    and last deployment (one query, however many deployments there are)."""
    return clusters_alive().annotate(
        last_scored=Max("deployments__last_scored_at"), last_deployed=Max("deployments__created_at")
    )


def cluster_last_activity(cluster: Cluster) -> datetime:
    """When the cluster was last used: created, deployed to, or sent a scoring request."""
    found = Deployment.objects.filter(cluster=cluster).aggregate(
        last_scored=Max("last_scored_at"), last_deployed=Max("created_at")
    )
    return max(t for t in (cluster.created_at, found["last_scored"], found["last_deployed"]) if t is not None)


def clusters_with_expiry_rule() -> QuerySet[Cluster]:
    """Clusters the expiry check looks at: alive, not already going, with an expiry date or an idle rule."""
    return (
        clusters_with_activity()
        .exclude(provisioning_state=ProvisioningState.DELETING)
        .filter(Q(expires_at__isnull=False) | Q(idle_teardown_hours__isnull=False))
    )


def vm_price_schedules() -> dict[str, PriceSchedule]:
    """Every size's price history, keyed like vm_price_map (one query)."""
    steps: dict[str, list] = {}
    for name, start, price in VmPriceChange.objects.order_by("price_id", "effective_from", "id").values_list(
        "price__vm_size", "effective_from", "price_per_hour"
    ):
        steps.setdefault(name.lower(), []).append((start, price))
    return {name: PriceSchedule(tuple(rows)) for name, rows in steps.items()}


def vm_price_map() -> dict[str, VmPrice]:
    """Every price-table row by lower-cased size (Azure's size names are case-insensitive)."""
    return {price.vm_size.lower(): price for price in VmPrice.objects.all()}


def teams_of(user_ids: set[int]) -> dict[int, list[str]]:
    """Each user's teams: their Django groups other than the three roles."""
    memberships = (
        get_user_model()
        .groups.through.objects.filter(user_id__in=user_ids)
        .exclude(group__name__in=ROLES)
        .order_by("group__name")
        .values_list("user_id", "group__name")
    )
    teams: dict[int, list[str]] = {}
    for user_id, name in memberships:
        teams.setdefault(user_id, []).append(name)
    return teams


NO_OWNER, NO_TEAM = "(no owner)", "no team"


@dataclass
class CostTotal:
    """Totals for one owner or one team."""

    name: str
    running: int = 0
    per_hour: Decimal = Decimal(0)
    so_far: Decimal = Decimal(0)
    last_30_days: Decimal = Decimal(0)
    unpriced: int = 0


@dataclass
class CostSummary:
    by_cluster: dict[int, Priced] = field(default_factory=dict)
    owners: list[CostTotal] = field(default_factory=list)
    teams: list[CostTotal] = field(default_factory=list)
    total: CostTotal = field(default_factory=lambda: CostTotal("All"))
    per_day: list[tuple[date, Decimal]] = field(default_factory=list)
    unpriced_sizes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Billed:
    """One thing billed on its own: a cluster, or a deployment on a target that bills each deployment
    (then priced by its cluster's size, with its replicas as the nodes)."""

    cluster_id: int
    per_service: bool
    backend: str
    vm_size: str
    node_count: int
    created_at: datetime
    deleted_at: datetime | None
    owner_id: int | None
    owner_name: str | None


def _billed(*, now: datetime, since: datetime) -> tuple[list[_Billed], set[int]]:
    """What bills, alive or deleted since `since`: the clusters of targets that bill clusters, and the
    deployments on clusters of targets that bill each deployment; and the ids of those live clusters
    (two queries; one when no cluster's target bills per deployment)."""
    clusters = list(
        Cluster.objects.filter(created_at__lte=now)
        .filter(Q(deleted_at__isnull=True) | Q(deleted_at__gte=since))
        .values(
            "id",
            "backend",
            "vm_size",
            "node_count",
            "created_at",
            "deleted_at",
            "owner_id",
            "owner__username",
        )
    )
    per_service = {row["id"]: row for row in clusters if target_traits(row["backend"]).billed_per_service}
    # Django makes no query for an empty id list.
    services = (
        Deployment.objects.filter(cluster_id__in=list(per_service), created_at__lte=now)
        .filter(Q(deleted_at__isnull=True) | Q(deleted_at__gte=since))
        .values_list("cluster_id", "replicas", "created_at", "deleted_at", "owner_id", "owner__username")
    )
    billed = [
        _Billed(
            cluster_id=row["id"],
            per_service=False,
            backend=row["backend"],
            vm_size=row["vm_size"],
            node_count=row["node_count"],
            created_at=row["created_at"],
            deleted_at=row["deleted_at"],
            owner_id=row["owner_id"],
            owner_name=row["owner__username"],
        )
        for row in clusters
        if row["id"] not in per_service
    ]
    billed += [
        _Billed(
            cluster_id=cluster_id,
            per_service=True,
            backend=per_service[cluster_id]["backend"],
            vm_size=per_service[cluster_id]["vm_size"],
            node_count=replicas,
            created_at=created_at,
            deleted_at=deleted_at,
            owner_id=owner_id,
            owner_name=owner_name,
        )
        for cluster_id, replicas, created_at, deleted_at, owner_id, owner_name in services
    ]
    return billed, {cluster_id for cluster_id, row in per_service.items() if row["deleted_at"] is None}


def costs_summary(*, now: datetime | None = None, days: int = 30) -> CostSummary:
    """Cost so far and per hour for every live cluster, totals per owner and per team, and cost per
    day over the last `days` days (deleted clusters included). Four queries at most, whatever the history.

    A target that bills each deployment (`billed_per_service`) is billed by its deployments, not its
    clusters: a deployment costs its cluster's VM size × its replicas for the hours it exists (to its
    owner and their teams), and counts as one running thing; such a cluster costs nothing by itself, and
    a live one shows the sum of its live deployments' costs (zero with none). Simplification: a
    deployment's replicas are its current value for all its hours, so an update that changed the instance
    count re-prices the past."""
    now = now or timezone.now()
    window = last_days(now, days)
    since = datetime(window[0].year, window[0].month, window[0].day, tzinfo=UTC)
    billed, per_service_alive = _billed(now=now, since=since)
    prices = vm_price_schedules()
    teams = teams_of({item.owner_id for item in billed if item.owner_id})
    summary = CostSummary()
    owners: dict[str, CostTotal] = {}
    by_team: dict[str, CostTotal] = {}
    per_day = {day: Decimal(0) for day in window}
    unpriced: set[str] = set()
    services_alive: dict[int, list[Priced]] = {cluster_id: [] for cluster_id in per_service_alive}
    for item in billed:
        by_size = item.per_service or target_traits(item.backend).priced_by_size
        schedule = prices.get(price_key(priced_by_size=by_size, vm_size=item.vm_size)) or PriceSchedule.flat(
            None if by_size else Decimal(0)
        )
        priced = cluster_price(
            created_at=item.created_at,
            deleted_at=item.deleted_at,
            node_count=item.node_count,
            price_per_hour=schedule,
            now=now,
        )
        alive = item.deleted_at is None
        if alive and item.per_service:
            services_alive.setdefault(item.cluster_id, []).append(priced)
        elif alive:
            summary.by_cluster[item.cluster_id] = priced
        recent = daily_costs(
            created_at=item.created_at,
            deleted_at=item.deleted_at,
            rate=schedule,
            days=window,
            now=now,
            node_count=item.node_count,
        )
        for day, amount in recent.items():
            per_day[day] += amount
        if priced.so_far is None:
            unpriced.add(item.vm_size or "(none)")
        owner = item.owner_name or NO_OWNER
        groups = [owners.setdefault(owner, CostTotal(owner)), summary.total]
        owner_teams = teams.get(item.owner_id, [NO_TEAM]) if item.owner_id else [NO_TEAM]
        groups += [by_team.setdefault(t, CostTotal(t)) for t in owner_teams]
        for total in groups:
            total.last_30_days += sum(recent.values(), Decimal(0))
            if not alive:
                continue
            total.running += 1
            if priced.so_far is None:
                total.unpriced += 1
            else:
                total.per_hour += priced.per_hour_now or 0
                total.so_far += priced.so_far
    for cluster_id in per_service_alive:
        summary.by_cluster[cluster_id] = priced_sum(services_alive[cluster_id])
    summary.owners = sorted(owners.values(), key=lambda t: (-t.so_far, t.name))
    summary.teams = sorted(by_team.values(), key=lambda t: (t.name == NO_TEAM, -t.so_far, t.name))
    summary.per_day = list(per_day.items())
    summary.unpriced_sizes = sorted(unpriced)
    return summary


# --- the audit log ---------------------------------------------------------------------------------

AUDIT_COLUMNS = (
    "id",
    "created_at",
    "actor_name",
    "action",
    "resource_type",
    "resource_id",
    "resource_name",
    "before",
    "after",
    "message",
    "via",
)


def audit_events(
    *,
    person: str = "",
    action: str = "",
    resource_type: str = "",
    resource_name: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[AuditEvent]:
    """The audit log, newest first, filtered; only the columns the page and the CSV show.

    `action` without a dot matches a whole family ("cluster" → cluster.create, cluster.delete, …).
    Every filter is an equality or a range on an indexed column, so counting a page stays cheap.
    """
    events = AuditEvent.objects.only(*AUDIT_COLUMNS)
    if person:
        events = events.filter(actor_name=person)
    if action:
        family = "." not in action
        events = events.filter(action__startswith=action + ".") if family else events.filter(action=action)
    if resource_type:
        events = events.filter(resource_type=resource_type)
    if resource_name:
        events = events.filter(resource_name=resource_name)
    if since:
        events = events.filter(created_at__gte=since)
    if until:
        events = events.filter(created_at__lt=until)
    return events.order_by("-created_at", "-id")
