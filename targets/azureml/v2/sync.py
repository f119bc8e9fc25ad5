"""Listing a workspace's managed online endpoints for the periodic sync (`services/sync.py`)."""

from __future__ import annotations

from typing import Any

from deployments.backends.base import WorkspaceSpec

from .client import ml_client
from .errors import azure_v2


def list_endpoints(ws: WorkspaceSpec) -> list[dict[str, Any]]:
    """Every online endpoint of the workspace with what it runs: its deployments' instance type and the
    instances they hold together (what Azure bills for), in the shape the sync compares."""
    ml = ml_client(ws)
    endpoints: list[dict[str, Any]] = []
    with azure_v2(f"Listing the online endpoints of workspace {ws.workspace_name!r}"):
        for endpoint in ml.online_endpoints.list():
            deployments = list(ml.online_deployments.list(endpoint.name))
            sizes = sorted({d.instance_type for d in deployments if d.instance_type})
            endpoints.append(
                {
                    "name": endpoint.name,
                    "compute_type": "Managed online endpoint",
                    "state": endpoint.provisioning_state or "",
                    "vm_size": ", ".join(sizes),
                    "node_count": sum(int(d.instance_count or 0) for d in deployments),
                    "location": endpoint.location or "",
                    "deployments": sorted(d.name for d in deployments),
                    "scoring_uri": endpoint.scoring_uri or "",
                }
            )
    return endpoints
