"""The Azure ML target's entry in the registry: azureml-core (SDK v1) today."""

from __future__ import annotations

from deployments.backends.base import Backend, ClusterSpec

from .v1 import AzureMLBackend


def make_backend(cluster: ClusterSpec) -> Backend:
    if cluster.workspace is None:
        raise ValueError(f"Azure cluster {cluster.name} has no workspace")
    return AzureMLBackend(cluster.workspace)
