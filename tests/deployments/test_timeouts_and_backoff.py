"""Lynx gives up no sooner than the target does and removes what it gives up on; deploy and update results
come from the target's own operation; the reconciler restarts a down service with growing pauses, a limited
number of times, and asks a metered target about a Healthy service only now and then.

A fake target ("fake-cloud", registered like any target) stands in for Azure: its traits are Azure's
shape (poll_factor 5, half-made resources bill), its backend answers what each test sets and records every
call. The same behaviour against the Azure emulator is in tests/targets/azureml/test_giving_up.py.
"""

from __future__ import annotations

import dataclasses
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from deployments.backends import backend_factory, target_traits
from deployments.backends.base import (
    BackendError,
    ClusterObservation,
    ClusterSpec,
    ServiceObservation,
    ServiceSpec,
    TargetTraits,
)
from deployments.models import AuditEvent, Cluster, Deployment, Operation
from deployments.services import cluster_create, deployment_create, operation_advance, services_reconcile
from deployments.services.deployments import deployment_update
from deployments.services.operations.steps import timeout_s
from deployments.services.reconcile import MAX_RESTARTS, STREAK_RESET_AFTER, restart_delay
from deployments.services.transitions import cluster_transition
from deployments.states import ProvisioningState, ServiceState
from tests.deployments.factories import MINIMAL_SCRIPT

pytestmark = pytest.mark.django_db

FAKE = "fake-cloud"
TRAITS = TargetTraits(
    label="Fake cloud",
    poll_factor=5,
    makes_keys=False,
    reserves_port=False,
    on_this_host=False,
    priced_by_size=False,
    logs_on_page=False,
    autoscale=False,
    gpus_per_node=True,
    removes_failed_clusters=True,
    missing_is_final=True,
    provision_timeout_s=1800,
    deploy_timeout_s=1500,
    removes_abandoned_services=True,
)
DOWN = "Your container application crashed: init() raised KeyError('weights')"


@dataclass
class FakeCloud:
    """A target's backend whose answers a test sets; it records every call."""

    cluster_state: str = "Creating"
    service: ServiceObservation = field(default_factory=lambda: ServiceObservation(state="Transitioning"))
    delete_error: str = ""  # delete_cluster / delete_service raise this (Azure refusing) when set
    operation_ref: str | None = None  # what deploy/update/restart return
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def answer(self, state: str, error: str = "", operation_state: str = "") -> None:
        self.service = ServiceObservation(
            state=state, error=error, operation_state=operation_state, scoring_uri="http://fake/score"
        )

    def made(self, call: str) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == call]

    def provision_cluster(self, cluster: ClusterSpec) -> None:
        self.calls.append(("provision_cluster", cluster.name))

    def observe_cluster(self, cluster: ClusterSpec) -> ClusterObservation:
        self.calls.append(("observe_cluster", cluster.name))
        return ClusterObservation(provisioning_state=self.cluster_state)

    def delete_cluster(self, cluster: ClusterSpec) -> None:
        self.calls.append(("delete_cluster", cluster.name))
        if self.delete_error:
            raise BackendError(self.delete_error)

    def cluster_facts(self, cluster: ClusterSpec, observed: ClusterObservation) -> dict[str, Any]:
        return {"gpu_count": 0, "gpu_kind": ""}

    def deploy_service(self, spec: ServiceSpec) -> str | None:
        self.calls.append(("deploy_service", spec.name))
        return self.operation_ref

    def update_service(self, spec: ServiceSpec) -> str | None:
        self.calls.append(("update_service", spec.name))
        return self.operation_ref

    def restart_service(self, spec: ServiceSpec) -> str | None:
        self.calls.append(("restart_service", spec.name))
        return self.operation_ref

    def observe_service(self, spec: ServiceSpec, operation_ref: str | None = None) -> ServiceObservation:
        self.calls.append(("observe_service", spec.name, operation_ref))
        return self.service

    def delete_service(self, spec: ServiceSpec) -> None:
        self.calls.append(("delete_service", spec.name))
        if self.delete_error:
            raise BackendError(self.delete_error)


def _use_traits(traits: TargetTraits) -> None:
    sys.modules[f"lynx_{FAKE.replace('-', '_')}.backend"].TRAITS = traits  # type: ignore[attr-defined]
    target_traits.cache_clear()


