"""Operations: recorded when a user asks, advanced by workers in short, idempotent steps.

A step claims the operation with a compare-and-set lease, does one piece of work (submit to the
backend, or observe it once), records the outcome and releases the lease. A step whose worker
died leaves an expired lease behind; the reconciler hands such operations to a live worker.
No database transaction is held across a backend call.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from deployments.backends.base import BackendError, ClusterObservation
from deployments.crypto import encrypt
from deployments.models import Backend as BackendKind
from deployments.models import Cluster, Deployment, Operation, OperationKind, OperationLine, Workspace
from deployments.states import ACTIVE_OPERATION_STATES, OperationState, ProvisioningState, ServiceState
from deployments.vm_sizes import vm_size_info

from .audit import actor_name, audit_record
from .specs import backend_for, cluster_spec, service_spec, workspace_spec
from .transitions import (
    TransitionError,
    cluster_transition,
    deployment_transition,
    operation_transition,
)

log = logging.getLogger(__name__)

MAX_TRANSIENT_RETRIES = 5


class Refused(Exception):
    """A request Lynx will not carry out, with the message the user reads. Nothing was changed."""


def operation_dispatch(operation_id: int, countdown: float = 0) -> None:
    from workers.tasks import advance_operation

    advance_operation.apply_async((operation_id,), countdown=countdown)


def operation_start(
    *,
    kind: str,
    user: AbstractBaseUser | None,
    cluster: Cluster | None = None,
    deployment: Deployment | None = None,
    idempotency_key: str | None = None,
    params: dict | None = None,
    workspace: Workspace | None = None,
    resource_name: str | None = None,
) -> Operation:
    """Record an operation inside the caller's transaction; a worker picks it up once it commits."""
    resource = deployment or cluster or workspace
    try:
        with transaction.atomic():  # a savepoint: a refused insert leaves the caller's transaction usable
            operation = Operation.objects.create(
                kind=kind,
                cluster=cluster,
                deployment=deployment,
                workspace=workspace,
                resource_name=(resource_name or resource.name)[:64],
                requested_by=user if user is not None and user.is_authenticated else None,
                requested_by_name=actor_name(user),
                idempotency_key=idempotency_key or None,
                params=params or {},
            )
    except IntegrityError as exc:
        busy = Operation.objects.filter(state__in=ACTIVE_OPERATION_STATES)
        busy = busy.filter(deployment=deployment) if deployment else busy.filter(cluster=cluster, deployment=None)
        current = busy.first()
        if current is not None:
            raise Refused(
                f"{resource.name} is busy: {current.get_kind_display().lower()} is {current.state}. "
                "Wait for it to finish."
            ) from exc
        raise
    OperationLine.objects.create(operation=operation, text=f"{operation.get_kind_display()} requested by {operation.requested_by_name}")
    transaction.on_commit(lambda: operation_dispatch(operation.pk))
    return operation


def operation_by_idempotency_key(key: str | None) -> Operation | None:
    """The operation a form submission already started (a double click, a retried POST)."""
    return Operation.objects.filter(idempotency_key=key).first() if key else None


def operation_log(operation: Operation, text: str) -> None:
    OperationLine.objects.create(operation=operation, text=text)


# --- the step engine ---------------------------------------------------------------------------------


def operation_advance(*, operation_id: int) -> float | None:
    """Run one step of an operation. Returns seconds until the next step, or None when there is none
    (finished, or another worker holds it)."""
    now = timezone.now()
    lease_until = now + timedelta(seconds=settings.LYNX_OPERATION_LEASE_SECONDS)
    claimed = (
        Operation.objects.filter(pk=operation_id, state__in=ACTIVE_OPERATION_STATES)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(lease_until=lease_until, steps=F("steps") + 1)
    )
    if not claimed:
        return None
    operation = Operation.objects.select_related(
        "cluster__workspace", "deployment__model", "deployment__cluster__workspace", "workspace"
    ).get(pk=operation_id)
    if operation.state == OperationState.QUEUED:
        operation = operation_transition(operation=operation, to=OperationState.RUNNING)
    next_step: float | None
    try:
        next_step = HANDLERS[operation.kind](operation)
    except BackendError as exc:
        next_step = _backend_failed(operation, exc)
    except TransitionError as exc:
        # Somebody else moved the resource first (e.g. a concurrent delete): stop here, say why.
        next_step = _fail(operation, str(exc))
    except Exception as exc:  # noqa: BLE001 - an operation must never stay "running" on a bug
        log.exception("operation %s failed", operation.pk)
        next_step = _fail(operation, f"{type(exc).__name__}: {exc}")
    Operation.objects.filter(pk=operation.pk, lease_until=lease_until).update(lease_until=timezone.now())
    return next_step


