"""The registry's entry for Azure ML Kubernetes online endpoints (SDK v2) on an AKS cluster a team keeps and
attaches (with the Azure ML extension): the v2 home of what ran on v1 AKS web services."""

from __future__ import annotations

from deployments.backends.base import Backend, ClusterSpec, TargetTraits

from ..v2.kubernetes import KubernetesEndpointBackend

TRAITS = TargetTraits(
    label="Azure ML Kubernetes endpoints (v2)",
    poll_factor=5,
    makes_keys=True,
    reserves_port=False,
    on_this_host=False,
    priced_by_size=True,  # the AKS nodes when their size is known; an attached cluster bills its owner anyway
    logs_on_page=False,
    autoscale=True,  # TargetUtilizationScaleSettings
    gpus_per_node=True,
    removes_failed_clusters=True,  # a failed attach is detached
    missing_is_final=True,
    removes_abandoned_services=True,
    # Attaching takes minutes; a Kubernetes deployment has the extension's 20-minute in-cluster limit plus the
    # image build. Lynx follows both for longer (times LYNX_TIMEOUT_SCALE).
    provision_timeout_s=1800,
    deploy_timeout_s=3600,
    traffic_split=True,
)


def make_backend(cluster: ClusterSpec) -> Backend:
    if cluster.workspace is None:
        raise ValueError(f"Azure cluster {cluster.name} has no workspace")
    return KubernetesEndpointBackend(cluster.workspace)
