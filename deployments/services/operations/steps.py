"""The pieces every operation step is made of: start, log, succeed, fail, progress, timing."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from kombu.exceptions import OperationalError

from deployments.backends import targets_on_this_host
from deployments.models import (
    Cluster,
    Deployment,
    Operation,
    OperationLine,
    Workspace,
)
from deployments.states import ACTIVE_OPERATION_STATES, OperationState
from deployments.tasks import ADVANCE_OPERATION, task_send

from ..audit import actor_name, audit_record
from ..transitions import (
    TransitionError,
    operation_transition,
)

log = logging.getLogger(__name__)

MAX_TRANSIENT_RETRIES = 5
BROKER_UNREACHABLE = (
    "Waiting for the task queue: the broker cannot be reached right now. "
    "Nothing is lost; this operation continues once the broker is back."
)


class Refused(Exception):
    """A request Lynx will not carry out, with the message the user reads. Nothing was changed."""


def operation_dispatch(operation_id: int, countdown: float = 0) -> bool:
    """Hand the operation's next step to a worker. False when the broker cannot be reached: the operation is
    recorded all the same, and the reconciler dispatches it once the broker is back (it picks up every
    active operation with no step for a lease's length), so a broker outage never fails a request."""
    try:
        task_send(ADVANCE_OPERATION, operation_id, countdown=countdown, queue=operation_queue(operation_id))
    except OperationalError as exc:
        log.warning("operation %s not dispatched, broker unreachable (reconcile will): %s", operation_id, exc)
        # Said on the operation's page too, which is where its requester is sent.
        OperationLine.objects.create(operation_id=operation_id, text=BROKER_UNREACHABLE)
        return False
    return True


def operation_queue(operation_id: int) -> str | None:
    """The local queue for an operation on the local target: its replicas run on that queue's host only, and
    another worker host would start (or look for) them on itself. None: the default queue, any worker."""
    here = targets_on_this_host()
    local = Q(cluster__backend__in=here) | Q(deployment__cluster__backend__in=here)
    return settings.LYNX_LOCAL_QUEUE if Operation.objects.filter(local, pk=operation_id).exists() else None


def operation_start(
    *,
    kind: str,
    user: User | None,
    cluster: Cluster | None = None,
    deployment: Deployment | None = None,
    idempotency_key: str | None = None,
    params: dict | None = None,
    workspace: Workspace | None = None,
    resource_name: str | None = None,
) -> Operation:
    """Record an operation inside the caller's transaction; a worker picks it up once it commits."""
    resource = deployment or cluster or workspace
    if resource is None:
        raise ValueError(f"a {kind} operation needs a deployment, a cluster or a workspace to act on")
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
        busy = (
            busy.filter(deployment=deployment)
            if deployment
            else busy.filter(cluster=cluster, deployment=None)
        )
        current = busy.first()
        if current is not None:
            raise Refused(
                f"{resource.name} is busy: {current.get_kind_display().lower()} is {current.state}. "
                "Wait for it to finish."
            ) from exc
        raise
    OperationLine.objects.create(
        operation=operation, text=f"{operation.get_kind_display()} requested by {operation.requested_by_name}"
    )
    # robust: whatever else goes wrong in dispatching is logged by Django; the operation is committed, and the
    # request that recorded it must still answer with its page, not a 500.
    transaction.on_commit(lambda: operation_dispatch(operation.pk), robust=True)
    return operation


def operation_by_idempotency_key(key: str | None) -> Operation | None:
    """The operation a form submission already started (a double click, a retried POST)."""
    return Operation.objects.filter(idempotency_key=key).first() if key else None


def operation_log(operation: Operation, text: str) -> None:
    OperationLine.objects.create(operation=operation, text=text)


def operation_deployment(operation: Operation) -> Deployment:
    """The deployment a service operation acts on: set when it was started, for every kind that has one."""
    if operation.deployment is None:
        raise ValueError(f"operation {operation.pk} ({operation.kind}) has no deployment")
    return operation.deployment


def operation_cluster(operation: Operation) -> Cluster:
    """The cluster a cluster operation acts on."""
    if operation.cluster is None:
        raise ValueError(f"operation {operation.pk} ({operation.kind}) has no cluster")
    return operation.cluster


def operation_workspace(operation: Operation) -> Workspace:
    """The workspace a workspace operation acts on."""
    if operation.workspace is None:
        raise ValueError(f"operation {operation.pk} ({operation.kind}) has no workspace")
    return operation.workspace


# What a step returns: seconds until its next step, or None once the operation has ended.
StepResult = float | None

# What an operation kind does to its resource when it fails, inside fail()'s transaction; registered with
# the kind's steps (operations/__init__.py, or a target's AppConfig.ready). A kind with none (reading logs,
# replacing a key) leaves its resource as it was.
FAILURE_HANDLERS: dict[str, Callable[[Operation, str], None]] = {}


def fail(operation: Operation, error: str) -> StepResult:
    """End the operation and let its kind's failure handler put the resource into Azure's Failed state (or
    whatever that kind does), all in one transaction. Returns the step's result (None: nothing follows), so
    a step can `return fail(...)`."""
    operation.refresh_from_db()
    if operation.is_finished:
        return None
    with transaction.atomic():
        operation_log(operation, f"Failed: {error}")
        if (failed := FAILURE_HANDLERS.get(operation.kind)) is not None:
            failed(operation, error)
        operation_transition(operation=operation, to=OperationState.FAILED, error=error)
    return None


def try_transition(change: Callable[[], object]) -> None:
    try:
        change()
    except TransitionError:
        pass


def succeed(operation: Operation, line: str) -> None:
    with transaction.atomic():
        operation_log(operation, line)
        operation_transition(operation=operation, to=OperationState.SUCCEEDED)


def set_phase(operation: Operation, phase: str, progress: int) -> None:
    Operation.objects.filter(pk=operation.pk).update(phase=phase, progress=progress)
    operation.phase, operation.progress = phase, progress


def creep(operation: Operation, ceiling: int = 90) -> int:
    """Progress that keeps moving while a cloud operation gives no percentage."""
    return min(ceiling, operation.progress + max(1, (ceiling - operation.progress) // 6))


def timeout_s(allowed_s: float | None) -> float:
    """How long Lynx follows a provisioning or a deployment before it gives up: the target's own allowance
    (TargetTraits.provision_timeout_s / deploy_timeout_s, at least what the target itself allows, so Lynx
    never gives up while Azure still works on it), or LYNX_DEPLOY_TIMEOUT_SECONDS where a target sets none,
    times LYNX_TIMEOUT_SCALE (tests run Azure's pace scaled down)."""
    allowed = settings.LYNX_DEPLOY_TIMEOUT_SECONDS if allowed_s is None else allowed_s
    return float(allowed) * settings.LYNX_TIMEOUT_SCALE


def overdue(operation: Operation, limit_s: float) -> bool:
    """Whether the operation has run longer than `limit_s` (see timeout_s)."""
    started = operation.started_at or operation.created_at
    return timezone.now() - started > timedelta(seconds=limit_s)


def duration(seconds: float) -> str:
    """A limit as people say it: "30 min", "90 s", "1.8 s"."""
    if seconds >= 120:
        return f"{round(seconds / 60, 1):g} min"
    return f"{seconds:.3g} s"


def params_set(operation: Operation, **values: object) -> None:
    """Merge `values` into the operation's params, in the row and in this copy alike."""
    operation.params = {**operation.params, **values}
    Operation.objects.filter(pk=operation.pk).update(params=operation.params)


def poll() -> float:
    return settings.LYNX_POLL_SECONDS


def workspace_checked(workspace: Workspace, *, ok: bool, result: str) -> None:
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
