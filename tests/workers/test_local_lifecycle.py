"""The local target end to end through real Celery workers and real inference-server replicas."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest
import requests

from deployments.crypto import decrypt
from deployments.models import AuditEvent, Deployment, Operation
from deployments.services import cluster_create, cluster_delete, deployment_delete
from deployments.states import OperationState, ProvisioningState, ServiceState
from scoring import control
from tests.conftest import digit_images, wait_for
from tests.deployments.factories import start_deployment

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _state(model, pk) -> str:
    obj = model.objects.get(pk=pk)
    return getattr(obj, "state", None) or obj.provisioning_state


def _supervisors(name: str) -> list[psutil.Process]:
    """This session's supervisors of deployment `name`: those serving its own state directory, under its own
    LYNX_VAR_DIR. `make run` or another checkout's tests may run a deployment of the same name meanwhile."""
    from django.conf import settings

    state_dir = str((settings.LYNX_LOCAL_DIR / "services" / name).resolve())
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "scoring.runtime" in cmdline and _arg_after(cmdline, "--state-dir") == state_dir:
            found.append(proc)
    return found


def _arg_after(cmdline: list[str], flag: str) -> str | None:
    return cmdline[cmdline.index(flag) + 1] if flag in cmdline[:-1] else None


def _provision(user) -> object:
    operation = cluster_create(user=user, name="local-gpu")
    wait_for(
        lambda: _state(Operation, operation.pk) == OperationState.SUCCEEDED, 60, message="cluster provisioned"
    )
    cluster = operation.cluster
    cluster.refresh_from_db()
    assert cluster.provisioning_state == ProvisioningState.SUCCEEDED
    return cluster


def test_deploy_score_recover_from_a_dead_replica_and_tear_down(
    client, deployer, demo_model, celery_processes, stop_local_replicas
):
    celery_processes("worker")
    celery_processes("beat")
    cluster = _provision(deployer)
    operation = start_deployment(deployer, cluster, demo_model, name="digits-demo", replicas=2)
    wait_for(lambda: _state(Operation, operation.pk) in ("succeeded", "failed"), 180, message="deployment")
    operation.refresh_from_db()
    assert operation.state == "succeeded", operation.error
    deployment = Deployment.objects.get(pk=operation.deployment_id)
    assert deployment.state == ServiceState.HEALTHY
    assert deployment.scoring_uri.startswith("http://127.0.0.1:") and deployment.scoring_uri.endswith(
        "/score"
    )
    assert [line.text for line in operation.lines.all()][-1].startswith("Succeeded: digits-demo is Healthy")

    key = decrypt(deployment.primary_key_encrypted)
    top = []
    for image in digit_images(3):
        response = requests.post(
            deployment.scoring_uri,
            data=image,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/octet-stream"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        top.append(response.json()["predictions"][0]["label"])
    assert top.count("three") >= 4, top  # the demo model is ~97 % accurate on held-out digits
    # Requests sent straight to the scoring URI count as activity for the idle-teardown rule.
    wait_for(lambda: Deployment.objects.get(pk=deployment.pk).last_scored_at, 30, message="last_scored_at")

    def latency_window() -> int | None:
        return (Deployment.objects.get(pk=deployment.pk).stats.get("latency_ms") or {}).get("window")

    wait_for(lambda: latency_window() == 5, 30, message="the five requests in the deployment's stats")
    stats = Deployment.objects.get(pk=deployment.pk).stats
    assert stats["avg_batch_size"] >= 1
    # The deployment page shows the traffic the front proxy saw: percentiles, not an average.
    latency = stats["latency_ms"]
    assert latency["window"] == 5 and 0 < latency["p50"] <= latency["p95"] <= latency["p99"], stats
    client.force_login(deployer)
    facts = client.get(f"/deployments/{deployment.pk}/status/").content.decode()
    assert f"p99 {latency['p99']:.1f} ms" in facts and "(the last 5 scoring requests" in facts, facts
    assert "5 × 2xx" in facts
    assert requests.post(deployment.scoring_uri, data=b"x", timeout=10).status_code == 401

    # A replica dies: the reconciler sees it, marks the service Unhealthy, restarts it,
    # and it is Healthy again.
    status = control.read_status(cluster_dir := _state_dir(deployment))
    victim = status["replicas"][0]["pid"]
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: AuditEvent.objects.filter(action="deployment.restart", resource_id=deployment.pk).exists(),
        30,
        message="the reconciler restarting the dead replica",
    )
    wait_for(
        lambda: (
            _state(Deployment, deployment.pk) == ServiceState.HEALTHY
            and all(r["state"] == "ready" for r in control.read_status(cluster_dir)["replicas"])
        ),
        120,
        message="Healthy again",
    )
    moves = list(
        AuditEvent.objects.filter(action="deployment.state", resource_id=deployment.pk)
        .order_by("id")
        .values_list("after__state", flat=True)
    )
    assert moves[-2:] == ["Unhealthy", "Healthy"]
    assert len(_supervisors("digits-demo")) == 1

    delete = deployment_delete(user=deployer, deployment=deployment)
    wait_for(lambda: _state(Operation, delete.pk) == "succeeded", 60, message="service deleted")
    assert _state(Deployment, deployment.pk) == ServiceState.DELETED
    assert _supervisors("digits-demo") == []
    assert not psutil.pid_exists(victim) or psutil.Process(victim).status() == psutil.STATUS_ZOMBIE
    with pytest.raises(requests.ConnectionError):
        requests.get(deployment.scoring_uri.replace("/score", "/"), timeout=5)

    drop = cluster_delete(user=deployer, cluster=cluster)
    wait_for(lambda: _state(Operation, drop.pk) == "succeeded", 60, message="cluster deleted")
    assert _state(type(cluster), cluster.pk) == ProvisioningState.DELETED


