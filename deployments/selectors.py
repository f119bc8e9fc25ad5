"""Reads: what pages show. Query counts stay constant however much history there is."""

from __future__ import annotations

from django.db.models import QuerySet

from deployments.models import AuditEvent, Cluster, Deployment, Operation
from deployments.states import ProvisioningState, ServiceState


def clusters_alive() -> QuerySet[Cluster]:
    return Cluster.objects.exclude(provisioning_state=ProvisioningState.DELETED).select_related("owner", "workspace")


def deployments_alive() -> QuerySet[Deployment]:
    return Deployment.objects.exclude(state=ServiceState.DELETED).select_related("owner", "cluster", "model")


def operations_recent(limit: int = 20) -> QuerySet[Operation]:
    return Operation.objects.select_related("requested_by").order_by("-created_at")[:limit]


def audit_for(resource_type: str, resource_id: int, limit: int = 50) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(resource_type=resource_type, resource_id=resource_id)[:limit]
