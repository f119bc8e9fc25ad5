"""Steps of cluster operations: provision (or attach) and delete."""

from __future__ import annotations

from django.db import transaction

from deployments.backends import target_traits
from deployments.backends.base import BackendError
from deployments.models import Operation
from deployments.states import ProvisioningState

from ..specs import backend_for, cluster_spec
from ..transitions import (
    cluster_transition,
)
from .steps import (
    StepResult,
    creep,
    fail,
    operation_cluster,
    operation_log,
    overdue,
    poll,
    set_phase,
    succeed,
    try_transition,
)


def cluster_provision_step(operation: Operation) -> StepResult:
    cluster = operation_cluster(operation)
    backend = backend_for(cluster)
    spec = cluster_spec(cluster)
    traits = target_traits(cluster.backend)
    if operation.phase == "submit":
        operation_log(operation, f"Provisioning {cluster.name} on {cluster.get_backend_display()}")
        backend.provision_cluster(spec)
        set_phase(operation, "wait", 10)
        return poll()
    if failed := operation.params.get("failed_error"):
        # A worker saw Azure fail this cluster and died while removing it: finish that, once more.
        return fail(operation, failed + _remove_failed_compute(operation, backend, spec))
    observed = backend.observe_cluster(spec)
    if observed.provisioning_state == ProvisioningState.SUCCEEDED:
        facts = backend.cluster_facts(spec, observed)
        with transaction.atomic():
            cluster_transition(
                cluster=cluster, to=ProvisioningState.SUCCEEDED, message="provisioned", **facts
            )
            gpus = f"{facts['gpu_count']:g} × {facts['gpu_kind']}" if facts["gpu_count"] else "no GPU"
            per_node = " per node" if traits.gpus_per_node else ""
            succeed(operation, f"Succeeded: {cluster.name} is ready ({gpus}{per_node})")
        return None
    if observed.provisioning_state in (ProvisioningState.FAILED, "Canceled"):
        error = "; ".join(observed.errors) or f"provisioning ended {observed.provisioning_state}"
        if traits.removes_failed_clusters:
            params = {**operation.params, "failed_error": error}
            Operation.objects.filter(pk=operation.pk).update(params=params)
            error += _remove_failed_compute(operation, backend, spec)
        return fail(operation, error)
    if overdue(operation):
        return fail(operation, "provisioning did not finish in time")
    operation_log(operation, f"{observed.provisioning_state}.. {observed.detail}".rstrip())
    set_phase(operation, "wait", creep(operation))
    return poll() * 5 if cluster.backend != "local" else poll()


def cluster_delete_step(operation: Operation) -> StepResult:
    cluster = operation_cluster(operation)
    backend = backend_for(cluster)
    spec = cluster_spec(cluster)
    if operation.phase == "submit":
        if cluster.attach_resource_id:
            operation_log(
                operation, f"Detaching {cluster.name} from the workspace (the AKS cluster itself stays)"
            )
        else:
            operation_log(operation, f"Deleting {cluster.name}")
        backend.delete_cluster(spec)
        set_phase(operation, "wait", 20)
        return poll()
    observed = backend.observe_cluster(spec)
    if observed.provisioning_state == ProvisioningState.DELETED:
        with transaction.atomic():
            cluster_transition(cluster=cluster, to=ProvisioningState.DELETED, message="deleted")
            succeed(operation, f"Deleted {cluster.name}")
        return None
    if observed.provisioning_state == ProvisioningState.FAILED:
        return fail(operation, "; ".join(observed.errors) or "deletion failed")
    operation_log(operation, f"{observed.provisioning_state}..")
    set_phase(operation, "wait", creep(operation))
    return poll() * target_traits(cluster.backend).poll_factor


def _remove_failed_compute(operation: Operation, backend, spec) -> str:
    """A compute target that failed to provision can still hold (and bill for) part of an AKS cluster:
    ask Azure to remove it, so nothing is left half-created. Returns a sentence for the error."""
    try:
        backend.delete_cluster(spec)
    except BackendError as exc:
        operation_log(operation, f"Could not remove the failed compute target: {exc.message}")
        return " Lynx could not remove the failed compute target; delete this cluster to try again."
    operation_log(operation, f"Asked Azure to remove the failed compute target {spec.name}")
    return " Lynx asked Azure to remove the failed compute target, so nothing is left billing."


def cluster_failed(operation: Operation, error: str) -> None:
    """A provision or delete that failed leaves the cluster Failed, with Azure's errors."""
    cluster = operation_cluster(operation)
    try_transition(
        lambda: cluster_transition(
            cluster=cluster, to=ProvisioningState.FAILED, message=error, provisioning_errors=error
        )
    )
