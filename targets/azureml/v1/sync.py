"""What the workspace holds, as Azure reports it: the input of the periodic sync."""

from __future__ import annotations

from typing import Any

from deployments.backends.base import WorkspaceSpec

from .errors import _azure, _format_error, _format_errors
from .workspace import _workspace


def list_resources(ws: WorkspaceSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Compute targets and web services as Azure reports them (for the periodic sync)."""
    from azureml.core import Webservice

    workspace = _workspace(ws)
    with _azure("Listing compute targets"):
        computes = [compute_dict(c) for c in _list_computes(workspace)]
    with _azure("Listing web services"):
        services = [_service_dict(s) for s in Webservice.list(workspace)]
    return computes, services


def _list_computes(workspace: Any) -> list[dict[str, Any]]:
    """Every compute target of the workspace as the RP's JSON, whatever its type.

    ComputeTarget.list builds one SDK object per compute with its type's deserializer, and those index fields
    that a real workspace's compute instances, AmlCompute clusters and Kubernetes computes leave null or
    absent (one such compute makes the whole listing raise), and it leaves out types it cannot create. So the
    listing is read as JSON with the SDK's own endpoint and paging helpers (private, but azureml-core is
    frozen since 30 June 2026, so they cannot move).
    """
    from azureml._compute._constants import MLC_WORKSPACE_API_VERSION
    from azureml._compute._util import get_paginated_compute_results, get_requests_session
    from azureml.core.compute import ComputeTarget
    from azureml.exceptions import ComputeTargetException

    headers = workspace._auth.get_authentication_header()
    response = get_requests_session().get(
        ComputeTarget._get_rp_list_computes_endpoint(workspace),
        params={"api-version": MLC_WORKSPACE_API_VERSION},
        headers=headers,
        timeout=60,
    )
    if response.status_code >= 400:
        raise ComputeTargetException(
            "Error occurred retrieving targets:\n"
            f"Response Code: {response.status_code}\nHeaders: {response.headers}\n"
            f"Content: {response.content!r}"
        )
    return list(get_paginated_compute_results(response.json(), headers))


def compute_dict(raw: dict[str, Any]) -> dict[str, Any]:
    """The sync's view of one compute target from the RP's JSON; any field may be null or missing."""
    outer = raw.get("properties") or {}
    inner = outer.get("properties") or {}
    vm_size = inner.get("agentVmSize") or inner.get("vmSize")
    node_count = inner.get("agentCount")
    if node_count is None:  # AmlCompute reports its scale as currentNodeCount / scaleSettings
        node_count = inner.get("currentNodeCount")
    return {
        "name": raw.get("name") or "",
        "compute_type": outer.get("computeType") or "",
        "provisioning_state": outer.get("provisioningState") or "",
        "provisioning_errors": list(_format_errors(outer.get("provisioningErrors"))),
        "location": raw.get("location") or outer.get("computeLocation") or "",
        "vm_size": vm_size if isinstance(vm_size, str) else None,
        "node_count": node_count if isinstance(node_count, int) else None,
        "cluster_purpose": inner.get("clusterPurpose"),
        "is_attached": outer.get("isAttachedCompute"),
        "cluster_fqdn": inner.get("clusterFqdn"),
        "resource_id": outer.get("resourceId"),
    }


def _service_dict(s: Any) -> dict[str, Any]:
    created, updated = getattr(s, "created_time", None), getattr(s, "updated_time", None)
    return {
        "name": s.name,
        "compute_type": getattr(s, "compute_type", None),
        "state": getattr(s, "state", None),
        "error": _format_error(getattr(s, "error", None)),
        "compute_name": getattr(s, "compute_name", None),
        "scoring_uri": getattr(s, "scoring_uri", None),
        "num_replicas": getattr(s, "num_replicas", None),
        "models": [m.id for m in getattr(s, "models", None) or []],
        "created_time": created.isoformat() if created else None,
        "updated_time": updated.isoformat() if updated else None,
    }
