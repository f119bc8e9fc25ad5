"""Steps of web-service operations: deploy, update, delete, key regeneration, log fetch."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, cast

from django.db import transaction

from deployments.backends import target_traits
from deployments.backends.base import (
    STAGE_DONE,
    Backend,
    BackendError,
    ServiceObservation,
    ServiceSpec,
    StagedBackend,
)
from deployments.crypto import encrypt
from deployments.models import Deployment, Operation, OperationKind, OperationLine
from deployments.states import TARGET_OPERATION_FAILED, TARGET_OPERATION_RUNNING, ServiceState

from ..specs import backend_for, service_files_write, service_spec
from ..transitions import (
    deployment_transition,
)
from .steps import (
    StepResult,
    creep,
    duration,
    fail,
    operation_deployment,
    operation_log,
    overdue,
    params_set,
    poll,
    set_phase,
    succeed,
    timeout_s,
    try_transition,
)

# How often a deploy or update whose replicas vanished (Lynx restarted under it) is submitted again.
MAX_RESUBMITS = 3
PREVIOUS_STILL_SERVING = " (the previous configuration is still serving)"


def service_deploy_step(operation: Operation) -> StepResult:
    """Deploy or update: submit once, then observe the service (and the target's own operation, when it
    returned one) until it is Healthy, fails, or Lynx's limit for the target runs out."""
    deployment = operation_deployment(operation)
    backend = backend_for(deployment.cluster)
    # A traffic_split target's update gives the new revision this share of the traffic (a canary) at first.
    spec = replace(service_spec(deployment), canary_percent=int(operation.params.get("canary_percent", 100)))
    if operation.kind == OperationKind.SERVICE_TRAFFIC:
        return service_traffic_step(operation, deployment, backend, spec)
    if operation.phase == "submit":
        operation_log(
            operation,
            f"Deploying {deployment.model} to {deployment.cluster.name} as {deployment.name} "
            f"({deployment.replicas} replica{'s' if deployment.replicas != 1 else ''}, "
            f"GPU {'on' if deployment.gpu_enabled else 'off'})",
        )
        _submit(operation, deployment, backend, spec)
        set_phase(operation, "wait", 15)
        return poll()
    traits = target_traits(deployment.cluster.backend)
    if abandoned := operation.params.get("abandoned_error"):
        # A worker gave up on this service and died while deleting it: finish that.
        return fail(operation, abandoned + _remove_abandoned_service(operation, backend, spec, traits.label))
    # The reference to the target's operation goes back on every observation: the service's state alone
    # cannot tell a failed update (the previous revision still Healthy) from a finished one.
    observed = backend.observe_service(spec, operation_ref=operation.params.get("operation_ref"))
    ready = sum(r.state == "ready" for r in observed.replicas)
    total = len(observed.replicas) or deployment.replicas
    _log_progress(operation, observed)
    limit = timeout_s(traits.deploy_timeout_s)
    if operation.kind == OperationKind.SERVICE_UPDATE and "from_generation" in operation.params:
        if observed.stats.get("rollout_generation", 0) <= operation.params["from_generation"]:
            if overdue(operation, limit):
                return fail(operation, "the rolling update did not start in time")
            return poll()  # the supervisor has not begun this rollout yet
        if observed.error:
            # The new replicas never became ready; the previous configuration keeps serving.
            return fail(operation, observed.error + PREVIOUS_STILL_SERVING)
    if observed.operation_state in TARGET_OPERATION_FAILED:
        if traits.traffic_split:
            _discard_failed_revision(operation, backend, spec)
        return fail(operation, _target_operation_error(operation, observed))
    if observed.operation_state == STAGE_DONE:
        try:
            return _advance(operation, backend, spec)
        except BackendError as exc:
            if traits.traffic_split and not exc.transient:
                _discard_failed_revision(operation, backend, spec)  # unless it serves
            raise
    # While the target's operation runs, the service's state is not its result (an update's old revision is
    # Healthy until the new one replaces it): wait for the operation to end.
    running = observed.operation_state in TARGET_OPERATION_RUNNING
    if observed.state == ServiceState.HEALTHY and not running:
        return _succeeded(
            operation, deployment, backend, spec, observed, f"{ready} of {total} replicas ready"
        )
    if observed.state in (ServiceState.FAILED, "Unschedulable", ServiceState.UNHEALTHY) and not running:
        # During a deployment a replica that exits before it was ever ready means init() failed.
        return fail(operation, observed.error or f"the service is {observed.state}")
    if observed.state == "Missing" and operation.phase == "wait":
        return _resubmit(operation, deployment, backend, spec, observed)
    if overdue(operation, limit):
        return _give_up(operation, backend, spec, observed, limit)
    set_phase(operation, "wait", max(operation.progress, 15 + int(75 * ready / max(total, 1))))
    return poll() * traits.poll_factor