@pytest.fixture
def cloud(settings, monkeypatch) -> Iterator[FakeCloud]:
    """The fake target, registered in LYNX_TARGETS as a target package would be."""
    fake = FakeCloud()
    package = f"lynx_{FAKE.replace('-', '_')}"
    module = types.ModuleType(f"{package}.backend")
    module.TRAITS = TRAITS  # type: ignore[attr-defined]
    module.make_backend = lambda cluster: fake  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, package, types.ModuleType(package))
    monkeypatch.setitem(sys.modules, f"{package}.backend", module)
    settings.LYNX_TARGETS = {**settings.LYNX_TARGETS, FAKE: package}
    settings.LYNX_DEPLOY_TIMEOUT_SECONDS = 900
    settings.LYNX_TIMEOUT_SCALE = 1.0
    target_traits.cache_clear()
    backend_factory.cache_clear()
    yield fake
    target_traits.cache_clear()
    backend_factory.cache_clear()


def advance(operation_id: int) -> Operation:
    """One step, at once (the lease a step leaves until its next one is due is not waited out)."""
    Operation.objects.filter(pk=operation_id).update(lease_until=None)
    operation_advance(operation_id=operation_id)
    return Operation.objects.get(pk=operation_id)


def started_ago(operation: Operation, seconds: float) -> None:
    Operation.objects.filter(pk=operation.pk).update(started_at=timezone.now() - timedelta(seconds=seconds))


def ready_fake_cluster(user) -> Cluster:
    cluster = cluster_create(user=user, name="fake-1", backend=FAKE).cluster
    return cluster_transition(cluster=cluster, to=ProvisioningState.SUCCEEDED)


def start_deploy(user, demo_model) -> Operation:
    return deployment_create(
        user=user,
        name="svc-1",
        cluster=ready_fake_cluster(user),
        model=demo_model,
        entry_script=MINIMAL_SCRIPT,
        environment_yaml="name: x\ndependencies: [python=3.11]\n",
    )


def healthy_deployment(cloud: FakeCloud, user, demo_model) -> Deployment:
    operation = start_deploy(user, demo_model)
    cloud.answer("Healthy")
    advance(operation.pk)
    assert advance(operation.pk).state == "succeeded"
    return Deployment.objects.get(pk=operation.deployment_id)


# --- how long Lynx follows an operation ------------------------------------------------------------------


def test_lynx_follows_azure_longer_than_azure_itself_and_the_local_target_as_before(settings):
    azure, local = target_traits("azureml"), target_traits("local")
    assert azure.provision_timeout_s is not None and azure.provision_timeout_s >= 1800  # AKS: ~10 min or more
    assert azure.deploy_timeout_s is not None and azure.deploy_timeout_s >= 1500  # MMS: 20 min, then TimedOut
    assert azure.removes_failed_clusters and azure.removes_abandoned_services
    assert (local.provision_timeout_s, local.deploy_timeout_s, local.removes_abandoned_services) == (
        None,
        None,
        False,
    )
    settings.LYNX_DEPLOY_TIMEOUT_SECONDS, settings.LYNX_TIMEOUT_SCALE = 900, 1.0
    assert timeout_s(local.deploy_timeout_s) == 900
    settings.LYNX_TIMEOUT_SCALE = 0.01  # Azure's pace scaled down, as the emulator's clock runs in tests
    assert timeout_s(1800) == pytest.approx(18) and timeout_s(None) == pytest.approx(9)


def test_a_provisioning_is_followed_past_the_deploy_timeout_until_the_provision_timeout(cloud, deployer):
    operation = cluster_create(user=deployer, name="slow-aks", backend=FAKE)
    advance(operation.pk)  # submitted
    started_ago(operation, 1600)  # past LYNX_DEPLOY_TIMEOUT_SECONDS and the deploy timeout: still followed
    assert advance(operation.pk).state == "running"
    assert cloud.made("delete_cluster") == []

    started_ago(operation, 1801)
    operation = advance(operation.pk)

    assert operation.state == "failed"
    assert "did not finish within 30 min (still Creating)" in operation.error
    assert cloud.made("delete_cluster") == [("delete_cluster", "slow-aks")]
    assert "nothing is left billing" in operation.error
    cluster = Cluster.objects.get(pk=operation.cluster_id)
    assert (
        cluster.provisioning_state == ProvisioningState.FAILED
        and cluster.provisioning_errors == operation.error
    )


