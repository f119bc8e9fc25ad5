"""Signing in as the service principal, and one MLClient per workspace and process.

The cloud is Azure's public cloud unless ARM_CLOUD_METADATA_URL names another cloud's metadata (as for
azureml-core, `v1/`): then ARM and the sign-in authority come from there, through azure-ai-ml's own
custom-cloud options, so a sovereign cloud, or Lynx's Azure emulator in the tests, needs no code of its own.
"""

from __future__ import annotations

import functools
import os
import threading
from typing import Any
from urllib.parse import urlsplit

import requests

from deployments.backends.base import BackendError, WorkspaceSpec

from .errors import azure_v2

CLOUD_NAME = "AzureCloud"  # the entry of the metadata document Lynx uses (as azureml-core does)
PUBLIC_ARM = "https://management.azure.com/"
_CLIENTS: dict[WorkspaceSpec, tuple[Any, Any, str]] = {}  # spec → (MLClient, credential, ARM base URL)
_LOCK = threading.Lock()


@functools.cache
def _cloud(metadata_url: str) -> dict[str, str]:
    """ARM and Azure AD endpoints of the cloud the metadata document at `metadata_url` describes."""
    try:
        answer = requests.get(metadata_url, timeout=30)
        answer.raise_for_status()
        clouds = answer.json()
    except (requests.RequestException, ValueError) as exc:
        raise BackendError(
            f"Could not read the Azure cloud's metadata ({metadata_url}): {exc}", transient=True
        ) from exc
    entry = next((c for c in clouds if c.get("name") == CLOUD_NAME), clouds[0] if clouds else None)
    if not entry:
        raise BackendError(f"The Azure cloud metadata at {metadata_url} describes no cloud.")
    return {"resource_manager": entry["resourceManager"], "login": entry["authentication"]["loginEndpoint"]}


def _connect(spec: WorkspaceSpec) -> tuple[Any, Any, str]:
    from azure.ai.ml import MLClient
    from azure.identity import ClientSecretCredential

    credential_kwargs: dict[str, Any] = {}
    client_kwargs: dict[str, Any] = {"enable_telemetry": False}
    arm = PUBLIC_ARM
    if metadata_url := os.environ.get("ARM_CLOUD_METADATA_URL"):
        cloud = _cloud(metadata_url)
        arm = cloud["resource_manager"]
        credential_kwargs = {"authority": urlsplit(cloud["login"]).netloc, "disable_instance_discovery": True}
        client_kwargs |= {
            "cloud": "LynxCustomCloud",
            "cloud_metadata": {
                "azure_portal": "https://portal.azure.com/",
                "resource_manager": cloud["resource_manager"],
                "active_directory": cloud["login"],
                "aml_resource_id": "https://ml.azure.com/",
                "storage_endpoint": "core.windows.net",
                "registry_discovery_endpoint": cloud["resource_manager"],
            },
        }
    with azure_v2(f"Signing in to workspace {spec.workspace_name!r}"):
        credential = ClientSecretCredential(
            spec.tenant_id, spec.client_id, spec.client_secret, **credential_kwargs
        )
        client = MLClient(
            credential, spec.subscription_id, spec.resource_group, spec.workspace_name, **client_kwargs
        )
    return client, credential, arm


def _connected(spec: WorkspaceSpec) -> tuple[Any, Any, str]:
    with _LOCK:
        found = _CLIENTS.get(spec)
    if found is None:
        found = _connect(spec)
        with _LOCK:
            if len(_CLIENTS) > 32:
                _CLIENTS.clear()
            _CLIENTS[spec] = found
    return found


def ml_client(spec: WorkspaceSpec) -> Any:
    """An MLClient for the workspace, kept per process (its credential refreshes its own tokens)."""
    return _connected(spec)[0]


def arm_base(spec: WorkspaceSpec) -> str:
    """Azure Resource Manager's base URL for the workspace's cloud."""
    return _connected(spec)[2]


def arm_get(spec: WorkspaceSpec, url: str) -> dict[str, Any]:
    """GET an ARM URL Azure handed out (an operation's status) with the client's credential. Only an https URL
    on ARM's own host under the workspace's subscription gets the token: a reference that came from anywhere
    else never carries it away."""
    _, credential, arm = _connected(spec)
    parts, base = urlsplit(url), urlsplit(arm)
    if (
        parts.scheme != "https"
        or parts.netloc.lower() != base.netloc.lower()
        or not parts.path.lower().startswith(f"/subscriptions/{spec.subscription_id.lower()}/")
    ):
        raise BackendError(
            f"Lynx does not follow an operation URL outside Azure Resource Manager: {url[:200]}"
        )
    with azure_v2("Reading Azure's operation"):
        token = credential.get_token(arm.rstrip("/") + "/.default").token
        answer = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    if answer.status_code >= 400:
        raise BackendError(
            f"Reading Azure's operation: HTTP {answer.status_code} {answer.text[:300]}",
            transient=answer.status_code in (429, 500, 502, 503, 504),
        )
    return answer.json()
