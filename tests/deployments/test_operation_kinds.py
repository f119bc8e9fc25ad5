"""Each operation kind owns its steps and what its failure does; a target registers its own kinds."""

from __future__ import annotations

from deployments.models import OperationKind
from deployments.services.operations import HANDLERS
from deployments.services.operations.steps import FAILURE_HANDLERS


def test_every_kind_has_a_step():
    assert set(HANDLERS) == set(OperationKind.values)


def test_kinds_that_change_a_resource_fail_it_and_reads_leave_it_as_it_was():
    assert set(FAILURE_HANDLERS) == {
        OperationKind.CLUSTER_PROVISION,
        OperationKind.CLUSTER_DELETE,
        OperationKind.SERVICE_DEPLOY,
        OperationKind.SERVICE_UPDATE,
        OperationKind.SERVICE_DELETE,
        OperationKind.WORKSPACE_TEST,  # registered by targets.azureml's AppConfig
    }
