"""The state machines, as data. Only `deployments.services.transitions` moves a row along them.

States use Azure's words: a compute target's `provisioning_state` and a web service's `state`.
"""

from __future__ import annotations

from django.db import models


class ProvisioningState(models.TextChoices):
    CREATING = "Creating"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    DELETING = "Deleting"
    DELETED = "Deleted"


class ServiceState(models.TextChoices):
    TRANSITIONING = "Transitioning"
    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"
    FAILED = "Failed"
    DELETING = "Deleting"
    DELETED = "Deleted"


class OperationState(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


CLUSTER_TRANSITIONS: dict[str, frozenset[str]] = {
    ProvisioningState.CREATING: frozenset({ProvisioningState.SUCCEEDED, ProvisioningState.FAILED}),
    ProvisioningState.SUCCEEDED: frozenset({ProvisioningState.DELETING}),
    ProvisioningState.FAILED: frozenset({ProvisioningState.DELETING}),
    ProvisioningState.DELETING: frozenset({ProvisioningState.DELETED, ProvisioningState.FAILED}),
    ProvisioningState.DELETED: frozenset(),
}

SERVICE_TRANSITIONS: dict[str, frozenset[str]] = {
    ServiceState.TRANSITIONING: frozenset(
        {ServiceState.HEALTHY, ServiceState.UNHEALTHY, ServiceState.FAILED, ServiceState.DELETING}
    ),
    ServiceState.HEALTHY: frozenset(
        {ServiceState.UNHEALTHY, ServiceState.TRANSITIONING, ServiceState.DELETING}
    ),
    # Unhealthy → Failed: the reconciler restarted it MAX_RESTARTS times in a row and it stayed down.
    ServiceState.UNHEALTHY: frozenset(
        {ServiceState.HEALTHY, ServiceState.TRANSITIONING, ServiceState.FAILED, ServiceState.DELETING}
    ),
    ServiceState.FAILED: frozenset({ServiceState.TRANSITIONING, ServiceState.DELETING}),
    ServiceState.DELETING: frozenset({ServiceState.DELETED, ServiceState.FAILED}),
    ServiceState.DELETED: frozenset(),
}

OPERATION_TRANSITIONS: dict[str, frozenset[str]] = {
    OperationState.QUEUED: frozenset({OperationState.RUNNING, OperationState.FAILED}),
    OperationState.RUNNING: frozenset({OperationState.SUCCEEDED, OperationState.FAILED}),
    OperationState.SUCCEEDED: frozenset(),
    OperationState.FAILED: frozenset(),
}

# The target's own long-running operation (Azure ML's MMS operation), in ServiceObservation.operation_state's
# words; "" when the target has none. MMS says "Cancelled", ARM "Canceled".
TARGET_OPERATION_RUNNING = frozenset({"NotStarted", "Running"})
TARGET_OPERATION_FAILED = frozenset({"Failed", "TimedOut", "Cancelled", "Canceled"})

LIVE_SERVICE_STATES = (ServiceState.TRANSITIONING, ServiceState.HEALTHY, ServiceState.UNHEALTHY)
ACTIVE_OPERATION_STATES = (OperationState.QUEUED, OperationState.RUNNING)
