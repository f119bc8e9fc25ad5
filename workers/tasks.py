"""Celery tasks: each takes ids, reloads its rows and calls one service."""

from __future__ import annotations

from workers.celery import app


@app.task(acks_late=True, ignore_result=True)
def advance_operation(operation_id: int) -> None:
    """Run one step of an operation and schedule the next; a no-op once it has finished."""
    from deployments.services import operation_advance

    delay = operation_advance(operation_id=operation_id)
    if delay is not None:
        advance_operation.apply_async((operation_id,), countdown=delay)


@app.task(acks_late=True, ignore_result=True)
def reconcile() -> dict[str, int]:
    """Periodic: reclaim lost operation steps; restart dead replicas; mark services Unhealthy/Healthy."""
    from deployments.services import services_reconcile

    return services_reconcile()
