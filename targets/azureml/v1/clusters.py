"""The backend's AKS compute targets: create or attach, observe, delete or detach."""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from deployments.backends.base import BackendError, ClusterObservation, ClusterSpec, WorkspaceSpec
from deployments.vm_sizes import compute_name_problem, validate_aks_cluster, vm_size_info

from .errors import _azure, _format_errors, _not_found
from .workspace import _workspace

log = logging.getLogger(__name__)
# ARM's API version for reading an AKS resource (Microsoft.ContainerService/managedClusters).
AKS_ARM_API_VERSION = "2024-09-01"
INTERNAL_LOAD_BALANCER = "InternalLoadBalancer"


def tls_problem(cluster: ClusterSpec) -> str:
    """Why this TLS request cannot work ("" when it can): Azure's own rules for enable_ssl."""
    if cluster.tls_mode == "leaf" and not cluster.tls_leaf_domain_label:
        return "TLS with Microsoft's certificate needs a leaf domain label."
    own_certificate = cluster.tls_cname and cluster.tls_certificate and cluster.tls_key
    if cluster.tls_mode == "custom" and not own_certificate:
        return "TLS with your own certificate needs the CNAME, the certificate and its key."
    if cluster.internal_load_balancer and cluster.tls_mode == "leaf":
        return (
            "An internal load balancer has no public name for Microsoft's certificate: TLS on it needs your "
            "own certificate and CNAME."
        )
    return ""


@contextmanager
def _ssl_files(cluster: ClusterSpec) -> Iterator[tuple[str, str]]:
    """The certificate and key as the PEM files the SDK reads, for as long as the call takes."""
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cert.write_text(cluster.tls_certificate)
        key.touch(mode=0o600)
        key.write_text(cluster.tls_key)
        yield str(cert), str(key)


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
        if problem := compute_name_problem(cluster.name) or tls_problem(cluster):
            raise BackendError(problem)
        ws = self._ws(cluster)
        load_balancer = INTERNAL_LOAD_BALANCER if cluster.internal_load_balancer else None
        if cluster.attach_resource_id:
            config = AksCompute.attach_configuration(
                resource_id=cluster.attach_resource_id,
                cluster_purpose=cluster.cluster_purpose or None,
                load_balancer_type=load_balancer,
            )
            with _azure(f"Attaching AKS cluster {cluster.attach_resource_id!r} as {cluster.name!r}"):
                self._submit_with_ssl(config, cluster, lambda: ComputeTarget.attach(ws, cluster.name, config))
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
                load_balancer_type=load_balancer,
            )
            self._submit_with_ssl(config, cluster, lambda: ComputeTarget.create(ws, cluster.name, config))

    @staticmethod
    def _submit_with_ssl(config: Any, cluster: ClusterSpec, submit: Any) -> None:
        """Enable TLS on the configuration (when asked) and submit it while its PEM files exist."""
        if cluster.tls_mode == "custom":
            with _ssl_files(cluster) as (cert, key):
                config.enable_ssl(ssl_cname=cluster.tls_cname, ssl_cert_pem_file=cert, ssl_key_pem_file=key)
                submit()
            return
        if cluster.tls_mode == "leaf":
            config.enable_ssl(leaf_domain_label=cluster.tls_leaf_domain_label)
        submit()

    def enable_tls(self, cluster: ClusterSpec, *, renew: bool = False) -> None:
        """Enable TLS on an existing cluster, or renew Microsoft's certificate (`AksCompute.update`).

        v1's automatic renewal of Microsoft-generated certificates no longer works (v1 is deprecated): a leaf
        domain certificate is renewed by hand, with renew=True (Azure takes about 5 hours to roll it out).
        """
        from azureml.core.compute.aks import AksUpdateConfiguration, SslConfiguration

        if problem := tls_problem(cluster) or ("" if cluster.tls_mode else "Choose how to enable TLS."):
            raise BackendError(problem)
        compute = self._get_compute(cluster)
        if compute is None:
            raise BackendError(f"Cluster {cluster.name!r} does not exist in the workspace.")
        if cluster.tls_mode == "leaf":
            # "Auto": Microsoft's certificate for the leaf label ("Enabled" means one's own certificate).
            ssl = SslConfiguration(
                status="Auto", leaf_domain_label=cluster.tls_leaf_domain_label, renew=renew
            )
        else:
            ssl = SslConfiguration(
                status="Enabled", cert=cluster.tls_certificate, key=cluster.tls_key, cname=cluster.tls_cname
            )
        action = "Renewing the certificate of" if renew else "Enabling TLS on"
        with _azure(f"{action} cluster {cluster.name!r}"):
            compute.update(AksUpdateConfiguration(ssl_configuration=ssl))

    def kubernetes_version(self, cluster: ClusterSpec) -> str:
        """The AKS cluster's Kubernetes version, from ARM (`properties.kubernetesVersion`); "" if unreadable.

        Azure ML's compute target does not report it, so this reads the AKS resource itself with the
        workspace's credentials (Workspace._auth: private, but azureml-core is frozen since 30 June 2026).
        """
        import requests

        compute = self._get_compute(cluster)
        resource_id = cluster.attach_resource_id or getattr(compute, "cluster_resource_id", None) or ""
        if not resource_id:
            return ""
        auth = self._ws(cluster)._auth
        url = f"{auth._get_arm_end_point().rstrip('/')}{resource_id}"
        try:
            response = requests.get(
                url,
                params={"api-version": AKS_ARM_API_VERSION},
                headers=auth.get_authentication_header(),
                timeout=30,
            )
            response.raise_for_status()
            return str((response.json().get("properties") or {}).get("kubernetesVersion") or "")
        except (requests.RequestException, ValueError) as exc:
            # Only a fact for the page: a cluster that is ready is not failed over it.
            log.warning("reading the Kubernetes version of %s: %s", cluster.name, exc)
            return ""

    def cluster_facts(self, cluster: ClusterSpec, observed: ClusterObservation) -> dict[str, Any]:
        facts = aks_cluster_facts(cluster, observed)
        return {**facts, "kubernetes_version": self.kubernetes_version(cluster)}

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
