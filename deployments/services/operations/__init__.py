"""Operations: recorded when a user asks, advanced by workers in short, idempotent steps.

A step claims the operation with a compare-and-set lease, does one piece of work (submit to the
backend, or observe it once), records the outcome and releases the lease. A step whose worker
died leaves an expired lease behind; the reconciler hands such operations to a live worker.
No database transaction is held across a backend call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from deployments.backends.base import BackendError
from deployments.models import Operation, OperationKind
from deployments.states import ACTIVE_OPERATION_STATES, OperationState

from ..transitions import TransitionError, operation_transition
from .clusters import cluster_delete_step, cluster_provision_step
from .services import service_delete_step, service_deploy_step, service_key_regenerate_step, service_logs_step
from .steps import (
    MAX_TRANSIENT_RETRIES,
    Refused,
    fail,
    operation_by_idempotency_key,
    operation_dispatch,
    operation_log,
    operation_start,
)
from .workspaces import workspace_test_step

__all__ = [
    "HANDLERS",
    "Refused",
    "operation_advance",
    "operation_by_idempotency_key",
    "operation_dispatch",
    "operation_log",
    "operation_start",
    "operation_transition",
    "operations_reclaim_lost",
]

log = logging.getLogger(__name__)


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
        next_step = fail(operation, str(exc))
    except Exception as exc:  # noqa: BLE001 - an operation must never stay "running" on a bug
        log.exception("operation %s failed", operation.pk)
        next_step = fail(operation, f"{type(exc).__name__}: {exc}")
    Operation.objects.filter(pk=operation.pk, lease_until=lease_until).update(lease_until=timezone.now())
    return next_step


def _backend_failed(operation: Operation, exc: BackendError) -> float | None:
    if exc.transient and operation.attempts < MAX_TRANSIENT_RETRIES:
        Operation.objects.filter(pk=operation.pk).update(attempts=F("attempts") + 1)
        delay = min(60.0, 2.0 ** (operation.attempts + 1))
        operation_log(operation, f"{exc.message} (transient; retrying in {delay:.0f} s)")
        return delay
    return fail(operation, exc.message)


HANDLERS: dict[str, Callable[[Operation], float | None]] = {
    OperationKind.CLUSTER_PROVISION: cluster_provision_step,
    OperationKind.CLUSTER_DELETE: cluster_delete_step,
    OperationKind.SERVICE_DEPLOY: service_deploy_step,
    OperationKind.SERVICE_UPDATE: service_deploy_step,
    OperationKind.SERVICE_DELETE: service_delete_step,
    OperationKind.SERVICE_KEY_REGENERATE: service_key_regenerate_step,
    OperationKind.SERVICE_LOGS: service_logs_step,
    OperationKind.WORKSPACE_TEST: workspace_test_step,
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
