"""The test and control API: armed faults, resources made behind Lynx's back, request counts, reset.

Mixed into `AzureEmulator`; the same knobs answer `POST /_emulator/<action>` on the plain listener.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from . import lifecycle
from .http import Request, Response
from .state import Compute, ExternalAks, Injection, iso_now
from .v2 import kubernetes, rollout


class ControlAPI:
    """Python methods for tests, and `_control` for the same actions over HTTP."""

    def fail_cluster_create_with_quota(
        self, name: str = "*", family: str = "standardNCASv3_T4 Family Cores"
    ) -> None:
        with self.faults.lock:
            self.faults.quota[name] = family

    def fail_cluster_provisioning(
        self,
        name: str = "*",
        code: str = "ClusterCreationFailed",
        message: str = "AKS cluster creation failed.",
    ) -> None:
        with self.faults.lock:
            self.faults.cluster_failures[name] = {"code": code, "message": message}

    def make_deployment_unschedulable(
        self, name: str = "*", message: str = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    ) -> None:
        with self.faults.lock:
            self.faults.unschedulable[name] = message

    def inject(
        self,
        method: str,
        path_regex: str,
        status: int,
        body: Any = None,
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next `times` matching requests with `status`/`body` instead of handling them."""
        if body is None:
            body = {
                "error": {
                    "code": {
                        409: "Conflict",
                        429: "TooManyRequests",
                        500: "InternalServerError",
                        503: "ServiceUnavailable",
                    }.get(status, "Error"),
                    "message": f"Injected HTTP {status} from the Lynx Azure emulator.",
                }
            }
        with self.faults.lock:
            self.faults.injections.append(
                Injection(method.upper(), re.compile(path_regex), status, body, times, headers or {})
            )

    def expire_client_secret(self, expired: bool = True) -> None:
        self.faults.secret_expired = expired

    def deny_access(self, denied: bool = True) -> None:
        self.faults.deny_access = denied

    def create_cluster_directly(
        self,
        name: str,
        vm_size: str = "Standard_NC4as_T4_v3",
        agent_count: int = 1,
        cluster_purpose: str = "DevTest",
        state: str = "Succeeded",
        compute_type: str = "AKS",
        properties_null: bool = False,
    ) -> None:
        """Someone created a compute in the portal, behind Lynx's back.

        `compute_type` "AKS" (an AKS cluster Azure ML made), "AmlCompute" (a training cluster of up to
        `agent_count` nodes), "ComputeInstance" (one VM) or "Kubernetes" (a v2 attached cluster), each in the
        RP's shape for that type; `properties_null` answers `properties.properties: null`, as the RP does for
        a compute it cannot describe, e.g. a Failed one (the SDK itself cannot read that for a Succeeded
        AmlCompute or any Kubernetes compute, so a real workspace does not answer it there).
        """
        with self._lock:
            aks = compute_type == "AKS"
            compute = Compute(
                name=name,
                location=self.location,
                vm_size=vm_size,
                agent_count=agent_count,
                cluster_purpose=cluster_purpose,
                is_attached=compute_type == "Kubernetes",
                created_on=iso_now(),
                resource_id=f"/subscriptions/{self.subscription_id}/resourcegroups/{self.resource_group}"
                f"/providers/Microsoft.ContainerService/managedClusters/{name}"
                if aks or compute_type == "Kubernetes"
                else None,
                compute_type=compute_type,
                kubernetes_version=self.default_kubernetes_version if aks else None,
                properties_null=properties_null,
            )
            compute.provisioning_state = state
            self.computes[name] = compute

    def register_external_aks(
        self,
        resource_id: str,
        vm_size: str,
        agent_count: int,
        kubernetes_version: str = "1.32.6",
        load_balancer_sku: str = "standard",
    ) -> None:
        """An AKS cluster that exists in the subscription (made in AKS itself), so that it can be attached."""
        self.external_aks[resource_id.lower()] = ExternalAks(
            resource_id, vm_size, agent_count, kubernetes_version, load_balancer_sku, self.location
        )

    def cancel_cluster_create(self, name: str = "*") -> None:
        """The next create of `name` (or of any compute) ends Canceled, as when it is canceled in Azure."""
        with self.faults.lock:
            self.faults.cluster_failures[name] = {
                "status": "Canceled",
                "code": "OperationCanceled",
                "message": "The operation was canceled.",
            }

    def count(self, method: str, path_regex: str) -> int:
        pattern = re.compile(path_regex)
        return sum(1 for m, _h, p, _s in self.requests if m == method and pattern.search(p))

    def crash_service_host(self, name: str) -> None:
        """The service's container dies (OOMKilled, a segfault): a Healthy service turns Unhealthy."""
        with self._lock:
            svc = self.services[name]
            for host in (svc.host, svc.new_host):
                if host is not None:
                    host.kill()

    def cancel_service_operation(self, name: str) -> None:
        """The service's create or update is cancelled: its MMS operation ends Cancelled."""
        with self._lock:
            lifecycle.cancel(self, self.services[name])

    # --- Azure ML v2 (managed online endpoints) ---------------------------------------------------------

    def cancel_online_deployment(self, endpoint: str, name: str) -> None:
        """The deployment's create or update is canceled now: its ARM operation and it end Canceled."""
        with self._lock:
            rollout.cancel(self, self.v2.deployments[(endpoint, name)])

    def set_managed_quota(self, family: str, cores: int) -> None:
        """The subscription's dedicated cores for one VM family (e.g. "standardDSv2Family") in this region."""
        self.v2.quota[family] = cores

    def take_endpoint_name(self, name: str) -> None:
        """Another workspace in the region holds this endpoint name (names are unique per region)."""
        self.v2.names_taken_in_region.add(name.lower())

    def create_aks_for_kubernetes_compute(
        self,
        name: str,
        vm_size: str = "Standard_D4s_v5",
        node_count: int = 3,
        extension: bool = True,
        instance_types: dict[str, dict[str, Any]] | None = None,
        resource_group: str | None = None,
        kubernetes_version: str = "1.32.6",
    ) -> str:
        """An AKS cluster made in AKS (`vm_size` × `node_count`), with the AzureML extension
        (`Microsoft.AzureML.Kubernetes`, inference enabled) or without; returns its ARM resource id.

        `instance_types`: the extension's InstanceType CRDs, name → {"requests": {"cpu", "memory"},
        "limits": {"cpu", "memory", "nvidia.com/gpu"}, "nodeSelector": …} (or {"resources": {…}}, the CRD's
        spec); `defaultinstancetype` exists unless one of that name overrides it. Raises ValueError for a
        size AKS does not offer or a CRD the extension's validation refuses.
        """
        with self._lock:
            cluster = kubernetes.new_cluster(
                self,
                name,
                vm_size=vm_size,
                node_count=node_count,
                extension=extension,
                instance_types=instance_types,
                resource_group=resource_group,
            )
            self.v2.k8s_clusters[cluster.resource_id.lower()] = cluster
            # ARM's GET …/managedClusters/{name} answers it, and v1 can attach it as an AKS compute too.
            self.register_external_aks(cluster.resource_id, cluster.vm_size, node_count, kubernetes_version)
            return cluster.resource_id

    def reset(self) -> None:
        with self._lock:
            self.faults.clear()
            self.stop_hosts()
            self.images.clear()
            for table in (
                self.computes,
                self.services,
                self.operations,
                self.assets,
                self.artifacts,
                self.blobs,
            ):
                table.clear()
            self.models.clear()
            self.v2.clear()
            self.requests.clear()
            self.unknown_requests.clear()

    def _control(self, req: Request) -> Response:
        """POST /_emulator/<action> with a JSON body: the same knobs as the Python methods."""
        action = req.path.removeprefix("/_emulator/").strip("/")
        body = req.json() if req.body else {}
        actions: dict[str, Callable[..., Any]] = {
            "quota": self.fail_cluster_create_with_quota,
            "cluster-failure": self.fail_cluster_provisioning,
            "unschedulable": self.make_deployment_unschedulable,
            "inject": self.inject,
            "expire-secret": self.expire_client_secret,
            "deny-access": self.deny_access,
            "cluster": self.create_cluster_directly,
            "external-aks": self.register_external_aks,
            "cancel-cluster": self.cancel_cluster_create,
            "crash-host": self.crash_service_host,
            "cancel-service": self.cancel_service_operation,
            "cancel-online-deployment": self.cancel_online_deployment,
            "managed-quota": self.set_managed_quota,
            "take-endpoint-name": self.take_endpoint_name,
            "kubernetes-cluster": self.create_aks_for_kubernetes_compute,
            "reset": self.reset,
        }
        if action == "state" and req.method == "GET":
            return Response(
                200,
                {
                    "computes": {n: c.provisioning_state for n, c in self.computes.items()},
                    "services": {n: s.state for n, s in self.services.items()},
                    "models": [m.id for m in self.models],
                    "unknown_requests": self.unknown_requests,
                },
            )
        if req.method != "POST" or action not in actions:
            return Response(
                404, {"message": f"unknown control action {action!r}", "actions": sorted(actions)}
            )
        try:
            actions[action](**body)
        except TypeError as exc:
            return Response(400, {"message": str(exc)})
        return Response(200, {"ok": True})
