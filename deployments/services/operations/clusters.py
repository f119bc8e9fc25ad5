"""Steps of cluster operations: provision (or attach) and delete."""

from __future__ import annotations

from django.db import transaction

from deployments.backends import target_traits
from deployments.backends.base import Backend, BackendError, ClusterSpec
from deployments.models import Operation
from deployments.states import ProvisioningState

from ..specs import backend_for, cluster_spec
from ..transitions import (
    cluster_transition,
)
from .steps import (
    StepResult,
    creep,
    duration,
    fail,
    operation_cluster,
    operation_log,
    overdue,
    params_set,
    poll,
    set_phase,
    succeed,
    timeout_s,
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
        # A worker saw Azure fail this cluster (or gave up on it) and died while removing it: finish that.
        return fail(operation, failed + _remove_failed_compute(operation, backend, spec, traits.label))
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
        return _fail_and_remove(operation, backend, spec, error)
    limit = timeout_s(traits.provision_timeout_s)
    if overdue(operation, limit):
        # Lynx's limit is at least the target's own, so the target should have ended it by now; whatever it
        # still builds would bill unseen (reconcile and sync skip a Failed cluster): remove it like a failure.
        error = (
            f"provisioning did not finish within {duration(limit)} "
            f"(still {observed.provisioning_state or 'Unknown'}); Lynx gave up on it."
        )
        return _fail_and_remove(operation, backend, spec, error)
    operation_log(operation, f"{observed.provisioning_state}.. {observed.detail}".rstrip())
    set_phase(operation, "wait", creep(operation))
    return poll() * traits.poll_factor


def _fail_and_remove(operation: Operation, backend: Backend, spec: ClusterSpec, error: str) -> StepResult:
    """End a provisioning that failed or that Lynx gave up on; on a target whose half-made clusters bill,
    remove what was made. The error is recorded first, so a worker that dies mid-removal is finished by the
    next step (the `failed_error` branch above)."""
    traits = target_traits(operation_cluster(operation).backend)
    if traits.removes_failed_clusters:
        params_set(operation, failed_error=error)
        error += _remove_failed_compute(operation, backend, spec, traits.label)
    return fail(operation, error)


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
        if not target_traits(cluster.backend).cluster_resource:
            # Only Lynx's record: nothing on the target to wait for.
            with transaction.atomic():
                cluster_transition(cluster=cluster, to=ProvisioningState.DELETED, message="deleted")
                succeed(operation, f"Deleted {cluster.name} (nothing ran on it on the target)")
            return None
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
    traits = target_traits(cluster.backend)
    limit = timeout_s(traits.provision_timeout_s)
    if overdue(operation, limit):
        return fail(
            operation,
            f"the deletion did not finish within {duration(limit)} (still {observed.provisioning_state}). "
            + _may_still_bill(spec.name, traits.label),
        )
    operation_log(operation, f"{observed.provisioning_state}..")
    set_phase(operation, "wait", creep(operation))
    return poll() * traits.poll_factor


def _may_still_bill(name: str, label: str) -> str:
    return (
        f"The compute target {name} may still be running on {label}, and billing: delete this cluster in "
        f"Lynx to try again, or delete the compute target {name} from the workspace yourself."
    )


def _remove_failed_compute(operation: Operation, backend: Backend, spec: ClusterSpec, label: str) -> str:
    """A compute target that failed to provision can still hold (and bill for) part of an AKS cluster:
    ask Azure to remove it, so nothing is left half-created. Returns a sentence for the error."""
    try:
        backend.delete_cluster(spec)
    except BackendError as exc:
        operation_log(operation, f"Could not remove the compute target {spec.name}: {exc.message}")
        return f" Lynx could not remove it ({exc.message}). " + _may_still_bill(spec.name, label)
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
