"""Azure ML v2 (azure-ai-ml) for managed and Kubernetes online endpoints: the ARM surface, the assets the SDK
uploads and registers, the `*.inference.ml.azure.com` data plane and the Kubernetes extension's azureml-fe.

`V2State` is the emulator's v2 state (`emulator.v2`); `ROUTES` is registered by routes.py; `advance` runs on
the emulator's clock (every request and every host's news), `stop_hosts` with the emulator's own.
Modules: `lro` (ARM long-running operations), `endpoints`, `deployments` (validation, quota, handlers),
`rollout` (build → provision → start → settle, with the v1 build.py and hosts.py), `kubernetes` (AKS
clusters with the AzureML extension, KubernetesCompute attach, Kubernetes deployments' rules and pods,
their azureml-fe data plane), `assets` (datastores,
blobs, models, codes, environments), `quotas` (usages, VM sizes), `scoring` (the data plane).
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING

from .. import catalog
from . import assets, deployments, endpoints, errors, kubernetes, lro, quotas, rollout, scoring
from .resources import ArmOperation, OnlineDeployment, OnlineEndpoint

if TYPE_CHECKING:
    from ..emulator import AzureEmulator

__all__ = ["ROUTES", "V2State", "advance", "stop_hosts"]


class V2State:
    """Everything v2 keeps, in one place so that reset() clears it at once."""

    def __init__(self) -> None:
        self.endpoints: dict[str, OnlineEndpoint] = {}
        self.deployments: dict[tuple[str, str], OnlineDeployment] = {}
        self.operations: dict[str, ArmOperation] = {}
        self.assets: dict[tuple[str, str, str], dict[str, object]] = {}  # (kind, name, version) → body
        self.quota: dict[str, int] = dict(catalog.MANAGED_QUOTA_DEFAULTS)
        self.names_taken_in_region: set[str] = set()  # endpoint names other workspaces in the region hold
        self.blob_metadata: dict[str, dict[str, str]] = {}  # "container/path" → x-ms-meta-* of the blob
        # AKS clusters made in AKS, with or without the AzureML extension (resource id, lower → cluster)
        self.k8s_clusters: dict[str, kubernetes.KubernetesCluster] = {}
        self._identities: dict[str, str] = {}

    def identity_of(self, endpoint: str) -> str:
        return self._identities.setdefault(endpoint, str(uuid.uuid4()))

    def deployments_of(self, endpoint: str) -> dict[str, OnlineDeployment]:
        return {d.name: d for (e, _), d in self.deployments.items() if e == endpoint}

    def quota_limit(self, family: str) -> int:
        return self.quota.get(family, catalog.MANAGED_QUOTA_DEFAULT_CORES)

    def cores_in_use(self, family: str, *, excluding: OnlineDeployment | None = None) -> int:
        used = 0
        for deployment in self.deployments.values():
            sku = catalog.managed_sku(deployment.instance_type)
            if deployment is excluding or deployment.is_kubernetes or sku is None or sku.family != family:
                continue
            if deployment.provisioning_state in ("Failed", "Canceled", "Deleting"):
                continue
            used += catalog.managed_cores_needed(sku, deployment.instance_count)
        return used

    def begin_deployment_delete(self, deployment: OnlineDeployment, operation_id: str) -> None:
        """The endpoint's delete takes its deployments with it; one still deploying ends Canceled."""
        running = self.operations.get(deployment.operation_id)
        if running is not None and deployment.provisioning_state in ("Creating", "Updating"):
            running.end("Canceled", errors.canceled())
        rollout.begin_delete(deployment, operation_id)

    def clear(self) -> None:
        self.__init__()  # type: ignore[misc]


def advance(emu: AzureEmulator) -> None:
    """Move every v2 resource whose step is due (called under the emulator's lock)."""
    now = time.monotonic()
    for ep in list(emu.v2.endpoints.values()):
        endpoints.finish_endpoint(emu, ep, now)
    rollout.advance_deployments(emu, now)
    for ep in list(emu.v2.endpoints.values()):
        if ep.provisioning_state == "Deleting" and ep.deadline <= now and not emu.v2.deployments_of(ep.name):
            del emu.v2.endpoints[ep.name]
            op = emu.v2.operations.get(ep.operation_id)
            if op is not None:
                op.end("Succeeded")


def stop_hosts(emu: AzureEmulator, wait: bool = False) -> None:
    for deployment in emu.v2.deployments.values():
        rollout.stop_hosts(deployment, wait=wait)


_WS = r"/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)" + (
    r"/providers/Microsoft\.MachineLearningServices/workspaces/(?P<ws>[^/]+)"
)
_EP = _WS + r"/onlineEndpoints/(?P<name>[^/]+)"
_DEP = _EP + r"/deployments/(?P<deployment>[^/]+)"
_LOC = r"/subscriptions/[^/]+/providers/Microsoft\.MachineLearningServices/locations/(?P<location>[^/]+)"

# (listener, method, pattern, handler, authenticated); registered ahead of v1's routes.
ROUTES = [
    ("tls", "GET", _LOC + r"/mfeOperationsStatus/(?P<id>[^/]+)", lro.operation_status, True),
    ("tls", "GET", _LOC + r"/mfeOperationResults/(?P<id>[^/]+)", lro.operation_result, True),
    ("tls", "GET", _LOC + r"/usages", quotas.usages, True),
    ("tls", "GET", _LOC + r"/vmSizes", quotas.vm_sizes, True),
    ("tls", "GET", _WS + r"/onlineEndpoints", endpoints.endpoint_list, True),
    ("tls", "PUT", _EP, endpoints.endpoint_put, True),
    ("tls", "PATCH", _EP, endpoints.endpoint_patch, True),
    ("tls", "GET", _EP, endpoints.endpoint_get, True),
    ("tls", "DELETE", _EP, endpoints.endpoint_delete, True),
    ("tls", "POST", _EP + r"/listKeys", endpoints.list_keys, True),
    ("tls", "POST", _EP + r"/regenerateKeys", endpoints.regenerate_keys, True),
    ("tls", "POST", _EP + r"/token", endpoints.get_token, True),
    ("tls", "GET", _EP + r"/deployments", deployments.deployment_list, True),
    ("tls", "PUT", _DEP, deployments.deployment_put, True),
    ("tls", "PATCH", _DEP, deployments.deployment_patch, True),
    ("tls", "GET", _DEP, deployments.deployment_get, True),
    ("tls", "DELETE", _DEP, deployments.deployment_delete, True),
    ("tls", "POST", _DEP + r"/getLogs", deployments.get_logs, True),
    ("tls", "GET", _DEP + r"/skus", deployments.skus, True),
    *assets.ROUTES,
    ("inference", "*", r"/score", scoring.score, False),
    # Kubernetes online endpoints: the extension's azureml-fe (the emulator's plain listener), key auth.
    ("plain", "*", r"/api/v1/endpoint/(?P<name>[^/]+)/score", kubernetes.score, False),
    ("plain", "GET", r"/api/v1/endpoint/(?P<name>[^/]+)/swagger\.json", kubernetes.swagger, False),
    ("inference", "GET", r"/swagger\.json", scoring.swagger, False),
]
