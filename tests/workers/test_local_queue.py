"""Local replicas run on one host: every task that touches them goes to that host's queue (LYNX_LOCAL_QUEUE),
whichever worker is free elsewhere. Other work stays on the default queue, which any worker takes."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings

from deployments.models import (
    Cluster,
    Deployment,
    Operation,
    OperationKind,
    RegisteredModel,
    Workspace,
)
from deployments.services import cluster_create
from deployments.services.operations import operation_dispatch
from deployments.states import OperationState, ProvisioningState, ServiceState
from lynx.process_args import DEFAULT_QUEUE, celery_worker_argv
from tests.conftest import BASE_DIR, wait_for, worker_env
from workers.celery import app


def _queued(broker: str, queue: str) -> list[tuple[str, tuple]]:
    """(task name, args) of every message waiting in `queue`, read from Redis as kombu stored it."""
    found = []
    for raw in redis.Redis.from_url(broker).lrange(queue, 0, -1):
        message = json.loads(raw)
        assert message["properties"]["delivery_info"]["routing_key"] == queue
        args = json.loads(base64.b64decode(message["body"]))[0]
        found.append((message["headers"]["task"], tuple(args)))
    return found


def _operation(kind: str, **resource) -> Operation:
    name = next(iter(resource.values())).name
    return Operation.objects.create(kind=kind, resource_name=name, requested_by_name="test", **resource)


@pytest.mark.django_db
def test_local_work_is_queued_for_the_local_host_and_the_rest_for_any_worker(broker):
    assert settings.LYNX_LOCAL_QUEUE == "local" and DEFAULT_QUEUE == "celery"
    model = RegisteredModel.objects.create(name="digits", version=1, path="/nowhere")
    workspace = Workspace.objects.create(
        name="ws", subscription_id="s", resource_group="rg", workspace_name="ws", tenant_id="t", client_id="c"
    )
    local = Cluster.objects.create(name="local-gpu", backend="local")
    aks = Cluster.objects.create(
        name="aks-gpu",
        backend="azureml",
        workspace=workspace,
        provisioning_state=ProvisioningState.SUCCEEDED,
    )
    on_local = Deployment.objects.create(
        name="on-local", cluster=local, model=model, state=ServiceState.HEALTHY
    )
    on_aks = Deployment.objects.create(name="on-aks", cluster=aks, model=model, state=ServiceState.HEALTHY)

    local_ops = [
        _operation(OperationKind.CLUSTER_PROVISION, cluster=local),
        _operation(OperationKind.SERVICE_LOGS, deployment=on_local),
    ]
    other_ops = [
        _operation(OperationKind.CLUSTER_DELETE, cluster=aks),
        _operation(OperationKind.SERVICE_DEPLOY, deployment=on_aks),
        _operation(OperationKind.WORKSPACE_TEST, workspace=workspace),
    ]
    for operation in local_ops + other_ops:
        assert operation_dispatch(operation.pk)
    # As beat sends them: by name, through the app's routes.
    for task in ("reconcile_local", "reconcile", "sync_azure"):
        app.send_task(f"workers.tasks.{task}")

    advance = "workers.tasks.advance_operation"
    assert sorted(_queued(broker, "local")) == sorted(
        [(advance, (op.pk,)) for op in local_ops] + [("workers.tasks.reconcile_local", ())]
    )
    # Azure's reconcile and sync go on while the local host is down.
    assert sorted(_queued(broker, "celery")) == sorted(
        [(advance, (op.pk,)) for op in other_ops]
        + [("workers.tasks.reconcile", ()), ("workers.tasks.sync_azure", ())]
    )


def test_the_default_worker_takes_both_queues():
    argv = celery_worker_argv("w@%h", concurrency=1)
    assert argv[argv.index("-Q") + 1].split(",") == ["celery", "local"]


class _Worker:
    """A real worker consuming only the queues given (the conftest's workers take the default argv)."""

    def __init__(self, name: str, queues: list[str], log: Path) -> None:
        self.log = log
        argv = celery_worker_argv(f"{name}@%h", concurrency=1, standalone=True, queues=queues)
        self.proc = subprocess.Popen(
            argv,
            cwd=BASE_DIR,
            env=worker_env(),
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(
            lambda: " ready." in self.text() or self.proc.poll() is not None, 60, message=f"{name} to start"
        )
        assert self.proc.poll() is None, self.text()[-3000:]

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_without_the_local_queue_leaves_local_operations_to_the_worker_with_it(
    deployer, celery_processes, broker, tmp_path
):
    elsewhere = _Worker("elsewhere", [DEFAULT_QUEUE], tmp_path / "elsewhere.log")
    try:
        operation = cluster_create(user=deployer, name="local-gpu")  # dispatched on commit, to "local"
        wait_for(lambda: _queued(broker, "local"), 10, message="the provisioning step to be queued")
        app.send_task("workers.tasks.sweep_uploads")  # default-queue work, sent after the local step

        # The worker took the later default-queue task, so it had every chance to take the local one first.
        wait_for(
            lambda: re.search(r"sweep_uploads\[[^\]]+\] succeeded in ", elsewhere.text()),
            60,
            message="the default-queue worker to run the sweep",
        )
        time.sleep(2)
        assert "advance_operation[" not in elsewhere.text()  # "[": a task line, not the banner's task list
        operation.refresh_from_db()
        assert operation.state == OperationState.QUEUED and operation.steps == 0
        assert _queued(broker, "local") == [("workers.tasks.advance_operation", (operation.pk,))]

        local_host = celery_processes("worker")  # the default argv: both queues
        wait_for(
            lambda: Operation.objects.get(pk=operation.pk).state == OperationState.SUCCEEDED,
            60,
            message="the local worker to provision the cluster",
        )
        assert (
            "advance_operation[" in local_host.log.read_text()
            and "advance_operation[" not in elsewhere.text()
        )
        assert Cluster.objects.get(pk=operation.cluster_id).provisioning_state == ProvisioningState.SUCCEEDED
    finally:
        elsewhere.stop()