def _backend_failed(operation: Operation, exc: BackendError) -> float | None:
    if exc.transient and operation.attempts < MAX_TRANSIENT_RETRIES:
        Operation.objects.filter(pk=operation.pk).update(attempts=F("attempts") + 1)
        delay = min(60.0, 2.0 ** (operation.attempts + 1))
        operation_log(operation, f"{exc.message} (transient; retrying in {delay:.0f} s)")
        return delay
    return _fail(operation, exc.message)


def _fail(operation: Operation, error: str) -> None:
    """End the operation and put its resource into Azure's Failed state, all in one transaction."""
    operation.refresh_from_db()
    if operation.is_finished:
        return None
    with transaction.atomic():
        operation_log(operation, f"Failed: {error}")
        if operation.kind == OperationKind.WORKSPACE_TEST:
            _workspace_checked(operation.workspace, ok=False, result=error)
        elif operation.kind in (OperationKind.SERVICE_KEY_REGENERATE, OperationKind.SERVICE_LOGS):
            pass  # reading logs or replacing a key failed; the service itself is as it was
        elif operation.kind == OperationKind.CLUSTER_PROVISION:
            _try(lambda: cluster_transition(cluster=operation.cluster, to=ProvisioningState.FAILED, message=error,
                                            provisioning_errors=error))
        elif operation.kind == OperationKind.CLUSTER_DELETE:
            _try(lambda: cluster_transition(cluster=operation.cluster, to=ProvisioningState.FAILED, message=error,
                                            provisioning_errors=error))
        elif operation.deployment_id:
            _try(lambda: deployment_transition(deployment=operation.deployment, to=ServiceState.FAILED,
                                               message=error, error=error))
        operation_transition(operation=operation, to=OperationState.FAILED, error=error)
    return None


def _try(change: Callable[[], object]) -> None:
    try:
        change()
    except TransitionError:
        pass


def _succeed(operation: Operation, line: str) -> None:
    with transaction.atomic():
        operation_log(operation, line)
        operation_transition(operation=operation, to=OperationState.SUCCEEDED)


def _set_phase(operation: Operation, phase: str, progress: int) -> None:
    Operation.objects.filter(pk=operation.pk).update(phase=phase, progress=progress)
    operation.phase, operation.progress = phase, progress


