"""Operations: recorded when a user asks, advanced by workers in short, idempotent steps.

A step claims the operation with a compare-and-set lease, does one piece of work (submit to the
backend, or observe it once), records the outcome and releases the lease. A step whose worker
died leaves an expired lease behind; the reconciler hands such operations to a live worker.
No database transaction is held across a backend call.

The lease is short (LYNX_OPERATION_LEASE_SECONDS, 8 s) and a heartbeat renews it while a step runs, so a
slow step that is alive keeps its operation however long it takes, and one whose worker died is taken over
within seconds. Releasing, a step leaves the lease until its next step is due (the countdown it is
dispatched with): an operation waiting for a later step is not lost, one whose next step never comes is.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import F, Q
from django.utils import timezone

from deployments.backends.base import BackendError
from deployments.models import Operation, OperationKind
from deployments.states import ACTIVE_OPERATION_STATES, OperationState

from ..transitions import TransitionError, operation_transition
from .clusters import cluster_delete_step, cluster_failed, cluster_provision_step
from .services import (
    service_delete_step,
    service_deploy_step,
    service_failed,
    service_key_regenerate_step,
    service_logs_step,
)
from .steps import (
    FAILURE_HANDLERS,
    MAX_TRANSIENT_RETRIES,
    Refused,
    fail,
    operation_by_idempotency_key,
    operation_dispatch,
    operation_log,
    operation_start,
)

__all__ = [
    "HANDLERS",
    "Refused",
    "operation_advance",
    "operation_by_idempotency_key",
    "operation_dispatch",
    "operation_handler_register",
    "operation_log",
    "operation_start",
    "operation_transition",
    "operations_reclaim_lost",
]

log = logging.getLogger(__name__)


# A dispatched step reaches a worker within a moment; an operation whose step is this late is handed over.
RECLAIM_GRACE_SECONDS = 3.0


def _lease_seconds() -> float:
    return float(settings.LYNX_OPERATION_LEASE_SECONDS)


class _Heartbeat(threading.Thread):
    """Renews a step's lease every quarter lease while the step runs (its own database connection)."""

    def __init__(self, operation_id: int, lease_until: datetime) -> None:
        super().__init__(name=f"lease-{operation_id}", daemon=True)
        self.operation_id = operation_id
        self.lease_until = lease_until
        self._done = threading.Event()

    def run(self) -> None:
        try:
            while not self._done.wait(_lease_seconds() / 4):
                renewed = timezone.now() + timedelta(seconds=_lease_seconds())
                held = Operation.objects.filter(pk=self.operation_id, lease_until=self.lease_until)
                if not held.update(lease_until=renewed):
                    return  # taken over (the lease ran out) or released: nothing left to renew
                self.lease_until = renewed
        except DatabaseError as exc:  # the step goes on; its lease runs out as if this thread were not here
            log.warning("operation %s: lease heartbeat stopped: %s", self.operation_id, exc)
        finally:
            connection.close()  # this thread's own connection

    def stop(self) -> datetime:
        """Stop renewing; returns the lease as it now stands."""
        self._done.set()
        self.join(timeout=_lease_seconds())
        return self.lease_until


def operation_advance(*, operation_id: int) -> float | None:
    """Run one step of an operation. Returns seconds until the next step, or None when there is none
    (finished, or another worker holds it)."""
    now = timezone.now()
    lease_until = now + timedelta(seconds=_lease_seconds())
    claimed = (
        Operation.objects.filter(pk=operation_id, state__in=ACTIVE_OPERATION_STATES)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(lease_until=lease_until, steps=F("steps") + 1)
    )
    if not claimed:
        return None
    heartbeat = _Heartbeat(operation_id, lease_until)
    heartbeat.start()
    try:
        next_step = _step(operation_id)
    finally:
        lease_until = heartbeat.stop()
    # Held until the next step is due (a little before: its countdown starts after this), so the reconciler
    # does not mistake an operation waiting for its next step for a lost one.
    due = timezone.now() + timedelta(seconds=max(0.0, (next_step or 0.0) - 0.5))
    Operation.objects.filter(pk=operation_id, lease_until=lease_until).update(lease_until=due)
    return next_step


def _step(operation_id: int) -> float | None:
    operation = Operation.objects.select_related(
        "cluster__workspace", "deployment__model", "deployment__cluster__workspace", "workspace"
    ).get(pk=operation_id)
    if operation.state == OperationState.QUEUED:
        operation = operation_transition(operation=operation, to=OperationState.RUNNING)
    try:
        return HANDLERS[operation.kind](operation)
    except BackendError as exc:
        return _backend_failed(operation, exc)
    except TransitionError as exc:
        # Somebody else moved the resource first (e.g. a concurrent delete): stop here, say why.
        return fail(operation, str(exc))
    except Exception as exc:  # noqa: BLE001 - an operation must never stay "running" on a bug
        log.exception("operation %s failed", operation.pk)
        return fail(operation, f"{type(exc).__name__}: {exc}")


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
    # A traffic shift leaves the deployment as it was when it fails (its revisions keep serving): no handler.
    OperationKind.SERVICE_TRAFFIC: service_deploy_step,
}


def operation_handler_register(
    kind: str,
    step: Callable[[Operation], float | None],
    failed: Callable[[Operation, str], None] | None = None,
) -> None:
    """A target's own operation kinds (Azure's connection test) join the engine from its AppConfig.ready:
    the step that advances one, and what a failure does to its resource (nothing, when None)."""
    HANDLERS[kind] = step
    if failed is not None:
        FAILURE_HANDLERS[kind] = failed


for _kind in (OperationKind.CLUSTER_PROVISION, OperationKind.CLUSTER_DELETE):
    FAILURE_HANDLERS[_kind] = cluster_failed
for _kind in (OperationKind.SERVICE_DEPLOY, OperationKind.SERVICE_UPDATE, OperationKind.SERVICE_DELETE):
    FAILURE_HANDLERS[_kind] = service_failed


def operations_reclaim_lost() -> list[int]:
    """Hand operations whose worker died (lease run out, no heartbeat since) or whose next step never came
    (a broker outage swallowed it) to a live worker."""
    cutoff = timezone.now() - timedelta(seconds=min(RECLAIM_GRACE_SECONDS, _lease_seconds()))
    lost = list(
        Operation.objects.filter(state__in=ACTIVE_OPERATION_STATES)
        .filter(Q(lease_until__lt=cutoff) | Q(lease_until__isnull=True, created_at__lt=cutoff))
        .values_list("pk", "lease_until")
    )
    reclaimed = []
    for pk, lease_until in lost:
        # Compare-and-set: of two reconcilers at once, one hands it over. The lease is left claimable (now),
        # so the step sent here runs at once, and is sent again only if it too is lost.
        if Operation.objects.filter(pk=pk, lease_until=lease_until).update(
            attempts=F("attempts") + 1, lease_until=timezone.now()
        ):
            operation_dispatch(pk)
            reclaimed.append(pk)
    return reclaimed
