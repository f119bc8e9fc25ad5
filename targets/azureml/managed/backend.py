"""The registry's entry for Azure ML managed online endpoints, through azure-ai-ml (SDK v2): the default for a
new Azure deployment (no cluster to create, upgrade or certify; TLS always; billed per instance)."""

from __future__ import annotations

from deployments.backends.base import Backend, ClusterSpec, TargetTraits

from ..v2 import ManagedEndpointBackend

TRAITS = TargetTraits(
    label="Azure ML managed endpoints (v2)",
    poll_factor=5,
    makes_keys=True,
    reserves_port=False,
    on_this_host=False,
    priced_by_size=True,
    logs_on_page=False,
    autoscale=False,  # managed endpoints scale only through Azure Monitor autoscale settings, not the SDK
    gpus_per_node=True,
    removes_failed_clusters=False,  # nothing is created for a cluster
    missing_is_final=True,
    removes_abandoned_services=True,
    # Azure's own limits: a managed deployment may take up to its deployment timeout (~1 h with the image
    # build); Lynx follows it for longer (times LYNX_TIMEOUT_SCALE). Checking an instance type is one call.
    provision_timeout_s=600,
    deploy_timeout_s=5400,
    cluster_resource=False,
    billed_per_service=True,
    whole_vm_replicas=True,
    traffic_split=True,
)


def make_backend(cluster: ClusterSpec) -> Backend:
    if cluster.workspace is None:
        raise ValueError(f"Azure cluster {cluster.name} has no workspace")
    return ManagedEndpointBackend(cluster.workspace)