def _advance(operation: Operation, backend: Backend, spec: ServiceSpec) -> StepResult:
    """A stage of a staged target's operation ended well: submit the next one (StagedBackend)."""
    ref = cast(StagedBackend, backend).advance_service(spec, operation.params["operation_ref"])
    params_set(operation, operation_ref=ref)
    set_phase(operation, "wait", creep(operation))
    return poll()


def _discard_failed_revision(operation: Operation, backend: Backend, spec: ServiceSpec) -> None:
    """A revision that failed on a traffic_split target holds (and bills) its instances: remove it; the one
    serving before keeps its traffic."""
    try:
        cast(StagedBackend, backend).discard_revision(spec)
    except BackendError as exc:
        operation_log(operation, f"Could not remove the failed revision {spec.revision}: {exc.message}")
    else:
        operation_log(operation, f"Removing the failed revision {spec.revision}, so that it does not bill")


def service_traffic_step(
    operation: Operation, deployment: Deployment, backend: Backend, spec: ServiceSpec
) -> StepResult:
    """Complete a canary (all traffic to the deployment's revision) or roll it back (all traffic back to the
    revision before it); the revision left without traffic is then removed. The deployment serves throughout,
    so its state does not change; a rollback makes the previous revision the deployment's configuration."""
    staged = cast(StagedBackend, backend)
    percent = int(operation.params["percent"])
    traits = target_traits(deployment.cluster.backend)
    if operation.phase == "submit":
        operation_log(
            operation,
            f"Giving revision {deployment.revision} of {deployment.name} {percent} % of the traffic"
            + (
                f" (revision {operation.params.get('previous_revision')} gets the rest)"
                if percent < 100
                else ""
            ),
        )
        params_set(operation, operation_ref=staged.shift_traffic(spec, percent))
        set_phase(operation, "wait", 20)
        return poll()
    observed = backend.observe_service(spec, operation_ref=operation.params.get("operation_ref"))
    _log_progress(operation, observed)
    if observed.operation_state in TARGET_OPERATION_FAILED:
        with transaction.atomic():
            _traffic_record(operation, deployment, observed)  # what serves now, whatever failed after
            return fail(operation, observed.error or "the traffic shift failed")
    if observed.operation_state == STAGE_DONE:
        return _advance(operation, backend, spec)
    if observed.operation_state == "Succeeded":
        split = ", ".join(f"revision {rev}: {share} %" for rev, share in sorted(observed.traffic.items()))
        with transaction.atomic():
            _traffic_record(operation, deployment, observed)
            succeed(operation, f"Succeeded: traffic is now {split}")
        return None
    limit = timeout_s(traits.deploy_timeout_s)
    if overdue(operation, limit):
        return fail(operation, f"the traffic shift did not finish within {duration(limit)}")
    set_phase(operation, "wait", creep(operation))
    return poll() * traits.poll_factor


