"""Steps of workspace operations: the connection test."""

from __future__ import annotations

import re

from django.db import transaction

from deployments.backends.base import BackendError
from deployments.models import Operation, Workspace
from deployments.services.operations.steps import (
    StepResult,
    operation_log,
    operation_workspace,
    succeed,
    workspace_checked,
)
from deployments.services.specs import workspace_spec
from targets.azureml import v1 as azureml
from targets.azureml.services.workspaces import connection_problem


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
