"""The Azure ML target's entry in the registry: azureml-core (SDK v1) today."""

from __future__ import annotations

from deployments.backends.base import Backend, ClusterSpec, TargetTraits

from .v1 import AzureMLBackend

TRAITS = TargetTraits(
    label="Azure ML v1 (AKS)",
    poll_factor=5,
    makes_keys=True,
    reserves_port=False,
    on_this_host=False,
    priced_by_size=True,
    logs_on_page=False,
    autoscale=True,
    gpus_per_node=True,
    removes_failed_clusters=True,
    missing_is_final=True,
    removes_abandoned_services=True,
    # Azure's own limits (docs/shared reference azure-2026.md, 1.2): creating an AKS cluster takes ~10 min
    # or more, and MMS gives a deployment 20 min before DeploymentTimedOut. Lynx follows both for longer.
    provision_timeout_s=1800,
    deploy_timeout_s=1800,
)


def make_backend(cluster: ClusterSpec) -> Backend:
    if cluster.workspace is None:
        raise ValueError(f"Azure cluster {cluster.name} has no workspace")
    return AzureMLBackend(cluster.workspace)