def _state_dir(deployment):
    from django.conf import settings

    return settings.LYNX_LOCAL_DIR / "services" / deployment.name


def test_a_worker_killed_mid_deployment_leaves_one_healthy_service(
    deployer, demo_model, celery_processes, stop_local_replicas
):
    first = celery_processes("worker", "doomed")
    celery_processes("beat")
    cluster = _provision(deployer)
    operation = start_deployment(deployer, cluster, demo_model, name="survivor", replicas=2)
    # Kill the worker once it has submitted the replicas and is following them (mid-deployment).
    wait_for(lambda: Operation.objects.get(pk=operation.pk).phase == "wait", 60, message="replicas submitted")
    first.kill()
    assert Operation.objects.get(pk=operation.pk).state == OperationState.RUNNING
    celery_processes("worker", "rescuer")
    wait_for(
        lambda: _state(Operation, operation.pk) in ("succeeded", "failed"), 180, message="deployment finished"
    )
    operation.refresh_from_db()
    assert operation.state == "succeeded", operation.error
    assert operation.attempts >= 1  # the reconciler handed it to the new worker
    deployment = Deployment.objects.get(pk=operation.deployment_id)
    assert deployment.state == ServiceState.HEALTHY
    # Exactly once: one supervisor, two replicas, one transition to Healthy, one operation.
    assert len(_supervisors("survivor")) == 1
    replicas = control.read_status(_state_dir(deployment))["replicas"]
    assert len(replicas) == 2 and all(psutil.pid_exists(r["pid"]) for r in replicas)
    healthy = AuditEvent.objects.filter(
        action="deployment.state", resource_id=deployment.pk, after__state="Healthy"
    )
    assert healthy.count() == 1
    assert Operation.objects.filter(deployment=deployment).count() == 1


def test_supervisors_are_counted_in_this_sessions_state_dir_only(tmp_path):
    # What `make run` (or a second checkout's tests) has: a supervisor of a deployment with the same name,
    # serving another LYNX_VAR_DIR.
    elsewhere = tmp_path / "other-var" / "local" / "services" / "digits-demo"
    argv = [sys.executable, "-c", "import time; time.sleep(60)", "-m", "scoring.runtime", "serve"]
    other = subprocess.Popen([*argv, "--state-dir", str(elsewhere)])
    try:
        psutil.Process(other.pid).cmdline()  # it is up, with its command line
        assert _supervisors("digits-demo") == []
    finally:
        other.kill()
        other.wait(10)
