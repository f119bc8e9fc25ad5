"""Celery tasks: each takes ids, reloads its rows and calls one service."""

from __future__ import annotations

from deployments.services import services_reconcile
from deployments.services.expiry import clusters_expiry_check
from deployments.services.operations import operation_advance, operation_dispatch
from deployments.services.registered_models import uploads_sweep
from targets.azureml.services.sync import azure_sync_all, azure_sync_workspace
from workers.celery import app


@app.task(acks_late=True, ignore_result=True)
def advance_operation(operation_id: int) -> None:
    """Run one step of an operation and schedule the next; a no-op once it has finished."""
    delay = operation_advance(operation_id=operation_id)
    if delay is not None:
        operation_dispatch(operation_id, countdown=delay)  # a broker outage here: the reconciler resumes it


@app.task(acks_late=True, ignore_result=True)
def reconcile() -> dict[str, int]:
    """Periodic: reclaim lost operation steps; Azure services: mark them Unhealthy/Healthy, restart them."""
    return services_reconcile("elsewhere")


@app.task(acks_late=True, ignore_result=True)
def reconcile_local() -> dict[str, int]:
    """Periodic, every 2 s: reclaim lost operation steps; the same as `reconcile` for local services only."""
    return services_reconcile("here")


@app.task(acks_late=True, ignore_result=True)
def check_expiry() -> dict[str, int]:
    """Periodic: warn owners of clusters near their expiry or idle limit; tear down those past it
    whose owner chose automatic teardown."""
    return clusters_expiry_check()


@app.task(acks_late=True, ignore_result=True, soft_time_limit=60, time_limit=90)
def sync_azure() -> int:
    """Periodic: hand every Azure ML workspace to its own sync task (one slow workspace delays no other)."""
    workspace_ids = azure_sync_all()
    for workspace_id in workspace_ids:
        sync_azure_workspace.delay(workspace_id)
    return len(workspace_ids)


@app.task(acks_late=True, ignore_result=True, soft_time_limit=240, time_limit=300)
def sync_azure_workspace(workspace_id: int) -> dict:
    """List one workspace's compute targets and web services; record what Lynx does not account for."""
    result = azure_sync_workspace(workspace_id=workspace_id)
    return {"ok": result.ok, "found": len(result.found), "resolved": len(result.resolved)}


@app.task(acks_late=True, ignore_result=True, soft_time_limit=240, time_limit=300)
def sweep_uploads() -> int:
    """Periodic: remove the unpacking folders and temporary files of uploads that were killed mid-way."""
    return uploads_sweep()