def _traffic_record(operation: Operation, deployment: Deployment, observed: ServiceObservation) -> None:
    """Keep the split the target reports; once a rollback has given the previous revision all the traffic,
    that revision is the deployment's configuration again (even if removing the canary failed after)."""
    if not observed.traffic:
        return
    stats = {**deployment.stats, "traffic": observed.traffic}
    Deployment.objects.filter(pk=deployment.pk).update(stats=stats)
    previous = operation.params.get("previous_revision")
    if int(operation.params["percent"]) == 0 and previous and observed.traffic.get(str(previous)) == 100:
        revision_restore(deployment, int(previous))


def revision_restore(deployment: Deployment, number: int) -> None:
    """Make an earlier revision the deployment's configuration again, as it is what serves (a canary rolled
    back). Its revision record stays; the rolled-back one stays in the history too."""
    revision = deployment.revisions.filter(number=number).first()
    if revision is None:
        return
    settings = {name: value for name, value in revision.config.items() if hasattr(Deployment, name)}
    Deployment.objects.filter(pk=deployment.pk).update(
        model=revision.model,
        entry_script=revision.entry_script,
        environment_yaml=revision.environment_yaml,
        revision=number,
        **settings,
    )


def _submit(operation: Operation, deployment: Deployment, backend: Backend, spec: ServiceSpec) -> None:
    """Start the deploy or update on the target and keep the reference to its operation, if it made one."""
    service_files_write(deployment)
    if operation.kind != OperationKind.SERVICE_UPDATE:
        ref = backend.deploy_service(spec)
    else:
        current = backend.observe_service(spec)
        if current.state == "Missing":
            # Nothing to update (Lynx deleted a deployment it gave up on, say): a retry deploys it anew.
            ref = backend.deploy_service(spec)
        else:
            # Remember which rollout was serving, so a status written before the supervisor picked up this
            # update is never mistaken for its result.
            generation = current.stats.get("rollout_generation")
            if generation is not None:
                params_set(operation, from_generation=generation)
            ref = backend.update_service(spec)
    if ref:
        params_set(operation, operation_ref=ref)


def _log_progress(operation: Operation, observed: ServiceObservation) -> None:
    """Each replica state and progress line once, as wait_for_deployment(show_output=True) prints them."""
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
    params_set(operation, seen=sorted(seen))


def _target_operation_error(operation: Operation, observed: ServiceObservation) -> str:
    """The target's own words for its failed operation; a failed update whose service is still Healthy says
    that the previous revision is what serves."""
    error = observed.error or f"the target's operation ended {observed.operation_state}"
    if operation.kind == OperationKind.SERVICE_UPDATE and observed.state == ServiceState.HEALTHY:
        error += PREVIOUS_STILL_SERVING
    return error


def _succeeded(
    operation: Operation,
    deployment: Deployment,
    backend: Backend,
    spec: ServiceSpec,
    observed: ServiceObservation,
    replicas_ready: str,
) -> StepResult:
    keys: dict[str, Any] = {}
    if target_traits(deployment.cluster.backend).makes_keys:
        # The target made the service's keys (Azure): read them now (outside any transaction), store them
        # encrypted.
        primary, secondary = backend.service_keys(spec)
        keys = {"primary_key_encrypted": encrypt(primary), "secondary_key_encrypted": encrypt(secondary)}
    if observed.traffic:
        keys["stats"] = {**deployment.stats, "traffic": observed.traffic}
    with transaction.atomic():
        deployment_transition(
            deployment=deployment,
            to=ServiceState.HEALTHY,
            scoring_uri=observed.scoring_uri,
            swagger_uri=observed.swagger_uri,
            error="",
            message=replicas_ready,
            actor=None,  # a worker's step: the system (named, so `keys` fills only the key fields)
            **keys,
        )
        succeed(operation, f"Succeeded: {deployment.name} is Healthy at {observed.scoring_uri}")
    return None