def test_a_provisioning_given_up_whose_removal_fails_says_it_may_still_bill_and_how_to_remove_it(
    cloud, deployer
):
    cloud.delete_error = "Compute slow-aks is busy: operation in progress (HTTP 409)"
    operation = cluster_create(user=deployer, name="slow-aks", backend=FAKE)
    advance(operation.pk)
    started_ago(operation, 1801)

    operation = advance(operation.pk)

    assert operation.state == "failed"
    for text in (operation.error, Cluster.objects.get(pk=operation.cluster_id).provisioning_errors):
        assert cloud.delete_error in text
        assert "slow-aks may still be running on Fake cloud, and billing" in text
        assert "delete this cluster in Lynx to try again" in text


def test_timeouts_scale_with_lynx_timeout_scale(cloud, deployer, settings):
    settings.LYNX_TIMEOUT_SCALE = 0.5  # 1800 s → 900 s
    operation = cluster_create(user=deployer, name="slow-aks", backend=FAKE)
    advance(operation.pk)
    started_ago(operation, 850)
    assert advance(operation.pk).state == "running"
    started_ago(operation, 901)
    assert advance(operation.pk).state == "failed"


def test_a_deployment_past_its_deadline_is_deleted_from_the_target_and_says_so(cloud, deployer, demo_model):
    operation = start_deploy(deployer, demo_model)
    advance(operation.pk)
    started_ago(operation, 1400)  # past the old single 900 s timeout: Azure may still finish it
    assert advance(operation.pk).state == "running"

    started_ago(operation, 1501)
    operation = advance(operation.pk)

    assert operation.state == "failed"
    assert cloud.made("delete_service") == [("delete_service", "svc-1")]
    assert "did not become Healthy within 25 min (still Transitioning)" in operation.error
    assert "Lynx asked Fake cloud to delete the service" in operation.error
    deployment = Deployment.objects.get(pk=operation.deployment_id)
    assert (deployment.state, deployment.error) == (ServiceState.FAILED, operation.error)


def test_a_deployment_given_up_whose_delete_fails_says_it_may_still_bill_and_how_to_remove_it(
    cloud, deployer, demo_model
):
    cloud.delete_error = "An operation is already in progress on service 'svc-1'"
    operation = start_deploy(deployer, demo_model)
    advance(operation.pk)
    started_ago(operation, 1501)

    operation = advance(operation.pk)

    deployment = Deployment.objects.get(pk=operation.deployment_id)
    for text in (operation.error, deployment.error):
        assert cloud.delete_error in text
        assert "svc-1 may still be running on Fake cloud, and billing" in text
        assert "delete this deployment in Lynx to try again" in text


def test_an_update_past_its_deadline_keeps_the_service_that_served_before(cloud, deployer, demo_model):
    deployment = healthy_deployment(cloud, deployer, demo_model)
    operation = deployment_update(user=deployer, deployment=deployment, replicas=2)
    cloud.answer("Transitioning")
    advance(operation.pk)
    started_ago(operation, 1501)

    operation = advance(operation.pk)

    assert operation.state == "failed" and cloud.made("delete_service") == []
    assert "The service svc-1 still exists on Fake cloud" in operation.error


# --- results from the target's own operation --------------------------------------------------------------


def test_the_targets_operation_is_kept_and_asked_about_on_every_observation(cloud, deployer, demo_model):
    cloud.operation_ref = "https://mms/operations/op-1"
    operation = start_deploy(deployer, demo_model)
    advance(operation.pk)
    assert Operation.objects.get(pk=operation.pk).params["operation_ref"] == cloud.operation_ref

    cloud.answer("Healthy", operation_state="Running")  # Healthy is not the result while it runs
    assert advance(operation.pk).state == "running"
    cloud.answer("Healthy", operation_state="Succeeded")
    assert advance(operation.pk).state == "succeeded"

    observed_with = [call[2] for call in cloud.made("observe_service")]
    assert observed_with == [cloud.operation_ref, cloud.operation_ref]


def test_a_deploy_whose_operation_timed_out_fails_with_the_targets_error(cloud, deployer, demo_model):
    cloud.operation_ref = "https://mms/operations/op-2"
    operation = start_deploy(deployer, demo_model)
    advance(operation.pk)
    timed_out = "DeploymentTimedOut: The service creation is taking longer than our internal threshold"
    cloud.answer("Transitioning", error=timed_out, operation_state="TimedOut")

    operation = advance(operation.pk)

    assert (operation.state, operation.error) == ("failed", timed_out)
    assert Deployment.objects.get(pk=operation.deployment_id).error == timed_out


