"""Reads for the Azure pages: workspaces, what the sync found, and the Azure operations of a deployment."""

from __future__ import annotations

from decimal import Decimal

from django.db.models import Count, Q, QuerySet

from deployments.models import (
    Cluster,
    Deployment,
    ExternalResource,
    Operation,
    OperationKind,
    Workspace,
)
from deployments.selectors import vm_price_map
from deployments.states import ProvisioningState
from deployments.vm_sizes import vm_size_info
from targets.azureml import KINDS as AZURE_KINDS


def workspaces_overview() -> QuerySet[Workspace]:
    """Every workspace with its live Lynx clusters and its open sync findings counted."""
    return Workspace.objects.annotate(
        clusters_alive=Count(
            "cluster", filter=~Q(cluster__provisioning_state=ProvisioningState.DELETED), distinct=True
        ),
        findings_open=Count(
            "external_resources", filter=Q(external_resources__resolved_at=None), distinct=True
        ),
    ).order_by("name")


def workspace_clusters(workspace: Workspace) -> QuerySet[Cluster]:
    return Cluster.objects.filter(backend__in=AZURE_KINDS, workspace=workspace).order_by("-created_at")


def workspace_operations(workspace: Workspace, limit: int = 20) -> QuerySet[Operation]:
    """Connection tests and log reads: the operations that belong to the workspace itself."""
    return Operation.objects.filter(workspace=workspace).order_by("-created_at")[:limit]


def external_resources_open(workspace: Workspace | None = None) -> QuerySet[ExternalResource]:
    """Open findings of the sync (unmanaged first), for the workspace page or the overview."""
    rows = ExternalResource.objects.filter(resolved_at=None).select_related(
        "workspace", "cluster", "deployment"
    )
    if workspace is not None:
        rows = rows.filter(workspace=workspace)
    return rows.order_by("-finding", "kind", "name")


def external_resources_resolved(workspace: Workspace, limit: int = 20) -> QuerySet[ExternalResource]:
    return ExternalResource.objects.filter(workspace=workspace, resolved_at__isnull=False).order_by(
        "-resolved_at"
    )[:limit]


def unmanaged_cost_per_hour(rows) -> Decimal:
    """What the unmanaged and still-billing compute targets among `rows` cost per hour (price table, else the
    size list)."""
    prices = vm_price_map()
    total = Decimal(0)
    billing = (ExternalResource.Finding.UNMANAGED, ExternalResource.Finding.STILL_BILLING)
    for row in rows:
        if row.finding not in billing or row.kind != ExternalResource.Kind.COMPUTE:
            continue
        price = prices.get(row.vm_size.lower())
        per_node = price.price_per_hour if price is not None else None
        if per_node is None and (info := vm_size_info(row.vm_size)) and info.price_eastus_per_hour:
            per_node = Decimal(str(info.price_eastus_per_hour))
        if per_node is not None:
            total += per_node * (row.node_count or 1)
    return total


def deployment_azure_operations(deployment: Deployment, limit: int = 20) -> QuerySet[Operation]:
    """A deployment's key regenerations and log reads."""
    return Operation.objects.filter(
        Q(deployment=deployment, kind=OperationKind.SERVICE_KEY_REGENERATE)
        | Q(kind=OperationKind.SERVICE_LOGS, params__deployment_id=deployment.pk)
    ).order_by("-created_at")[:limit]


def cluster_tls_operations(cluster: Cluster, limit: int = 20) -> QuerySet[Operation]:
    """A cluster's TLS enables and certificate renewals."""
    return Operation.objects.filter(cluster=cluster, kind=OperationKind.CLUSTER_TLS).order_by("-created_at")[
        :limit
    ]


def deployment_latest_logs(deployment: Deployment) -> Operation | None:
    """The newest finished log read of a deployment (its lines are the logs)."""
    return (
        Operation.objects.filter(kind=OperationKind.SERVICE_LOGS, params__deployment_id=deployment.pk)
        .exclude(state__in=("queued", "running"))
        .order_by("-created_at")
        .first()
    )
