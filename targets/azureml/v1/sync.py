"""What the workspace holds, as Azure reports it: the input of the periodic sync."""

from __future__ import annotations

from typing import Any

from deployments.backends.base import WorkspaceSpec

from .errors import _azure, _format_error, _format_errors
from .workspace import _workspace


def list_resources(ws: WorkspaceSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Compute targets and web services as Azure reports them (for the periodic sync)."""
    from azureml.core import Webservice
    from azureml.core.compute import ComputeTarget

    workspace = _workspace(ws)
    with _azure("Listing compute targets"):
        computes = [_compute_dict(c) for c in ComputeTarget.list(workspace)]
    with _azure("Listing web services"):
        services = [_service_dict(s) for s in Webservice.list(workspace)]
    return computes, services


def _compute_dict(c: Any) -> dict[str, Any]:
    return {
        "name": c.name,
        "compute_type": c.type,
        "provisioning_state": c.provisioning_state,
        "provisioning_errors": list(_format_errors(c.provisioning_errors)),
        "location": c.location,
        "vm_size": getattr(c, "agent_vm_size", None),
        "node_count": getattr(c, "agent_count", None),
        "cluster_purpose": getattr(c, "cluster_purpose", None),
        "is_attached": getattr(c, "is_attached", None),
        "cluster_fqdn": getattr(c, "cluster_fqdn", None),
        "resource_id": getattr(c, "cluster_resource_id", None),
    }


def _service_dict(s: Any) -> dict[str, Any]:
    return {
        "name": s.name,
        "compute_type": s.compute_type,
        "state": s.state,
        "error": _format_error(s.error),
        "compute_name": getattr(s, "compute_name", None),
        "scoring_uri": getattr(s, "scoring_uri", None),
        "num_replicas": getattr(s, "num_replicas", None),
        "models": [m.id for m in getattr(s, "models", [])],
        "created_time": s.created_time.isoformat() if s.created_time else None,
        "updated_time": s.updated_time.isoformat() if s.updated_time else None,
    }
