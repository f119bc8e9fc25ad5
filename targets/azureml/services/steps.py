"""Steps of Azure operations: the workspace connection test, TLS on an AKS cluster."""

from __future__ import annotations

import re

from django.db import transaction
from django.utils import timezone

from deployments.backends import target_traits
from deployments.backends.base import BackendError
from deployments.models import Cluster, Operation, Workspace
from deployments.services.operations.steps import (
    StepResult,
    creep,
    fail,
    operation_cluster,
    operation_log,
    operation_workspace,
    overdue,
    poll,
    set_phase,
    succeed,
    timeout_s,
    workspace_checked,
)
from deployments.services.specs import backend_for, cluster_spec, workspace_spec
from deployments.states import ProvisioningState
from targets.azureml import v1 as azureml
from targets.azureml.services.workspaces import connection_problem
from targets.azureml.v1 import AzureMLBackend


def workspace_test_step(operation: Operation) -> StepResult:
    workspace = operation_workspace(operation)
    operation_log(
        operation,
        f"Signing in to tenant {workspace.tenant_id} as service principal {workspace.client_id} and reading "
        f"workspace {workspace.workspace_name} (resource group {workspace.resource_group})",
    )
    try:
        found = azureml.test_connection(workspace_spec(workspace))
    except BackendError as exc:
        raise BackendError(connection_problem(exc.message), transient=exc.transient) from exc
    location = re.search(r"\((?P<location>[a-z0-9]+)\)\.?$", found)
    with transaction.atomic():
        if location and not workspace.location:
            Workspace.objects.filter(pk=workspace.pk).update(location=location["location"])
        workspace_checked(workspace, ok=True, result=found)
        succeed(operation, f"Succeeded: {found}")
    return None


def workspace_test_failed(operation: Operation, error: str) -> None:
    """A connection test that failed records why on the workspace's page."""
    workspace_checked(operation_workspace(operation), ok=False, result=error)


# --- TLS on an AKS cluster ---------------------------------------------------------------------------


def cluster_tls_step(operation: Operation) -> StepResult:
    """Enable TLS or renew the certificate (`AksCompute.update`), then follow the compute until it has
    Succeeded again."""
    cluster = operation_cluster(operation)
    backend = backend_for(cluster)
    if not isinstance(backend, AzureMLBackend):
        return fail(operation, f"{cluster.name} is not an Azure cluster.")
    spec = cluster_spec(cluster)
    renew = bool(operation.params.get("renew"))
    if operation.phase == "submit":
        what = "Renewing Microsoft's certificate of" if renew else "Enabling TLS on"
        operation_log(operation, f"{what} {cluster.name} ({cluster.tls_mode})")
        backend.enable_tls(spec, renew=renew)
        set_phase(operation, "wait", 20)
        return poll()
    observed = backend.observe_cluster(spec)
    if observed.provisioning_state == ProvisioningState.SUCCEEDED:
        with transaction.atomic():
            Cluster.objects.filter(pk=cluster.pk).update(tls_updated_at=timezone.now())
            succeed(operation, f"Succeeded: TLS is {'renewed' if renew else 'enabled'} on {cluster.name}")
        return None
    if observed.provisioning_state in (ProvisioningState.FAILED, "Canceled"):
        ended = f"the update ended {observed.provisioning_state}"
        return fail(operation, "; ".join(observed.errors) or ended)
    if overdue(operation, timeout_s(target_traits(cluster.backend).provision_timeout_s)):
        return fail(operation, "the TLS update did not finish in time")
    operation_log(operation, f"{observed.provisioning_state}..")
    set_phase(operation, "wait", creep(operation))
    return poll() * target_traits(cluster.backend).poll_factor
