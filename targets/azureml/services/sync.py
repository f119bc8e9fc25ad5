"""The periodic Azure sync: compare what a workspace really holds with what Lynx believes it holds.

Azure bills for every compute target that exists, whoever made it. Once per LYNX_AZURE_SYNC_SECONDS the
beat schedule lists each workspace's compute targets and web services (`list_resources`, SDK v1) and its
managed online endpoints (`list_endpoints`, SDK v2: compared as services, against the deployments of both
Azure targets) and records these findings as `ExternalResource` rows, each audited by the system when it
appears and when it goes:

* unmanaged: in Azure, not in Lynx (made in the portal or a notebook, or left behind), billing unseen;
* missing: Lynx believes a cluster or service exists, Azure does not list it (deleted behind Lynx's back);
* still billing: Lynx gave up on a cluster or service (Failed: a timeout, a failed removal) but Azure still
  lists it, so it bills until someone deletes it. A Failed row does not account for what Azure holds.

The listing is a network call made with no transaction open; the comparison is written in one transaction.
Rows whose state changed after the listing started are left alone until the next pass, so a cluster Lynx is
creating or deleting right now is never reported as someone else's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from deployments.backends.base import BackendError
from deployments.models import Cluster, Deployment, ExternalResource, Operation, Workspace
from deployments.services.audit import audit_record
from deployments.services.specs import workspace_spec
from deployments.states import ACTIVE_OPERATION_STATES, LIVE_SERVICE_STATES, ProvisioningState, ServiceState
from deployments.tasks import SYNC_AZURE, SYNC_AZURE_WORKSPACE, task_send
from targets.azureml import KIND as AZUREML
from targets.azureml import KINDS as AZURE_KINDS
from targets.azureml import KUBERNETES_KIND
from targets.azureml.v1 import list_resources  # cheap: the SDK is imported only when it runs
from targets.azureml.v2.sync import list_endpoints

log = logging.getLogger(__name__)

Finding = ExternalResource.Finding
Kind = ExternalResource.Kind


@dataclass
class SyncResult:
    workspace: str
    ok: bool = True
    error: str = ""
    computes: int = 0
    services: int = 0
    found: list[str] = field(default_factory=list)  # findings that appeared in this pass
    resolved: list[str] = field(default_factory=list)  # findings that went away in this pass


def azure_sync_request(*, workspace: Workspace | None = None) -> None:
    """Ask a worker to sync one workspace (or every one) now, after the caller's transaction commits."""
    # robust: with the broker down the request still answers; the periodic sync catches up once it is back.
    if workspace is None:
        transaction.on_commit(lambda: task_send(SYNC_AZURE), robust=True)
    else:
        transaction.on_commit(lambda: task_send(SYNC_AZURE_WORKSPACE, workspace.pk), robust=True)


def azure_sync_all() -> list[int]:
    """The ids of the workspaces to sync (the periodic task hands each to its own task)."""
    return list(Workspace.objects.order_by("pk").values_list("pk", flat=True))


def azure_sync_workspace(*, workspace_id: int) -> SyncResult:
    """List one workspace's compute targets and web services and record what Lynx does not account for."""
    workspace = Workspace.objects.get(pk=workspace_id)
    result = SyncResult(workspace=workspace.name)
    started = timezone.now()
    try:
        computes, services = list_resources(workspace_spec(workspace))
        services += list_endpoints(workspace_spec(workspace))
    except (BackendError, ValueError) as exc:  # ValueError: the secret cannot be decrypted any more
        message = getattr(exc, "message", None) or str(exc)
        Workspace.objects.filter(pk=workspace.pk).update(last_sync_error=message[:4000])
        log.warning("azure sync %s: %s", workspace.name, message)
        return SyncResult(workspace=workspace.name, ok=False, error=message)
    result.computes, result.services = len(computes), len(services)
    with transaction.atomic():
        wanted = _findings(workspace, computes, services, started)
        _record(workspace, wanted, result)
        Workspace.objects.filter(pk=workspace.pk).update(last_synced_at=timezone.now(), last_sync_error="")
    return result


