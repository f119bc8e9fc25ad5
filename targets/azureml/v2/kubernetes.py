"""`KubernetesEndpointBackend`: Azure ML v2 Kubernetes online endpoints on an AKS cluster a team keeps.

A Lynx cluster of this target is an AKS cluster that has the Azure ML extension
(`Microsoft.AzureML.Kubernetes` with inference enabled), attached to the workspace as a `KubernetesCompute` in
the namespace `lynx` (never `azureml-<workspace>`, which v1 uses: the same cluster can serve both while
services move). Deployments are `KubernetesOnlineEndpoint`s with one `KubernetesOnlineDeployment` per
revision, staged and split like managed endpoints (`managed.py`): what differs is the cluster (attached and
detached, never created or deleted), the instance type (the cluster's own: one with a GPU limit for a GPU
deployment, else its default), the pods' resources and TargetUtilization autoscale. The extension and the
instance types are made outside Azure ML's API (`az k8s-extension create`, `kubectl apply` of `InstanceType`
resources): Lynx reads them, never makes them.
"""

from __future__ import annotations

from typing import Any

from deployments.backends.base import BackendError, ClusterObservation, ClusterSpec, ServiceSpec

from .client import arm_base, arm_get
from .errors import azure_v2, not_found
from .managed import ManagedEndpointBackend

AKS_API_VERSION = "2024-09-01"

NAMESPACE = "lynx"
DEFAULT_INSTANCE_TYPE = "defaultinstancetype"
GPU = "nvidia.com/gpu"


def _gpus(instance_type: dict[str, Any]) -> int:
    limits = (instance_type.get("resources") or {}).get("limits") or {}
    try:
        return int(float(limits.get(GPU) or 0))
    except (TypeError, ValueError):
        return 0


