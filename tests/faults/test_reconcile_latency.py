"""The reconciler is quick where it matters: a killed replica shows as Unhealthy within ~3 s (not after a
10 s polling gap), and an operation step whose worker process was killed is taken over within 15 s (not
after a 30 s lease and 30 s more of grace), while a slow step that is alive is never taken over."""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pytest
from django.db import connection
from django.utils import timezone

from deployments.models import Deployment, Operation, OperationKind
from deployments.services import cluster_create
from deployments.services import operations as operations_module
from deployments.services.operations import operation_advance, operations_reclaim_lost
from deployments.states import OperationState, ServiceState
from scoring import control
from tests.conftest import wait_for

from .conftest import state_dir

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def default_intervals(monkeypatch) -> None:
    """Workers and beat at Lynx's own intervals and lease, not the shorter reconcile other tests give them."""
    import tests.conftest as root

    shared = root.worker_env

    def env() -> dict[str, str]:
        return {k: v for k, v in shared().items() if not k.startswith("LYNX_RECONCILE")}

    monkeypatch.setattr(root, "worker_env", env)


def _finished(operation: Operation) -> bool:
    operation.refresh_from_db()
    return operation.is_finished


def test_a_killed_replica_shows_unhealthy_within_3_s_and_is_restarted(
    client, deployer, make_deployment, default_intervals, celery_processes
):
    celery_processes("worker")
    celery_processes("beat")
    deployment = make_deployment(name="quick-notice")
    operation = deployment.deploy_op
    wait_for(lambda: _finished(operation), 60, interval=0.2, message="the deployment")
    assert operation.state == "succeeded", operation.error
    time.sleep(2.5)  # a reconcile pass or two over the Healthy service first

    (replica,) = control.read_status(state_dir(deployment))["replicas"]
    os.kill(replica["pid"], signal.SIGKILL)
    killed = time.monotonic()
    wait_for(
        lambda: Deployment.objects.get(pk=deployment.pk).state == ServiceState.UNHEALTHY,
        10,
        interval=0.05,
        message="Unhealthy",
    )
    noticed = time.monotonic() - killed
    assert noticed <= 3.5, f"the page showed Healthy for {noticed:.1f} s after the replica was killed"
    client.force_login(deployer)
    assert ">Unhealthy<" in client.get(f"/deployments/{deployment.pk}/status/").content.decode()
    wait_for(
        lambda: Deployment.objects.get(pk=deployment.pk).state == ServiceState.HEALTHY,
        30,
        message="restarted and Healthy again",
    )


def test_a_step_whose_worker_process_was_killed_is_taken_over_within_15_s(
    deployer, make_deployment, default_intervals, celery_processes
):
    worker = celery_processes("worker")
    celery_processes("beat")
    deployment = make_deployment(name="taken-over")
    operation = deployment.deploy_op

    def mid_step() -> bool:  # the first step is running: its lease is held, its phase not yet moved on
        row = Operation.objects.get(pk=operation.pk)
        held = row.lease_until is not None and row.lease_until > timezone.now()
        return row.steps == 1 and row.phase == "submit" and held

    wait_for(mid_step, 30, interval=0.005, message="the first step to be running")
    for child in psutil.Process(worker.proc.pid).children():  # the pool process running the step
        child.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    wait_for(
        lambda: Operation.objects.get(pk=operation.pk).attempts >= 1, 20, interval=0.1, message="a takeover"
    )
    wait_for(lambda: Operation.objects.get(pk=operation.pk).steps >= 2, 20, interval=0.1, message="a step")
    taken_over = time.monotonic() - killed
    assert taken_over <= 15, f"the operation sat for {taken_over:.1f} s after its worker died"
    wait_for(lambda: _finished(operation), 60, message="the deployment")
    assert operation.state == OperationState.SUCCEEDED, operation.error
    assert len(control.read_status(state_dir(deployment))["replicas"]) == 1


def test_a_slow_step_that_is_alive_keeps_its_lease_and_nobody_takes_it_over(deployer, settings, monkeypatch):
    settings.LYNX_OPERATION_LEASE_SECONDS = 1
    operation = cluster_create(user=deployer, name="slow-one")
    calls: list[float] = []

    def slow_step(op: Operation) -> None:
        calls.append(time.monotonic())
        time.sleep(4)  # four leases long, alive all the while
        return None

    monkeypatch.setitem(operations_module.HANDLERS, OperationKind.CLUSTER_PROVISION, slow_step)

    def worker() -> None:
        try:
            operation_advance(operation_id=operation.pk)
        finally:
            connection.close()

    step = threading.Thread(target=worker)
    step.start()
    wait_for(lambda: calls, 5, interval=0.01, message="the step to start")
    reclaimed: list[int] = []
    try:
        while step.is_alive():
            reclaimed += operations_reclaim_lost()
            assert operation_advance(operation_id=operation.pk) is None  # a second worker is refused
            time.sleep(0.2)
    finally:
        step.join()
    assert reclaimed == [] and len(calls) == 1
    row = Operation.objects.get(pk=operation.pk)
    assert row.attempts == 0 and row.steps == 1
    assert row.lease_until <= timezone.now()  # released: its next step (none here) may run at once