def test_a_failed_update_that_leaves_the_previous_revision_healthy_fails_and_says_it_still_serves(
    cloud, deployer, demo_model
):
    deployment = healthy_deployment(cloud, deployer, demo_model)
    cloud.operation_ref = "https://mms/operations/op-3"
    operation = deployment_update(user=deployer, deployment=deployment, replicas=2)
    advance(operation.pk)
    cloud.answer("Healthy", error="CrashLoopBackOff: init() raised", operation_state="Failed")

    operation = advance(operation.pk)

    assert operation.state == "failed"
    assert operation.error == "CrashLoopBackOff: init() raised (the previous configuration is still serving)"
    deployment.refresh_from_db()
    assert (deployment.state, deployment.error) == (ServiceState.FAILED, operation.error)


# --- the reconciler: restarts with backoff, a limit, then Failed -------------------------------------------


def reconcile_at(when: datetime) -> dict[str, int]:
    return services_reconcile("elsewhere", now=when)


def test_restarts_are_spaced_30_60_120_s_limited_to_5_then_the_deployment_fails_with_the_reason(
    cloud, deployer, demo_model
):
    deployment = healthy_deployment(cloud, deployer, demo_model)
    cloud.answer("Unhealthy", error=DOWN)
    t0 = timezone.now()
    assert [restart_delay(n).total_seconds() for n in range(1, 8)] == [30, 60, 120, 240, 480, 960, 1800]

    at = t0
    assert reconcile_at(at)["restarted"] == 1  # the first at once
    for restarts in range(1, MAX_RESTARTS):
        pause = restart_delay(restarts)
        assert reconcile_at(at + pause - timedelta(seconds=1))["restarted"] == 0, restarts
        at += pause
        assert reconcile_at(at)["restarted"] == 1, restarts
    assert len(cloud.made("restart_service")) == MAX_RESTARTS
    assert Deployment.objects.get(pk=deployment.pk).state == ServiceState.UNHEALTHY

    assert reconcile_at(at + restart_delay(MAX_RESTARTS))["failed"] == 1

    deployment.refresh_from_db()
    assert deployment.state == ServiceState.FAILED
    assert deployment.error == f"restarted {MAX_RESTARTS} times, still Unhealthy: {DOWN}"
    observations = len(cloud.made("observe_service"))
    assert reconcile_at(at + timedelta(hours=5))["checked"] == 0  # left alone: an update starts anew
    assert len(cloud.made("restart_service")) == MAX_RESTARTS
    assert len(cloud.made("observe_service")) == observations
    restarts = AuditEvent.objects.filter(action="deployment.restart", resource_id=deployment.pk, after={})
    assert restarts.count() == MAX_RESTARTS
    assert restarts.earliest("id").message == f"restart 1 of at most {MAX_RESTARTS}: {DOWN}"


def test_no_restart_while_the_last_restart_is_still_under_way(cloud, deployer, demo_model):
    deployment = healthy_deployment(cloud, deployer, demo_model)
    cloud.operation_ref = "https://mms/operations/restart-1"
    cloud.answer("Unhealthy", error=DOWN)
    t0 = timezone.now()
    assert reconcile_at(t0)["restarted"] == 1

    # Azure's update is still running an hour later: the service's state is not its result.
    cloud.answer("Unhealthy", error=DOWN, operation_state="Running")
    assert reconcile_at(t0 + timedelta(hours=1))["restarted"] == 0
    cloud.answer("Transitioning")
    assert reconcile_at(t0 + timedelta(hours=2))["restarted"] == 0
    assert cloud.made("observe_service")[-1][2] == cloud.operation_ref  # asked about that restart

    cloud.answer("Unhealthy", error=DOWN, operation_state="Failed")
    assert reconcile_at(t0 + timedelta(hours=3))["restarted"] == 1
    assert len(cloud.made("restart_service")) == 2
    assert Deployment.objects.get(pk=deployment.pk).state == ServiceState.UNHEALTHY