class KubernetesEndpointBackend(ManagedEndpointBackend):
    """Kubernetes online endpoints on attached AKS clusters, in one workspace."""

    name = "azureml_k8s"

    # --- clusters: attach and detach ---------------------------------------------------------------------

    def _compute(self, cluster: ClusterSpec) -> Any | None:
        try:
            with azure_v2(f"Reading compute {cluster.name!r}"):
                return self.ml.compute.get(cluster.name)
        except BackendError as exc:
            if not_found(exc.__cause__ or exc):
                return None
            raise

    def provision_cluster(self, cluster: ClusterSpec) -> None:
        from azure.ai.ml.entities import KubernetesCompute

        if not cluster.attach_resource_id:
            raise BackendError(
                "Kubernetes online endpoints run on an AKS cluster you attach: give its resource ID."
            )
        if self._compute(cluster) is not None:
            return  # attached already (a step taken over after its worker died)
        compute = KubernetesCompute(
            name=cluster.name, resource_id=cluster.attach_resource_id, namespace=NAMESPACE
        )
        with azure_v2(f"Attaching {cluster.name!r} as Kubernetes compute"):
            self.ml.compute.begin_attach(compute)

    @staticmethod
    def _instance_types(compute: Any) -> dict[str, dict[str, Any]]:
        properties = getattr(compute, "properties", None) or {}
        types = properties.get("instance_types") or properties.get("instanceTypes") or {}
        return {str(name): dict(value or {}) for name, value in types.items()}

    def observe_cluster(self, cluster: ClusterSpec) -> ClusterObservation:
        compute = self._compute(cluster)
        if compute is None:
            return ClusterObservation(provisioning_state="Deleted")
        gpus = max((_gpus(t) for t in self._instance_types(compute).values()), default=0)
        errors = (str(compute.provisioning_errors),) if getattr(compute, "provisioning_errors", None) else ()
        return ClusterObservation(
            provisioning_state=compute.provisioning_state or "Unknown",
            gpu_count=gpus,
            gpu_kind="NVIDIA GPU (instance type)" if gpus else "",
            errors=errors,
        )

    def cluster_facts(self, cluster: ClusterSpec, observed: ClusterObservation) -> dict[str, Any]:
        """GPUs from the instance types; the nodes' size and count and the Kubernetes version from the AKS
        resource itself (what the cluster bills), when the principal may read it."""
        facts: dict[str, Any] = {"gpu_count": observed.gpu_count, "gpu_kind": observed.gpu_kind}
        base = arm_base(self.workspace).rstrip("/")
        url = f"{base}{cluster.attach_resource_id}?api-version={AKS_API_VERSION}"
        try:
            aks = arm_get(self.workspace, url).get("properties") or {}
        except BackendError:
            return facts  # only facts for the pages: an attached cluster is not failed over them
        pools = [p for p in aks.get("agentPoolProfiles") or [] if p.get("vmSize")]
        if pools:
            largest = max(pools, key=lambda p: int(p.get("count") or 0))
            facts.update(vm_size=largest["vmSize"], node_count=sum(int(p.get("count") or 0) for p in pools))
        if version := aks.get("currentKubernetesVersion") or aks.get("kubernetesVersion"):
            facts["kubernetes_version"] = str(version)
        return facts

    def delete_cluster(self, cluster: ClusterSpec) -> None:
        """Detach: the AKS cluster, its extension and its instance types stay, as they came."""
        if self._compute(cluster) is None:
            return
        with azure_v2(f"Detaching {cluster.name!r}"):
            self.ml.compute.begin_delete(cluster.name, action="Detach")

    # --- endpoints and deployments ----------------------------------------------------------------------

    def _check(self, spec: ServiceSpec) -> None:
        super()._check(spec)
        self._instance_type(spec)

    def _instance_type(self, spec: ServiceSpec) -> str:
        """The cluster's instance type for this deployment: for a GPU deployment the one with the fewest GPUs
        that still gives it enough; otherwise the cluster's default."""
        compute = self._compute(spec.cluster)
        if compute is None:
            raise BackendError(f"{spec.cluster.name} is not attached to the workspace any more.")
        types = self._instance_types(compute)
        if not spec.gpu_enabled:
            properties = getattr(compute, "properties", None) or {}
            return str(properties.get("default_instance_type") or DEFAULT_INSTANCE_TYPE)
        wanted = max(spec.gpu_cores, 1)
        fitting = sorted((_gpus(t), name) for name, t in types.items() if _gpus(t) >= wanted)
        if not fitting:
            raise BackendError(
                f"{spec.cluster.name} has no instance type with {wanted} GPU(s): a cluster admin makes one "
                "with kubectl (an InstanceType whose limits include nvidia.com/gpu), then deploy again."
            )
        return fitting[0][1]

    def _new_endpoint(self, spec: ServiceSpec) -> Any:
        from azure.ai.ml.entities import KubernetesOnlineEndpoint

        return KubernetesOnlineEndpoint(
            name=spec.name,
            compute=spec.cluster.name,
            auth_mode="aml_token" if spec.token_auth_enabled else "key",
            description=f"Lynx deployment {spec.name}",
            tags={"created_by": "lynx"},
        )

    def _new_deployment(self, spec: ServiceSpec, **common: Any) -> Any:
        from azure.ai.ml.entities import (
            KubernetesOnlineDeployment,
            ResourceRequirementsSettings,
            ResourceSettings,
            TargetUtilizationScaleSettings,
        )

        scale: dict[str, Any] = {"instance_count": spec.replicas}
        if spec.autoscale_enabled:
            scale = {
                "instance_count": spec.autoscale_min_replicas,
                "scale_settings": TargetUtilizationScaleSettings(
                    min_instances=spec.autoscale_min_replicas,
                    max_instances=spec.autoscale_max_replicas,
                    target_utilization_percentage=spec.autoscale_target_utilization,
                ),
            }
        resources = ResourceRequirementsSettings(
            requests=ResourceSettings(cpu=f"{spec.cpu_cores:g}", memory=f"{spec.memory_gb:g}Gi"),
            # GPUs only as a limit, as Kubernetes takes them.
            limits=ResourceSettings(gpu=str(max(spec.gpu_cores, 1))) if spec.gpu_enabled else None,
        )
        return KubernetesOnlineDeployment(
            instance_type=self._instance_type(spec), resources=resources, **scale, **common
        )
