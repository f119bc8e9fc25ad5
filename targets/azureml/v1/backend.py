"""`AzureMLBackend`: the cluster and web service calls, bound to one workspace."""

from __future__ import annotations

from deployments.backends.base import WorkspaceSpec

from .services import ServiceOperations


class AzureMLBackend(ServiceOperations):
    """Backend for Azure ML AKS compute and AKS web services, signed in as a service principal."""

    name = "azureml"

    def __init__(self, workspace: WorkspaceSpec) -> None:
        self.workspace_spec = workspace
