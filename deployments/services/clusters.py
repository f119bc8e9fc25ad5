"""Cluster (compute target) actions a person takes."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction

from deployments.models import LOCAL_TARGET, Cluster, Operation, OperationKind, Workspace
from deployments.states import LIVE_SERVICE_STATES, ProvisioningState, ServiceState

from .audit import audit_record
from .operations import Refused, operation_by_idempotency_key, operation_start
from .transitions import cluster_transition


def cluster_create(
    *,
    user: User,
    name: str,
    backend: str = LOCAL_TARGET,
    workspace: Workspace | None = None,
    vm_size: str = "",
    node_count: int = 1,
    cluster_purpose: str = "DevTest",
    location: str = "",
    attach_resource_id: str = "",
    expires_at: datetime | None = None,
    idle_teardown_hours: int | None = None,
    auto_teardown: bool = False,
    idempotency_key: str | None = None,
) -> Operation:
    """Record a new compute target and start provisioning (or attaching) it."""
    if existing := operation_by_idempotency_key(idempotency_key):
        return existing
    try:
        with transaction.atomic():
            cluster = Cluster.objects.create(
                name=name,
                backend=backend,
                workspace=workspace,
                vm_size=vm_size,
                node_count=node_count,
                cluster_purpose=cluster_purpose,
                location=location,
                attach_resource_id=attach_resource_id,
                owner=user,
                expires_at=expires_at,
                idle_teardown_hours=idle_teardown_hours,
                auto_teardown=auto_teardown,
            )
            audit_record(
                actor=user,
                action="cluster.create",
                resource=cluster,
                after=cluster_config(cluster),
            )
            return operation_start(
                kind=OperationKind.CLUSTER_PROVISION,
                user=user,
                cluster=cluster,
                idempotency_key=idempotency_key,
            )
    except IntegrityError as exc:
        if existing := operation_by_idempotency_key(idempotency_key):
            return existing  # the same form, submitted twice at the same moment
        raise Refused(f"A cluster named {name} already exists.") from exc


def cluster_delete(
    *, user: User | None, cluster: Cluster, idempotency_key: str | None = None, reason: str = ""
) -> Operation:
    """Start deleting a cluster. Its deployments must be gone (or going) first."""
    if existing := operation_by_idempotency_key(idempotency_key):
        return existing
    with transaction.atomic():
        # Checked under the cluster's row lock, which deployment_create takes too (see cluster_lock).
        cluster = cluster_lock(cluster)
        if cluster.provisioning_state in (ProvisioningState.DELETING, ProvisioningState.DELETED):
            raise Refused(f"{cluster.name} is already {cluster.provisioning_state.lower()}.")
        if cluster.provisioning_state == ProvisioningState.CREATING:
            raise Refused(
                f"{cluster.name} is still being provisioned; delete it once provisioning has finished."
            )
        live = list(
            cluster.deployments.filter(
                state__in=(*LIVE_SERVICE_STATES, ServiceState.FAILED, ServiceState.DELETING)
            ).values_list("name", flat=True)
        )
        if live:
            raise Refused(f"Delete the deployments on {cluster.name} first: {', '.join(live)}.")
        audit_record(
            actor=user,
            action="cluster.delete",
            resource=cluster,
            before=cluster_config(cluster),
            message=reason,
        )
        operation = operation_start(
            kind=OperationKind.CLUSTER_DELETE, user=user, cluster=cluster, idempotency_key=idempotency_key
        )
        cluster_transition(cluster=cluster, to=ProvisioningState.DELETING, actor=user, message=reason)
    return operation


def cluster_lock(cluster: Cluster) -> Cluster:
    """The cluster, re-read under a row lock held until the caller's transaction ends.

    Deploying to a cluster and deleting it both check, then write; without a common lock both checks could
    pass before either write commits. On SQLite the IMMEDIATE transactions already serialise writers.
    """
    list(Cluster.objects.select_for_update().filter(pk=cluster.pk).values_list("pk", flat=True))
    cluster.refresh_from_db()  # the caller's instance, as committed now that nobody else can change it
    return cluster


def cluster_config(cluster: Cluster) -> dict:
    return {
        "name": cluster.name,
        "backend": cluster.backend,
        "workspace": cluster.workspace.name if cluster.workspace is not None else "",
        "vm_size": cluster.vm_size,
        "node_count": cluster.node_count,
        "cluster_purpose": cluster.cluster_purpose,
        "location": cluster.location,
        "expires_at": cluster.expires_at.isoformat() if cluster.expires_at else None,
        "idle_teardown_hours": cluster.idle_teardown_hours,
        "auto_teardown": cluster.auto_teardown,
    }