# --- comparing ---------------------------------------------------------------------------------------


def _known(queryset, started: datetime, state_field: str, deleted_state: str, failed_state: str) -> set[str]:
    """Names Lynx accounts for: every row neither deleted nor Failed, and rows that became so after the
    listing started (Lynx may be removing them right now)."""
    settled_gone = Q(**{f"{state_field}__in": (deleted_state, failed_state)})
    alive = ~settled_gone | Q(deleted_at__gte=started) | Q(state_changed_at__gte=started)
    return {name.lower() for name in queryset.filter(alive).values_list("name", flat=True)}


def _failed(queryset, state_field: str, failed_state: str) -> dict[str, Any]:
    """Lynx's Failed rows by lowercase name: what a listed resource of that name is still billing for."""
    return {row.name.lower(): row for row in queryset.filter(**{state_field: failed_state})}


def _findings(
    workspace: Workspace, computes: list[dict[str, Any]], services: list[dict[str, Any]], started: datetime
) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(finding, kind, name) → the row's fields, for every discrepancy in this listing."""
    # Compute targets: AKS (v1) and Kubernetes (v2) clusters; a managed-endpoint "cluster" is none.
    clusters = Cluster.objects.filter(backend__in=(AZUREML, KUBERNETES_KIND), workspace=workspace)
    deployments = Deployment.objects.filter(cluster__backend__in=AZURE_KINDS, cluster__workspace=workspace)
    known_clusters = _known(
        clusters, started, "provisioning_state", ProvisioningState.DELETED, ProvisioningState.FAILED
    )
    known_services = _known(deployments, started, "state", ServiceState.DELETED, ServiceState.FAILED)
    failed_clusters = _failed(clusters, "provisioning_state", ProvisioningState.FAILED)
    failed_deployments = _failed(deployments.select_related("cluster"), "state", ServiceState.FAILED)
    wanted: dict[tuple[str, str, str], dict[str, Any]] = {}

    for compute in computes:
        name = compute.get("name") or ""
        if not name or name.lower() in known_clusters:
            continue
        fields = {
            "compute_type": compute.get("compute_type") or "",
            "state": compute.get("provisioning_state") or "",
            "vm_size": compute.get("vm_size") or "",
            "node_count": compute.get("node_count"),
            "location": compute.get("location") or "",
            "details": _plain(compute),
        }
        if (cluster := failed_clusters.get(name.lower())) is not None:
            wanted[(Finding.STILL_BILLING, Kind.COMPUTE, name)] = {**fields, "cluster": cluster}
        else:
            wanted[(Finding.UNMANAGED, Kind.COMPUTE, name)] = fields
    for service in services:
        name = service.get("name") or ""
        if not name or name.lower() in known_services:
            continue
        fields = {
            "compute_type": service.get("compute_type") or "",
            "state": service.get("state") or "",
            "vm_size": service.get("vm_size") or "",
            "node_count": service.get("node_count"),
            "location": service.get("location") or "",
            "details": _plain(service),
        }
        if (deployment := failed_deployments.get(name.lower())) is not None:
            fields.update(deployment=deployment, cluster=deployment.cluster)
            wanted[(Finding.STILL_BILLING, Kind.SERVICE, name)] = fields
        else:
            wanted[(Finding.UNMANAGED, Kind.SERVICE, name)] = fields

    # Lynx's side: only rows that were settled before the listing began and that no operation is changing.
    busy_clusters = Operation.objects.filter(state__in=ACTIVE_OPERATION_STATES, cluster__isnull=False).values(
        "cluster_id"
    )
    busy_deployments = Operation.objects.filter(
        state__in=ACTIVE_OPERATION_STATES, deployment__isnull=False
    ).values("deployment_id")
    in_azure_computes = {(c.get("name") or "").lower() for c in computes}
    in_azure_services = {(s.get("name") or "").lower() for s in services}
    settled_clusters = clusters.filter(
        provisioning_state=ProvisioningState.SUCCEEDED, state_changed_at__lt=started
    ).exclude(pk__in=busy_clusters)
    for cluster in settled_clusters:
        if cluster.name.lower() not in in_azure_computes:
            wanted[(Finding.MISSING, Kind.COMPUTE, cluster.name)] = {
                "state": cluster.provisioning_state,
                "vm_size": cluster.vm_size,
                "node_count": cluster.node_count,
                "location": cluster.location,
                "cluster": cluster,
            }
    settled_deployments = deployments.filter(
        state__in=[s for s in LIVE_SERVICE_STATES if s != ServiceState.TRANSITIONING],
        state_changed_at__lt=started,
    ).exclude(pk__in=busy_deployments)
    for deployment in settled_deployments.select_related("cluster"):
        if deployment.name.lower() not in in_azure_services:
            wanted[(Finding.MISSING, Kind.SERVICE, deployment.name)] = {
                "state": deployment.state,
                "details": {"cluster": deployment.cluster.name},
                "deployment": deployment,
                "cluster": deployment.cluster,
            }
    return wanted


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if isinstance(v, str | int | float | bool | list | type(None))}