def _creep(operation: Operation, ceiling: int = 90) -> int:
    """Progress that keeps moving while a cloud operation gives no percentage."""
    return min(ceiling, operation.progress + max(1, (ceiling - operation.progress) // 6))


def _overdue(operation: Operation) -> bool:
    started = operation.started_at or operation.created_at
    return timezone.now() - started > timedelta(seconds=settings.LYNX_DEPLOY_TIMEOUT_SECONDS)


def _poll() -> float:
    return settings.LYNX_POLL_SECONDS


# --- handlers: one per kind; each returns the delay until its next step, or None when done ----------


def _cluster_provision(operation: Operation) -> float | None:
    cluster = operation.cluster
    backend = backend_for(cluster)
    spec = cluster_spec(cluster)
    if operation.phase == "submit":
        operation_log(operation, f"Provisioning {cluster.name} on {cluster.get_backend_display()}")
        backend.provision_cluster(spec)
        _set_phase(operation, "wait", 10)
        return _poll()
    if failed := operation.params.get("failed_error"):
        # A worker saw Azure fail this cluster and died while removing it: finish that, once more.
        return _fail(operation, failed + _remove_failed_compute(operation, backend, spec))
    observed = backend.observe_cluster(spec)
    if observed.provisioning_state == ProvisioningState.SUCCEEDED:
        if cluster.backend == BackendKind.AZUREML:
            facts = _azure_cluster_facts(cluster, observed)
        else:
            facts = {"gpu_count": observed.gpu_count, "gpu_kind": observed.gpu_kind}
        with transaction.atomic():
            cluster_transition(
                cluster=cluster, to=ProvisioningState.SUCCEEDED, message="provisioned", **facts
            )
            gpus = f"{facts['gpu_count']:g} × {facts['gpu_kind']}" if facts["gpu_count"] else "no GPU"
            per_node = " per node" if cluster.backend == BackendKind.AZUREML else ""
            _succeed(operation, f"Succeeded: {cluster.name} is ready ({gpus}{per_node})")
        return None
    if observed.provisioning_state in (ProvisioningState.FAILED, "Canceled"):
        error = "; ".join(observed.errors) or f"provisioning ended {observed.provisioning_state}"
        if cluster.backend == BackendKind.AZUREML:
            params = {**operation.params, "failed_error": error}
            Operation.objects.filter(pk=operation.pk).update(params=params)
            error += _remove_failed_compute(operation, backend, spec)
        return _fail(operation, error)
    if _overdue(operation):
        return _fail(operation, "provisioning did not finish in time")
    operation_log(operation, f"{observed.provisioning_state}.. {observed.detail}".rstrip())
    _set_phase(operation, "wait", _creep(operation))
    return _poll() * 5 if cluster.backend != "local" else _poll()


def _cluster_delete(operation: Operation) -> float | None:
    cluster = operation.cluster
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
        _set_phase(operation, "wait", 20)
        return _poll()
    observed = backend.observe_cluster(spec)
    if observed.provisioning_state == ProvisioningState.DELETED:
        with transaction.atomic():
            cluster_transition(cluster=cluster, to=ProvisioningState.DELETED, message="deleted")
            _succeed(operation, f"Deleted {cluster.name}")
        return None
    if observed.provisioning_state == ProvisioningState.FAILED:
        return _fail(operation, "; ".join(observed.errors) or "deletion failed")
    operation_log(operation, f"{observed.provisioning_state}..")
    _set_phase(operation, "wait", _creep(operation))
    return _poll() * (1 if cluster.is_local else 5)


def _service_deploy(operation: Operation) -> float | None:
    deployment = operation.deployment
    backend = backend_for(deployment.cluster)
    spec = service_spec(deployment)
    if operation.phase == "submit":
        operation_log(
            operation,
            f"Deploying {deployment.model} to {deployment.cluster.name} as {deployment.name} "
            f"({deployment.replicas} replica{'s' if deployment.replicas != 1 else ''}, GPU {'on' if deployment.gpu_enabled else 'off'})",
        )
        if operation.kind == OperationKind.SERVICE_UPDATE:
            # Remember which rollout was serving, so a status written before the supervisor picked up
            # this update is never mistaken for its result.
            generation = backend.observe_service(spec).stats.get("rollout_generation")
            if generation is not None:
                params = {**operation.params, "from_generation": generation}
                Operation.objects.filter(pk=operation.pk).update(params=params)
                operation.params = params
            backend.update_service(spec)
        else:
            backend.deploy_service(spec)
        _set_phase(operation, "wait", 15)
        return _poll()
    observed = backend.observe_service(spec)
    ready = sum(r.state == "ready" for r in observed.replicas)
    total = len(observed.replicas) or deployment.replicas
    seen = set(operation.params.get("seen", []))
    for replica in observed.replicas:
        key = f"{replica.name}:{replica.state}"
        if key not in seen:
            operation_log(operation, f"{replica.name}: {replica.state}")
            seen.add(key)
    for line in observed.progress:
        if line not in seen:
            operation_log(operation, line)
            seen.add(line)
    Operation.objects.filter(pk=operation.pk).update(params={**operation.params, "seen": sorted(seen)})
    if operation.kind == OperationKind.SERVICE_UPDATE and "from_generation" in operation.params:
        if observed.stats.get("rollout_generation", 0) <= operation.params["from_generation"]:
            if _overdue(operation):
                return _fail(operation, "the rolling update did not start in time")
            return _poll()  # the supervisor has not begun this rollout yet
        if observed.error:
            # The new replicas never became ready; the previous configuration keeps serving.
            return _fail(operation, f"{observed.error} (the previous configuration is still serving)")
    if observed.state == ServiceState.HEALTHY:
        keys: dict[str, str] = {}
        if not deployment.cluster.is_local:
            # Azure makes an AKS service's keys: read them now (outside any transaction), store them encrypted.
            primary, secondary = backend.service_keys(spec)
            keys = {"primary_key_encrypted": encrypt(primary), "secondary_key_encrypted": encrypt(secondary)}
        with transaction.atomic():
            deployment_transition(
                deployment=deployment,
                to=ServiceState.HEALTHY,
                scoring_uri=observed.scoring_uri,
                swagger_uri=observed.swagger_uri,
                error="",
                message=f"{ready} of {total} replicas ready",
                **keys,
            )
            _succeed(operation, f"Succeeded: {deployment.name} is Healthy at {observed.scoring_uri}")
        return None
    if observed.state in (ServiceState.FAILED, "Unschedulable", ServiceState.UNHEALTHY):
        # During a deployment a replica that exits before it was ever ready means init() failed.
        return _fail(operation, observed.error or f"the service is {observed.state}")
    if observed.state == "Missing" and operation.phase == "wait":
        return _fail(operation, observed.error or "the service disappeared while it was being deployed")
    if _overdue(operation):
        return _fail(operation, "the deployment did not become Healthy in time")
    _set_phase(operation, "wait", max(operation.progress, 15 + int(75 * ready / max(total, 1))))
    return _poll() * (1 if deployment.cluster.is_local else 5)


def _service_delete(operation: Operation) -> float | None:
    deployment = operation.deployment
    backend = backend_for(deployment.cluster)
    spec = service_spec(deployment)
    if operation.phase == "submit":
        operation_log(operation, f"Deleting service {deployment.name}")
        backend.delete_service(spec)
        _set_phase(operation, "wait", 30)
        return _poll()
    observed = backend.observe_service(spec)
    if observed.state == "Missing":
        with transaction.atomic():
            deployment_transition(deployment=deployment, to=ServiceState.DELETED, message="deleted")
            _succeed(operation, f"Deleted service {deployment.name}")
        return None
    operation_log(operation, f"{observed.state}..")
    _set_phase(operation, "wait", _creep(operation))
    return _poll() * (1 if deployment.cluster.is_local else 5)


# --- Azure: facts about a provisioned cluster, connection tests, keys, logs ----------------------------

# ClusterObservation.detail of an AKS compute: "2 × Standard_NC4as_T4_v3 (DevTest) in eastus[, fqdn]".
_AKS_DETAIL = re.compile(r"^(?P<nodes>\d+) × (?P<vm_size>\S+) \((?P<purpose>\w*)\) in (?P<location>[^,\s]*)")


def _azure_cluster_facts(cluster: Cluster, observed: ClusterObservation) -> dict:
    """What a Succeeded AKS cluster row records: GPUs *per node* from its VM size (the deploy form's GPU check
    reads them), and, for an attached cluster, the size, node count and region Azure reports."""
    facts: dict = {}
    match = _AKS_DETAIL.match(observed.detail or "")
    nodes = cluster.node_count
    vm_size = cluster.vm_size
    if match:
        nodes, vm_size = int(match["nodes"]), match["vm_size"]
        if cluster.attach_resource_id:  # Lynx did not choose these: take Azure's word for them
            facts.update(vm_size=vm_size, node_count=nodes, location=match["location"] or cluster.location)
    info = vm_size_info(vm_size)
    if info is not None:
        facts.update(gpu_count=info.gpu_count, gpu_kind=info.gpu_kind)
    else:  # a size Lynx does not know: what Azure's observation says, shared out per node
        facts.update(gpu_count=observed.gpu_count / max(nodes, 1), gpu_kind=observed.gpu_kind)
    return facts


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


def _workspace_checked(workspace: Workspace, *, ok: bool, result: str) -> None:
    Workspace.objects.filter(pk=workspace.pk).update(
        last_checked_at=timezone.now(), last_check_result=result[:4000], last_check_ok=ok
    )
    audit_record(
        actor=None,
        action="workspace.test",
        resource=workspace,
        after={"ok": ok},
        message=result[:2000],
    )


def _workspace_test(operation: Operation) -> float | None:
    from deployments.backends import azureml  # cheap: the module imports the SDK only when it calls it

    from .workspaces import connection_problem

    workspace = operation.workspace
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
        _workspace_checked(workspace, ok=True, result=found)
        _succeed(operation, f"Succeeded: {found}")
    return None


def _service_key_regenerate(operation: Operation) -> float | None:
    deployment = operation.deployment
    key = operation.params.get("key", "Primary")
    operation_log(operation, f"Asking Azure for a new {key.lower()} key for {deployment.name}")
    # regen_key blocks for a few seconds while Azure rolls the key out; then the keys are read back.
    primary, secondary = backend_for(deployment.cluster).regenerate_key(service_spec(deployment), key)
    with transaction.atomic():
        Deployment.objects.filter(pk=deployment.pk).update(
            primary_key_encrypted=encrypt(primary), secondary_key_encrypted=encrypt(secondary)
        )
        _succeed(operation, f"Succeeded: new {key.lower()} key stored; the old one no longer works")
    return None


def _service_logs(operation: Operation) -> float | None:
    deployment = Deployment.objects.select_related("cluster__workspace", "model").get(
        pk=operation.params["deployment_id"]
    )
    lines = int(operation.params.get("lines", 200))
    logs = backend_for(deployment.cluster).service_logs(service_spec(deployment), lines=lines)
    with transaction.atomic():
        for container, text in logs.items():
            rows = [f"[{container}] {line}" for line in text.splitlines() if line.strip()]
            OperationLine.objects.bulk_create(
                [OperationLine(operation=operation, text=f"--- {container}: {len(rows)} lines ---")]
                + [OperationLine(operation=operation, text=row) for row in rows]
            )
        _succeed(operation, f"Succeeded: the last {lines} lines of each container of {deployment.name}")
    return None


HANDLERS: dict[str, Callable[[Operation], float | None]] = {
    OperationKind.CLUSTER_PROVISION: _cluster_provision,
    OperationKind.CLUSTER_DELETE: _cluster_delete,
    OperationKind.SERVICE_DEPLOY: _service_deploy,
    OperationKind.SERVICE_UPDATE: _service_deploy,
    OperationKind.SERVICE_DELETE: _service_delete,
    OperationKind.SERVICE_KEY_REGENERATE: _service_key_regenerate,
    OperationKind.SERVICE_LOGS: _service_logs,
    OperationKind.WORKSPACE_TEST: _workspace_test,
}


def operations_reclaim_lost() -> list[int]:
    """Hand operations whose worker died (lease expired, no step since) to a live worker."""
    grace = timedelta(seconds=settings.LYNX_OPERATION_LEASE_SECONDS)
    cutoff = timezone.now() - grace
    lost = list(
        Operation.objects.filter(state__in=ACTIVE_OPERATION_STATES)
        .filter(Q(lease_until__lt=cutoff) | Q(lease_until__isnull=True, created_at__lt=cutoff))
        .values_list("pk", flat=True)
    )
    for pk in lost:
        Operation.objects.filter(pk=pk).update(attempts=F("attempts") + 1)
        operation_dispatch(pk)
    return lost
