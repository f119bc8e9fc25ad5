"""Steps of web-service operations: deploy, update, delete, key regeneration, log fetch."""

from __future__ import annotations

from django.db import transaction

from deployments.backends import target_traits
from deployments.crypto import encrypt
from deployments.models import Deployment, Operation, OperationKind, OperationLine
from deployments.states import ServiceState

from ..specs import backend_for, service_files_write, service_spec
from ..transitions import (
    deployment_transition,
)
from .steps import (
    StepResult,
    creep,
    fail,
    operation_deployment,
    operation_log,
    overdue,
    poll,
    set_phase,
    succeed,
    try_transition,
)

# How often a deploy or update whose replicas vanished (Lynx restarted under it) is submitted again.
MAX_RESUBMITS = 3


def service_deploy_step(operation: Operation) -> StepResult:
    deployment = operation_deployment(operation)
    backend = backend_for(deployment.cluster)
    spec = service_spec(deployment)
    if operation.phase == "submit":
        operation_log(
            operation,
            f"Deploying {deployment.model} to {deployment.cluster.name} as {deployment.name} "
            f"({deployment.replicas} replica{'s' if deployment.replicas != 1 else ''}, "
            f"GPU {'on' if deployment.gpu_enabled else 'off'})",
        )
        if operation.kind == OperationKind.SERVICE_UPDATE:
            # Remember which rollout was serving, so a status written before the supervisor picked up
            # this update is never mistaken for its result.
            generation = backend.observe_service(spec).stats.get("rollout_generation")
            if generation is not None:
                params = {**operation.params, "from_generation": generation}
                Operation.objects.filter(pk=operation.pk).update(params=params)
                operation.params = params
            service_files_write(deployment)
            backend.update_service(spec)
        else:
            service_files_write(deployment)
            backend.deploy_service(spec)
        set_phase(operation, "wait", 15)
        return poll()
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
            if overdue(operation):
                return fail(operation, "the rolling update did not start in time")
            return poll()  # the supervisor has not begun this rollout yet
        if observed.error:
            # The new replicas never became ready; the previous configuration keeps serving.
            return fail(operation, f"{observed.error} (the previous configuration is still serving)")
    if observed.state == ServiceState.HEALTHY:
        keys: dict[str, str] = {}
        if target_traits(deployment.cluster.backend).makes_keys:
            # The target made the service's keys (Azure): read them now (outside any transaction),
            # store them encrypted.
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
                actor=None,  # a worker's step: the system (named, so `keys` fills only the key fields)
                **keys,
            )
            succeed(operation, f"Succeeded: {deployment.name} is Healthy at {observed.scoring_uri}")
        return None
    if observed.state in (ServiceState.FAILED, "Unschedulable", ServiceState.UNHEALTHY):
        # During a deployment a replica that exits before it was ever ready means init() failed.
        return fail(operation, observed.error or f"the service is {observed.state}")
    if observed.state == "Missing" and operation.phase == "wait":
        # The replicas went away mid-deploy: on the local target, Lynx itself was stopped (Ctrl-C stops every
        # supervisor) or the host restarted. Submit again, as a worker taking the step over would.
        restarts = int(operation.params.get("restarts", 0))
        if restarts >= MAX_RESUBMITS:
            return fail(operation, observed.error or "the service disappeared while it was being deployed")
        operation_log(
            operation, "The service's replicas are not running (was Lynx restarted?); starting it again"
        )
        params = {k: v for k, v in operation.params.items() if k != "from_generation"}
        Operation.objects.filter(pk=operation.pk).update(params={**params, "restarts": restarts + 1})
        operation.params = {**params, "restarts": restarts + 1}
        if operation.kind == OperationKind.SERVICE_UPDATE:
            service_files_write(deployment)
            backend.update_service(spec)
        else:
            service_files_write(deployment)
            backend.deploy_service(spec)
        return poll()
    if overdue(operation):
        return fail(operation, "the deployment did not become Healthy in time")
    set_phase(operation, "wait", max(operation.progress, 15 + int(75 * ready / max(total, 1))))
    return poll() * target_traits(deployment.cluster.backend).poll_factor


def service_delete_step(operation: Operation) -> StepResult:
    deployment = operation_deployment(operation)
    backend = backend_for(deployment.cluster)
    spec = service_spec(deployment)
    if operation.phase == "submit":
        operation_log(operation, f"Deleting service {deployment.name}")
        backend.delete_service(spec)
        set_phase(operation, "wait", 30)
        return poll()
    observed = backend.observe_service(spec)
    if observed.state == "Missing":
        with transaction.atomic():
            deployment_transition(deployment=deployment, to=ServiceState.DELETED, message="deleted")
            succeed(operation, f"Deleted service {deployment.name}")
        return None
    operation_log(operation, f"{observed.state}..")
    set_phase(operation, "wait", creep(operation))
    return poll() * target_traits(deployment.cluster.backend).poll_factor


def service_failed(operation: Operation, error: str) -> None:
    """A deploy, update or delete that failed leaves the deployment Failed, with the error on its page."""
    deployment = operation_deployment(operation)
    try_transition(
        lambda: deployment_transition(
            deployment=deployment, to=ServiceState.FAILED, message=error, error=error
        )
    )


# --- keys and logs -----------------------------------------------------------------------------------


def service_key_regenerate_step(operation: Operation) -> StepResult:
    deployment = operation_deployment(operation)
    key = operation.params.get("key", "Primary")
    operation_log(operation, f"Replacing the {key.lower()} key of {deployment.name}")
    # Azure's regen_key blocks for a few seconds while it rolls the key out; then the keys are read back.
    # The local target rewrites the key file, which its front proxy re-reads on the next request.
    primary, secondary = backend_for(deployment.cluster).regenerate_key(service_spec(deployment), key)
    with transaction.atomic():
        Deployment.objects.filter(pk=deployment.pk).update(
            primary_key_encrypted=encrypt(primary), secondary_key_encrypted=encrypt(secondary)
        )
        succeed(operation, f"Succeeded: new {key.lower()} key stored; the old one no longer works")
    return None


def service_logs_step(operation: Operation) -> StepResult:
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
        succeed(operation, f"Succeeded: the last {lines} lines of each container of {deployment.name}")
    return None
