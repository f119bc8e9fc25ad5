"""The backend's AKS compute targets: create or attach, observe, delete or detach."""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

from deployments.backends.base import BackendError, ClusterObservation, ClusterSpec, WorkspaceSpec
from deployments.vm_sizes import validate_aks_cluster, vm_size_info

from .errors import _azure, _format_errors, _not_found
from .workspace import _workspace


class ClusterOperations:
    """AzureMLBackend's cluster calls, and the workspace and compute lookups its service calls share."""

    workspace_spec: WorkspaceSpec

    def _ws(self, cluster: ClusterSpec | None = None) -> Any:
        return _workspace(
            (cluster.workspace if cluster and cluster.workspace else None) or self.workspace_spec
        )

    def _get_compute(self, cluster: ClusterSpec) -> Any | None:
        from azureml.core.compute import ComputeTarget
        from azureml.exceptions import ComputeTargetException

        ws = self._ws(cluster)
        with _azure(f"Reading cluster {cluster.name!r}"):
            try:
                return ComputeTarget(ws, cluster.name)
            except ComputeTargetException as exc:
                if _not_found(exc):
                    return None
                raise

    # --- clusters --------------------------------------------------------------------------------------

    def provision_cluster(self, cluster: ClusterSpec) -> None:
        from azureml.core.compute import AksCompute, ComputeTarget

        if self._get_compute(cluster) is not None:
            return  # already created (or being created): a re-delivered task must not create twice
        ws = self._ws(cluster)
        if cluster.attach_resource_id:
            config = AksCompute.attach_configuration(
                resource_id=cluster.attach_resource_id, cluster_purpose=cluster.cluster_purpose or None
            )
            with _azure(f"Attaching AKS cluster {cluster.attach_resource_id!r} as {cluster.name!r}"):
                ComputeTarget.attach(ws, cluster.name, config)
            return
        problems = validate_aks_cluster(
            cluster.vm_size, cluster.node_count, cluster.cluster_purpose, dt.date.today()
        )
        if vm_size_info(cluster.vm_size) is None:  # Azure knows more sizes than Lynx: let Azure decide
            problems = [p for p in problems if not p.startswith("Unknown VM size")]
        if problems:
            raise BackendError(" ".join(problems))
        with _azure(f"Creating AKS cluster {cluster.name!r}"):
            config = AksCompute.provisioning_configuration(
                agent_count=cluster.node_count,
                vm_size=cluster.vm_size,
                cluster_purpose=cluster.cluster_purpose,
                location=cluster.location or None,
            )
            ComputeTarget.create(ws, cluster.name, config)

    def cluster_facts(self, cluster: ClusterSpec, observed: ClusterObservation) -> dict[str, Any]:
        return aks_cluster_facts(cluster, observed)

    def observe_cluster(self, cluster: ClusterSpec) -> ClusterObservation:
        compute = self._get_compute(cluster)
        if compute is None:
            return ClusterObservation(provisioning_state="Deleted")
        if compute.type != "AKS":
            return ClusterObservation(
                provisioning_state=compute.provisioning_state or "Unknown",
                detail=f"{cluster.name} is a {compute.type} compute target, not AKS.",
            )
        info = vm_size_info(compute.agent_vm_size or "")
        nodes = compute.agent_count or 0
        # Kubernetes schedules an A10 partition as one whole nvidia.com/gpu per node.
        per_node = math.ceil(info.gpu_count) if info else 0
        detail = (
            f"{nodes} × {compute.agent_vm_size} ({compute.cluster_purpose}) in {compute.cluster_location}"
        )
        if compute.cluster_fqdn:
            detail += f", {compute.cluster_fqdn}"
        return ClusterObservation(
            provisioning_state=compute.provisioning_state or "Unknown",
            gpu_count=per_node * nodes,
            gpu_kind=info.gpu_kind if info else "",
            errors=_format_errors(compute.provisioning_errors),
            detail=detail,
        )

    def delete_cluster(self, cluster: ClusterSpec) -> None:
        compute = self._get_compute(cluster)
        if compute is None or compute.provisioning_state == "Deleting":
            return
        with _azure(f"Deleting cluster {cluster.name!r}"):
            if compute.is_attached or cluster.attach_resource_id:
                compute.detach()  # an attached cluster belongs to someone else: only let go of it
            else:
                compute.delete()


# ClusterObservation.detail of an AKS compute: "2 × Standard_NC4as_T4_v3 (DevTest) in eastus[, fqdn]".
_AKS_DETAIL = re.compile(r"^(?P<nodes>\d+) × (?P<vm_size>\S+) \((?P<purpose>\w*)\) in (?P<location>[^,\s]*)")


def aks_cluster_facts(cluster: ClusterSpec, observed: ClusterObservation) -> dict[str, Any]:
    """What a Succeeded AKS cluster row records: GPUs *per node* from its VM size (the deploy form's GPU check
    reads them), and, for an attached cluster, the size, node count and region Azure reports."""
    facts: dict[str, Any] = {}
    match = _AKS_DETAIL.match(observed.detail or "")
    nodes = cluster.node_count
    vm_size = cluster.vm_size
    if match:
        nodes, vm_size = int(match["nodes"]), match["vm_size"]
        if cluster.attach_resource_id:  # Lynx did not choose these: take Azure's word for them
            facts.update(vm_size=vm_size, node_count=nodes, location=match["location"] or cluster.location)
    info = vm_size_info(vm_size)
    if info is not None:
        facts.update(gpu_count=info.gpu_count, gpu_kind=info.gpu_kind)
    else:  # a size Lynx does not know: what Azure's observation says, shared out per node
        facts.update(gpu_count=observed.gpu_count / max(nodes, 1), gpu_kind=observed.gpu_kind)
    return facts
