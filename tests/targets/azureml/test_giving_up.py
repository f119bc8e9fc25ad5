"""Against the Azure emulator: Lynx gives up no sooner than Azure, removes what it gives up on (or says
plainly that it may still bill), takes results from the MMS operation, restarts a crashing service with
backoff and a limit, and reads a Healthy service from Azure only now and then.

Timeouts run at the emulator's pace: LYNX_TIMEOUT_SCALE is set to the emulator's time scale, so Lynx's
1800 s for AKS creation and its deploy limit are scaled down exactly as Azure's own durations are.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import requests
from django.utils import timezone

from deployments.environments import default_environment_yaml
from deployments.models import Cluster, Deployment, Operation
from deployments.services import cluster_create, deployment_create, operation_advance, services_reconcile
from deployments.services.reconcile import MAX_RESTARTS, restart_delay
from deployments.states import ServiceState
from tests.conftest import wait_for
from tests.targets.azureml.conftest import CPU_SIZE, provision, run_inline, unique

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")]

# Serves until a file named by the test appears; from then on every init() fails (the weights went bad).
BREAKS_WHEN = """
import pathlib

BROKEN = pathlib.Path({marker!r})


def init():
    if BROKEN.exists():
        raise RuntimeError("the weights cache is corrupt")


def run(data):
    return {{"ok": True}}
"""
# init() never returns (a download that hangs): the container never becomes ready.
HANGS = """
import time


def init():
    time.sleep(3600)


def run(data):
    return data
"""


@pytest.fixture
def paced(settings, azure_emulator):
    """Lynx's limits scaled down as the emulator's clock is; short polls so that tests do not wait."""
    settings.LYNX_TIMEOUT_SCALE = azure_emulator.time_scale
    settings.LYNX_POLL_SECONDS = 0.1
    return azure_emulator


def tick(emulator) -> dict:
    """The emulator's clock moves on each request it answers: ask it for its state."""
    return requests.get(f"{emulator.plain_url}/_emulator/state", timeout=10).json()


def step(operation_id: int) -> Operation:
    """One step now (the lease a step leaves until its next one is due is not waited out)."""
    Operation.objects.filter(pk=operation_id).update(lease_until=None)
    operation_advance(operation_id=operation_id)
    return Operation.objects.get(pk=operation_id)


def start_deploy(user, cluster, model, script: str) -> Operation:
    return deployment_create(
        user=user,
        name=unique("svc"),
        cluster=cluster,
        model=model,
        entry_script=script,
        environment_yaml=default_environment_yaml(),
        gpu_enabled=False,
        cpu_cores=0.5,
        memory_gb=1.0,
    )


def test_a_cluster_that_never_finishes_is_given_up_at_lynxs_limit_and_deleted_in_azure(
    deployer, workspace, paced
) -> None:
    paced.cluster_create_seconds = 3600.0  # never, as far as this test goes
    name = unique("aks")
    operation = cluster_create(
        user=deployer,
        name=name,
        backend="azureml",
        workspace=workspace,
        vm_size=CPU_SIZE,
        node_count=1,
        cluster_purpose="DevTest",
        location="eastus",
    )
    operation = run_inline(operation.pk)

    assert operation.state == "failed"
    limit = 1800 * paced.time_scale  # Azure's provision_timeout_s, at the emulator's pace
    assert (operation.finished_at - operation.started_at).total_seconds() > limit  # not sooner
    assert "provisioning did not finish within" in operation.error and "(still Creating)" in operation.error
    assert "asked Azure to remove the failed compute target" in operation.error
    assert Cluster.objects.get(pk=operation.cluster_id).provisioning_state == "Failed"
    wait_for(lambda: name not in tick(paced)["computes"], 10, 0.05, f"{name} deleted in Azure")


def test_a_deploy_whose_init_never_returns_ends_with_azures_own_timeout_not_lynxs(
    deployer, workspace, tiny_model, paced, settings
) -> None:
    cluster = provision(deployer, workspace, vm_size=CPU_SIZE)
    paced.host_start_floor_seconds = 0.0  # MMS's 20 min at the emulator's pace, under Lynx's limit
    # At the emulator's pace Lynx's margin over MMS (25+ min against 20) is a fraction of a real second,
    # which a loaded runner can eat: which one gives up first must not be a race between two clocks. Lynx's
    # clock runs 1000 times coarser here (its limit over a real minute away); the test ends when MMS does.
    settings.LYNX_TIMEOUT_SCALE = 1000 * paced.time_scale
    operation = run_inline(start_deploy(deployer, cluster, tiny_model, HANGS).pk)

    assert operation.state == "failed"
    assert "DeploymentTimedOut" in operation.error and "gave up" not in operation.error
    assert Deployment.objects.get(pk=operation.deployment_id).state == ServiceState.FAILED