def _restarted_then_recovered(cloud, deployer, demo_model, restarts: int) -> tuple[Deployment, datetime]:
    """A Healthy deployment that went down, was restarted `restarts` times, and came back; and when."""
    deployment = healthy_deployment(cloud, deployer, demo_model)
    cloud.answer("Unhealthy", error=DOWN)
    at = timezone.now()
    reconcile_at(at)
    for made in range(1, restarts):
        at += restart_delay(made)
        reconcile_at(at)
    assert len(cloud.made("restart_service")) == restarts
    cloud.answer("Healthy")
    at += timedelta(seconds=1)
    assert reconcile_at(at)["recovered"] == 1
    return deployment, at


def _latest_restart(deployment: Deployment) -> AuditEvent:
    return AuditEvent.objects.filter(action="deployment.restart", resource_id=deployment.pk, after={}).latest(
        "id"
    )


def test_a_service_that_comes_back_for_a_moment_keeps_its_restart_count(cloud, deployer, demo_model):
    deployment, recovered_at = _restarted_then_recovered(cloud, deployer, demo_model, restarts=2)

    cloud.answer("Unhealthy", error=DOWN)
    # Seen down at its next observation (Healthy: 5 minutes later): the streak goes on, it is not a new one.
    assert reconcile_at(recovered_at + timedelta(seconds=300))["restarted"] == 1
    assert _latest_restart(deployment).message.startswith(f"restart 3 of at most {MAX_RESTARTS}")


def test_a_service_that_flaps_for_ever_ends_failed_instead_of_being_redeployed_for_ever(
    cloud, deployer, demo_model
):
    deployment, at = _restarted_then_recovered(cloud, deployer, demo_model, restarts=MAX_RESTARTS)

    cloud.answer("Unhealthy", error=DOWN)
    at += timedelta(seconds=300)
    reconcile_at(at)
    assert reconcile_at(at + restart_delay(MAX_RESTARTS))["failed"] == 1

    assert len(cloud.made("restart_service")) == MAX_RESTARTS
    assert Deployment.objects.get(pk=deployment.pk).state == ServiceState.FAILED


def test_a_service_healthy_for_half_an_hour_starts_a_new_count(cloud, deployer, demo_model):
    deployment, recovered_at = _restarted_then_recovered(cloud, deployer, demo_model, restarts=MAX_RESTARTS)
    cloud.answer("Healthy")
    for minutes in range(5, 30, 5):
        assert reconcile_at(recovered_at + timedelta(minutes=minutes))["checked"] == 1

    cloud.answer("Unhealthy", error=DOWN)
    assert reconcile_at(recovered_at + STREAK_RESET_AFTER)["restarted"] == 1

    deployment.refresh_from_db()
    assert deployment.state == ServiceState.UNHEALTHY
    assert _latest_restart(deployment).message.startswith("restart 1 of")


# --- the reconciler: polling in proportion to need ---------------------------------------------------------


def test_a_healthy_service_on_a_metered_target_is_observed_once_per_poll_factor_minutes(
    cloud, deployer, demo_model
):
    healthy_deployment(cloud, deployer, demo_model)
    observations = len(cloud.made("observe_service"))
    t0 = timezone.now()
    for offset in (0, 10, 60, 150, 299):  # passes every 10 s in production
        reconcile_at(t0 + timedelta(seconds=offset))
    assert len(cloud.made("observe_service")) == observations + 1
    assert reconcile_at(t0 + timedelta(seconds=299))["deferred"] == 1
    reconcile_at(t0 + timedelta(seconds=300))  # poll_factor 5 × 60 s
    assert len(cloud.made("observe_service")) == observations + 2

    # Down, it is watched every pass.
    cloud.answer("Unhealthy", error=DOWN)
    reconcile_at(t0 + timedelta(seconds=600))
    for offset in (601, 602, 603):
        reconcile_at(t0 + timedelta(seconds=offset))
    assert len(cloud.made("observe_service")) == observations + 6


def test_a_target_with_poll_factor_1_is_observed_every_pass(cloud, deployer, demo_model):
    _use_traits(dataclasses.replace(TRAITS, poll_factor=1))
    healthy_deployment(cloud, deployer, demo_model)
    observations = len(cloud.made("observe_service"))
    t0 = timezone.now()
    for offset in (0, 2, 4):
        reconcile_at(t0 + timedelta(seconds=offset))
    assert len(cloud.made("observe_service")) == observations + 3