def _describe(finding: str, kind: str, name: str, fields: dict[str, Any]) -> str:
    what = "Compute target" if kind == Kind.COMPUTE else "Web service"
    if finding == Finding.UNMANAGED:
        size = ""
        if fields.get("vm_size"):
            size = f" ({fields.get('node_count') or '?'} × {fields['vm_size']})"
        return (
            f"{what} {name}{size} exists in Azure ({fields.get('state') or 'state unknown'}) but was not "
            "created by Lynx"
        )
    if finding == Finding.STILL_BILLING:
        state = fields.get("state") or "state unknown"
        return f"{what} {name} is Failed in Lynx but still exists in Azure ({state}): it bills until deleted"
    return f"{what} {name} is {fields.get('state')} in Lynx but Azure does not list it"


# --- recording ---------------------------------------------------------------------------------------


def _record(
    workspace: Workspace, wanted: dict[tuple[str, str, str], dict[str, Any]], result: SyncResult
) -> None:
    now = timezone.now()
    open_rows = {
        (row.finding, row.kind, row.name): row
        for row in ExternalResource.objects.select_for_update().filter(workspace=workspace, resolved_at=None)
    }
    for key, fields in wanted.items():
        finding, kind, name = key
        row = open_rows.get(key)
        if row is not None:
            ExternalResource.objects.filter(pk=row.pk).update(
                last_seen_at=now, **{k: v for k, v in fields.items() if k not in ("cluster", "deployment")}
            )
            continue
        row = ExternalResource.objects.create(
            workspace=workspace,
            finding=finding,
            kind=kind,
            name=name,
            first_seen_at=now,
            last_seen_at=now,
            **fields,
        )
        text = _describe(finding, kind, name, fields)
        result.found.append(text)
        # A missing cluster or service is recorded in its own history; an unmanaged one under its Azure name.
        subject = fields.get("deployment") or fields.get("cluster") or row
        audit_record(
            actor=None,
            action=f"azure.{finding}",
            resource=subject,
            after={"workspace": workspace.name, "kind": kind, "name": name, "state": fields.get("state", "")},
            message=text,
        )
    for key, row in open_rows.items():
        if key in wanted:
            continue
        finding, kind, name = key
        ExternalResource.objects.filter(pk=row.pk).update(resolved_at=now)
        text = (
            f"{row.get_kind_display()} {name} is accounted for again"
            if finding == Finding.MISSING
            else f"{row.get_kind_display()} {name} is no longer in Azure"
        )
        result.resolved.append(text)
        audit_record(
            actor=None,
            action=f"azure.{finding}_resolved",
            resource=row,
            after={"workspace": workspace.name, "kind": kind, "name": name},
            message=text,
        )