def test_a_deployment_azure_is_still_busy_with_at_lynxs_limit_says_it_may_still_bill(
    deployer, workspace, tiny_model, paced
) -> None:
    cluster = provision(deployer, workspace, vm_size=CPU_SIZE)
    # MMS's operation stays busy for the whole test (its timeout an hour of real time away), so Lynx's limit
    # always comes first and its delete always meets Azure's 409: no race between the two clocks.
    paced.host_start_floor_seconds = 3600.0
    operation = run_inline(start_deploy(deployer, cluster, tiny_model, HANGS).pk)
    name = operation.deployment.name
    try:
        assert operation.state == "failed"
        deployment = Deployment.objects.get(pk=operation.deployment_id)
        for text in (operation.error, deployment.error):
            assert "did not become Healthy within" in text and "Lynx gave up on it" in text
            assert "An operation is already in progress" in text  # Azure's 409, verbatim
            assert f"{name} may still be running on Azure ML v1 (AKS), and billing" in text
            assert "delete this deployment in Lynx to try again" in text
        assert paced.services[name].busy
    finally:
        # End the hanging init() (its operation Cancelled), so its host does not outlive the test.
        if name in tick(paced)["services"]:
            paced.cancel_service_operation(name)
        wait_for(lambda: not paced.services[name].busy if name in tick(paced)["services"] else True, 10)


def test_a_deployment_whose_operation_never_ends_is_deleted_in_azure_when_lynx_gives_up(
    deployer, workspace, tiny_model, paced
) -> None:
    cluster = provision(deployer, workspace, vm_size=CPU_SIZE)
    operation = start_deploy(deployer, cluster, tiny_model, BREAKS_WHEN.format(marker="/nonexistent"))
    operation = step(operation.pk)  # submitted
    name = operation.deployment.name
    ref = operation.params["operation_ref"]
    wait_for(lambda: tick(paced)["services"][name] == "Healthy", 60, 0.1, f"{name} Healthy in the emulator")
    # MMS goes on saying Running (it never ends the operation): Lynx must not wait for ever.
    op_id = ref.rstrip("/").rpartition("/")[2]
    paced.inject("GET", rf"/operations/{op_id}$", 200, {"id": op_id, "state": "Running"}, times=1000)

    operation = run_inline(operation.pk)

    assert operation.state == "failed"
    assert "did not become Healthy within" in operation.error
    assert "Lynx asked Azure ML v1 (AKS) to delete the service" in operation.error
    wait_for(lambda: name not in tick(paced)["services"], 10, 0.05, f"{name} deleted in Azure")


def test_reconcile_reads_a_healthy_service_every_5_minutes_and_restarts_a_crashing_one_with_backoff(
    deployer, workspace, tiny_model, azure_emulator, settings, tmp_path: Path
) -> None:
    settings.LYNX_POLL_SECONDS = 0.1
    emu = azure_emulator
    marker = tmp_path / "broken"
    cluster = provision(deployer, workspace, vm_size=CPU_SIZE)
    operation = run_inline(
        start_deploy(deployer, cluster, tiny_model, BREAKS_WHEN.format(marker=str(marker))).pk, 120
    )
    assert operation.state == "succeeded", operation.error
    deployment = Deployment.objects.get(pk=operation.deployment_id)
    name = deployment.name
    gets = lambda: emu.count("GET", rf"/services/{name}$")  # noqa: E731
    patches = lambda: emu.count("PATCH", rf"/services/{name}$")  # noqa: E731

    # Healthy: one read per 5 minutes (poll_factor 5 × 60 s), though passes come every 10 s.
    t0 = timezone.now()
    before = gets()
    services_reconcile("elsewhere", now=t0)
    per_observation = gets() - before
    assert per_observation >= 1
    for seconds in range(10, 300, 10):
        services_reconcile("elsewhere", now=t0 + timedelta(seconds=seconds))
    assert gets() - before == per_observation
    services_reconcile("elsewhere", now=t0 + timedelta(seconds=300))
    assert gets() - before == 2 * per_observation

    # The container dies and every new one fails in init(): restarts 30 s, 60 s, 120 s … apart, 5 at most.
    marker.touch()
    emu.services[name].host.process.kill()
    wait_for(lambda: tick(emu)["services"][name] == "Unhealthy", 30, 0.05, "Azure to see the crash")
    at = t0 + timedelta(seconds=600)
    assert services_reconcile("elsewhere", now=at)["restarted"] == 1
    for restarts in range(1, MAX_RESTARTS):
        wait_for(lambda: tick(emu)["services"][name] == "Failed", 60, 0.1, f"restart {restarts} to fail")
        pause = restart_delay(restarts)
        services_reconcile("elsewhere", now=at + pause - timedelta(seconds=1))
        assert patches() == restarts  # not yet
        at += pause
        services_reconcile("elsewhere", now=at)
        assert patches() == restarts + 1
    wait_for(lambda: tick(emu)["services"][name] == "Failed", 60, 0.1, "the last restart to fail")

    assert services_reconcile("elsewhere", now=at + restart_delay(MAX_RESTARTS))["failed"] == 1
    deployment.refresh_from_db()
    assert deployment.state == ServiceState.FAILED
    assert deployment.error.startswith(f"restarted {MAX_RESTARTS} times, still Failed: ")
    assert "Your container application crashed" in deployment.error  # Azure's words for the last one
    reads = gets()
    for hours in (1, 2, 3):
        services_reconcile("elsewhere", now=at + timedelta(hours=hours))
    assert (patches(), gets()) == (MAX_RESTARTS, reads)  # left alone
