"""Signing in as the service principal and the connected Workspace, kept per process."""

from __future__ import annotations

import threading
from typing import Any

from deployments.backends.base import WorkspaceSpec

from .errors import _azure

_WORKSPACES: dict[WorkspaceSpec, Any] = {}
_WORKSPACES_LOCK = threading.Lock()


def _connect(spec: WorkspaceSpec) -> Any:
    from azureml.core import Workspace
    from azureml.core.authentication import ServicePrincipalAuthentication

    auth = ServicePrincipalAuthentication(
        tenant_id=spec.tenant_id,
        service_principal_id=spec.client_id,
        service_principal_password=spec.client_secret,
    )
    where = (
        f"Connecting to workspace {spec.workspace_name!r} (resource group {spec.resource_group!r}, "
        f"subscription {spec.subscription_id})"
    )
    with _azure(where):
        return Workspace(spec.subscription_id, spec.resource_group, spec.workspace_name, auth=auth)


def _workspace(spec: WorkspaceSpec) -> Any:
    """A connected Workspace, kept per process (the auth object refreshes its own tokens)."""
    with _WORKSPACES_LOCK:
        ws = _WORKSPACES.get(spec)
    if ws is None:
        ws = _connect(spec)
        with _WORKSPACES_LOCK:
            if len(_WORKSPACES) > 32:
                _WORKSPACES.clear()
            _WORKSPACES[spec] = ws
    return ws


def test_connection(ws: WorkspaceSpec) -> str:
    """Sign in as the service principal and read the workspace; say what was found."""
    workspace = _connect(ws)
    return (
        f"Signed in as {ws.client_id} and found workspace {workspace.name!r} in resource group "
        f"{workspace.resource_group!r} ({workspace.location})."
    )


test_connection.__test__ = False  # type: ignore[attr-defined]  # not a pytest test, despite the name