def _resubmit(
    operation: Operation,
    deployment: Deployment,
    backend: Backend,
    spec: ServiceSpec,
    observed: ServiceObservation,
) -> StepResult:
    """The replicas went away mid-deploy: on the local target, Lynx itself was stopped (Ctrl-C stops every
    supervisor) or the host restarted. Submit again, as a worker taking the step over would."""
    restarts = int(operation.params.get("restarts", 0))
    if restarts >= MAX_RESUBMITS:
        return fail(operation, observed.error or "the service disappeared while it was being deployed")
    operation_log(
        operation, "The service's replicas are not running (was Lynx restarted?); starting it again"
    )
    operation.params = {k: v for k, v in operation.params.items() if k != "from_generation"}
    params_set(operation, restarts=restarts + 1)
    service_files_write(deployment)
    if operation.kind == OperationKind.SERVICE_UPDATE:
        ref = backend.update_service(spec)
    else:
        ref = backend.deploy_service(spec)
    params_set(operation, operation_ref=ref)
    return poll()


def _give_up(
    operation: Operation, backend: Backend, spec: ServiceSpec, observed: ServiceObservation, limit: float
) -> StepResult:
    """Lynx's limit is at least the target's own, so the target should have ended this by now. What it still
    runs would go on unseen (reconcile and sync skip a Failed row): a new service is deleted where services
    bill; an updated one served before, so removing it is its owner's call, and the error says so."""
    traits = target_traits(operation_deployment(operation).cluster.backend)
    what = "update" if operation.kind == OperationKind.SERVICE_UPDATE else "deployment"
    error = (
        f"the {what} did not become Healthy within {duration(limit)} (still {observed.state}); "
        "Lynx gave up on it."
    )
    if not traits.removes_abandoned_services:
        return fail(operation, error)
    if operation.kind == OperationKind.SERVICE_UPDATE and traits.traffic_split:
        # The revision before still serves; the new one is removed so that it does not bill.
        _discard_failed_revision(operation, backend, spec)
        return fail(operation, error + PREVIOUS_STILL_SERVING)
    if operation.kind == OperationKind.SERVICE_UPDATE:
        return fail(
            operation,
            f"{error} The service {spec.name} still exists on {traits.label}: update this deployment again, "
            "or delete it so that it stops running.",
        )
    params_set(operation, abandoned_error=error)  # first: a worker that dies while deleting is finished above
    return fail(operation, error + _remove_abandoned_service(operation, backend, spec, traits.label))


def _remove_abandoned_service(operation: Operation, backend: Backend, spec: ServiceSpec, label: str) -> str:
    """Ask the target to delete a service Lynx gave up on. Returns a sentence for the error."""
    try:
        backend.delete_service(spec)
    except BackendError as exc:
        operation_log(operation, f"Could not delete the service {spec.name}: {exc.message}")
        return f" Lynx could not delete it ({exc.message}). " + _may_still_bill(spec.name, label)
    operation_log(
        operation, f"Asked {label} to delete the service {spec.name}, so that it does not keep running"
    )
    return f" Lynx asked {label} to delete the service, so nothing is left running."


def _may_still_bill(name: str, label: str) -> str:
    return (
        f"The service {name} may still be running on {label}, and billing: delete this deployment in Lynx "
        f"to try again, or delete the web service {name} from the workspace yourself."
    )


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
    traits = target_traits(deployment.cluster.backend)
    limit = timeout_s(traits.deploy_timeout_s)
    if overdue(operation, limit):
        return fail(
            operation,
            f"the deletion did not finish within {duration(limit)} (still {observed.state}). "
            + _may_still_bill(spec.name, traits.label),
        )
    operation_log(operation, f"{observed.state}..")
    set_phase(operation, "wait", creep(operation))
    return poll() * traits.poll_factor


def service_failed(operation: Operation, error: str) -> None:
    """A deploy, update or delete that failed leaves the deployment Failed, with the error on its page. A
    failed update's previous revision may still serve (the error says so); the row is Failed all the same,
    so the reconciler leaves it alone until the owner updates, rolls back or deletes it."""
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
