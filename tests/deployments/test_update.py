"""Updating a live deployment: one SERVICE_UPDATE operation, a new revision with the previous one kept,
rollback as an update to an earlier revision, and on the local target a rollout that no client notices."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from deployments.crypto import decrypt
from deployments.environments import default_entry_script, default_environment_yaml
from deployments.models import AuditEvent, Deployment, Operation, OperationKind
from deployments.services import Refused
from deployments.services.deployments import deployment_rollback, deployment_update
from deployments.services.transitions import deployment_transition
from deployments.states import OperationState, ServiceState
from scoring import control
from tests.conftest import digit_images, wait_for
from tests.deployments.conftest import login
from tests.deployments.factories import ready_cluster, start_deployment

EDITED_SCRIPT = default_entry_script().replace("TOP_K = 5", "TOP_K = 3")


def _update_form(deployment: Deployment, **overrides) -> dict:
    data = {
        "idempotency_key": overrides.pop("idempotency_key", "update-1"),
        "model": deployment.model_id,
        "entry_script": deployment.entry_script,
        "environment_yaml": deployment.environment_yaml,
        "replicas": deployment.replicas,
        "cpu_cores": deployment.cpu_cores,
        "memory_gb": deployment.memory_gb,
        "gpu_cores": 0,
        "autoscale_min_replicas": 1,
        "autoscale_max_replicas": 1,
        "autoscale_target_utilization": 70,
    }
    data.update(overrides)
    return data


@pytest.mark.django_db
def test_the_update_form_starts_from_the_current_configuration(deployer, healthy_deployment):
    page = login(deployer).get(f"/deployments/{healthy_deployment.pk}/update/").content.decode()
    assert 'name="replicas" value="1"' in page and "TOP_K = 5" in page and "Now at revision 1" in page


@pytest.mark.django_db
def test_an_update_is_one_operation_and_a_new_revision_and_the_previous_one_is_kept(
    deployer, healthy_deployment, django_capture_on_commit_callbacks
):
    client = login(deployer)
    with django_capture_on_commit_callbacks() as dispatched:
        response = client.post(
            f"/deployments/{healthy_deployment.pk}/update/",
            _update_form(
                healthy_deployment, entry_script=EDITED_SCRIPT, replicas=2, cpu_cores=2, memory_gb=4
            ),
        )
    operation = Operation.objects.get(kind=OperationKind.SERVICE_UPDATE)
    assert response.status_code == 302 and response["Location"] == f"/operations/{operation.pk}/"
    assert len(dispatched) == 1 and operation.state == OperationState.QUEUED
    assert operation.params["revision"] == 2 and set(operation.params["changed"]) == {
        "replicas",
        "cpu_cores",
        "memory_gb",
        "entry_script",
    }
    deployment = Deployment.objects.get(pk=healthy_deployment.pk)
    assert deployment.state == ServiceState.TRANSITIONING and deployment.revision == 2
    assert (deployment.replicas, deployment.cpu_cores, deployment.memory_gb) == (2, 2, 4)
    first, second = deployment.revisions.order_by("number")
    assert first.number == 1 and first.config["replicas"] == 1 and "TOP_K = 5" in first.entry_script
    assert second.number == 2 and second.config["replicas"] == 2 and second.entry_script == EDITED_SCRIPT
    event = AuditEvent.objects.get(action="deployment.update")
    assert event.actor_name == "dana" and event.before["replicas"] == 1 and event.after["replicas"] == 2
    assert event.before["revision"] == 1 and event.after["revision"] == 2
    moved = AuditEvent.objects.filter(action="deployment.state", after__state="Transitioning").get()
    assert moved.before == {"state": "Healthy"}
    # The same form submitted twice starts one operation.
    again = client.post(
        f"/deployments/{healthy_deployment.pk}/update/", _update_form(healthy_deployment, replicas=3)
    )
    assert (
        again["Location"] == f"/operations/{operation.pk}/"
        and Operation.objects.filter(kind="service_update").count() == 1
    )


@pytest.mark.django_db
def test_an_update_that_changes_nothing_is_refused(deployer, healthy_deployment):
    response = login(deployer).post(
        f"/deployments/{healthy_deployment.pk}/update/", _update_form(healthy_deployment)
    )
    assert response.status_code == 400 and "Nothing to change" in response.content.decode()
    assert not Operation.objects.filter(kind="service_update").exists()
    assert Deployment.objects.get(pk=healthy_deployment.pk).state == ServiceState.HEALTHY


@pytest.mark.django_db
def test_a_failed_deployment_can_be_retried_as_it_is(deployer, healthy_deployment):
    Deployment.objects.filter(pk=healthy_deployment.pk).update(
        state=ServiceState.FAILED, error="init() raised"
    )
    response = login(deployer).post(
        f"/deployments/{healthy_deployment.pk}/update/", _update_form(healthy_deployment)
    )
    assert response.status_code == 302
    operation = Operation.objects.get(kind="service_update", deployment=healthy_deployment)
    assert operation.params["revision"] == 1 and operation.params["changed"] == []
    deployment = Deployment.objects.get(pk=healthy_deployment.pk)
    # The same revision again, not a new one: nothing about the configuration changed.
    assert deployment.state == ServiceState.TRANSITIONING
    assert deployment.revision == 1 and deployment.revisions.count() == 1
    retry = AuditEvent.objects.filter(action="deployment.update", resource_name="digits-fake").last()
    assert "retry of revision 1" in retry.message


@pytest.mark.django_db
def test_a_deployment_busy_with_an_operation_is_not_updated(deployer, healthy_deployment):
    deployment_update(user=deployer, deployment=healthy_deployment, replicas=2)
    deployment_transition(
        deployment=healthy_deployment, to=ServiceState.HEALTHY
    )  # as if observed, op still running
    with pytest.raises(Refused, match="is busy: update service is queued"):
        deployment_update(user=deployer, deployment=healthy_deployment, replicas=3)
    deployment = Deployment.objects.get(pk=healthy_deployment.pk)
    assert deployment.replicas == 2 and deployment.revision == 2 and deployment.revisions.count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize("state", [ServiceState.TRANSITIONING, ServiceState.DELETING])
def test_only_a_live_or_failed_deployment_can_be_updated(state, deployer, healthy_deployment):
    Deployment.objects.filter(pk=healthy_deployment.pk).update(state=state)
    with pytest.raises(Refused, match=f"is {state}: only a Healthy, Unhealthy or Failed deployment"):
        deployment_update(user=deployer, deployment=healthy_deployment, replicas=2)
    assert not Operation.objects.filter(kind="service_update").exists()


@pytest.mark.django_db
def test_a_gpu_update_on_a_cluster_without_gpu_is_refused(deployer, healthy_deployment):
    response = login(deployer).post(
        f"/deployments/{healthy_deployment.pk}/update/",
        _update_form(healthy_deployment, gpu_enabled="on", gpu_cores=1),
    )
    assert response.status_code == 400 and "has no GPU" in response.content.decode()
    assert Deployment.objects.get(pk=healthy_deployment.pk).revision == 1


@pytest.mark.django_db
def test_rollback_is_an_update_to_an_earlier_revisions_configuration(deployer, healthy_deployment):
    deployment_update(user=deployer, deployment=healthy_deployment, entry_script=EDITED_SCRIPT, replicas=2)
    Operation.objects.update(state=OperationState.SUCCEEDED)
    deployment_transition(deployment=healthy_deployment, to=ServiceState.HEALTHY)
    client = login(deployer)
    page = client.get(f"/deployments/{healthy_deployment.pk}/").content.decode()
    assert "Roll back to 1" in page and "Roll back to 2" not in page  # 2 is the current revision
    response = client.post(
        f"/deployments/{healthy_deployment.pk}/rollback/", {"idempotency_key": "rb", "revision": 1}
    )
    operation = Operation.objects.get(idempotency_key="rb")
    assert (
        response["Location"] == f"/operations/{operation.pk}/"
        and operation.kind == OperationKind.SERVICE_UPDATE
    )
    deployment = Deployment.objects.get(pk=healthy_deployment.pk)
    assert deployment.revision == 3 and deployment.replicas == 1 and "TOP_K = 5" in deployment.entry_script
    assert list(deployment.revisions.order_by("number").values_list("number", "config__replicas")) == [
        (1, 1),
        (2, 2),
        (3, 1),
    ]
    assert AuditEvent.objects.filter(action="deployment.rollback", message="rollback to revision 1").exists()


@pytest.mark.django_db
def test_rollback_to_a_revision_that_does_not_exist_changes_nothing(deployer, healthy_deployment):
    response = login(deployer).post(
        f"/deployments/{healthy_deployment.pk}/rollback/",
        {"idempotency_key": "rb", "revision": 7},
        follow=True,
    )
    assert "has no revision 7" in response.content.decode()
    assert not Operation.objects.filter(kind="service_update").exists()
    with pytest.raises(Refused, match="Nothing to change"):
        deployment_rollback(user=deployer, deployment=healthy_deployment, number=1)


@pytest.mark.django_db
def test_a_viewer_can_neither_update_nor_roll_back(viewer, healthy_deployment):
    client = login(viewer)
    assert client.get(f"/deployments/{healthy_deployment.pk}/update/").status_code == 403
    assert (
        client.post(
            f"/deployments/{healthy_deployment.pk}/update/", _update_form(healthy_deployment, replicas=2)
        ).status_code
        == 403
    )
    assert (
        client.post(
            f"/deployments/{healthy_deployment.pk}/rollback/", {"idempotency_key": "x", "revision": 1}
        ).status_code
        == 403
    )
    assert Deployment.objects.get(pk=healthy_deployment.pk).revision == 1


class ScoringLoop(threading.Thread):
    """A client scoring as fast as it can, one request at a time, recording every answer."""

    def __init__(self, uri: str, key: str) -> None:
        super().__init__(daemon=True)
        self.uri, self.key = uri, key
        self.image = digit_images(7, count=1)[0]
        self.stop = threading.Event()
        self.answers: list[tuple[float, int, int]] = []  # (time, status, number of predictions)
        self.failures: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                response = requests.post(
                    self.uri, data=self.image, timeout=30, headers={"Authorization": f"Bearer {self.key}"}
                )
            except requests.RequestException as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
                continue
            if response.status_code != 200:
                self.failures.append(f"{response.status_code}: {response.text[:200]}")
                continue
            self.answers.append((time.monotonic(), response.status_code, len(response.json()["predictions"])))


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_client_scoring_in_a_loop_sees_no_failed_request_during_an_update(
    deployer, demo_model, celery_processes, stop_local_replicas
):
    celery_processes("worker")
    cluster = ready_cluster(deployer, "local-roll")
    deploy = start_deployment(deployer, cluster, demo_model, name="digits-roll", replicas=1)
    wait_for(lambda: Operation.objects.get(pk=deploy.pk).is_finished, 180, message="the first deployment")
    deploy.refresh_from_db()
    assert deploy.state == OperationState.SUCCEEDED, deploy.error
    deployment = Deployment.objects.get(pk=deploy.deployment_id)
    status_before = control.read_status(_state_dir(deployment))
    old_pid = status_before["replicas"][0]["pid"]

    loop = ScoringLoop(deployment.scoring_uri, decrypt(deployment.primary_key_encrypted))
    loop.start()
    try:
        wait_for(lambda: len(loop.answers) >= 5, 60, message="the client scoring before the update")
        update = deployment_update(
            user=deployer,
            deployment=deployment,
            entry_script=EDITED_SCRIPT,
            environment_yaml=default_environment_yaml(),
        )
        wait_for(lambda: Operation.objects.get(pk=update.pk).is_finished, 180, message="the update operation")
        update.refresh_from_db()
        assert update.state == OperationState.SUCCEEDED, update.error
        # The new entry script answers (top 3 instead of top 5): the rollout happened under the client's feet.
        wait_for(lambda: any(n == 3 for _, _, n in loop.answers), 120, message="the new revision answering")
        served_new = len([n for _, _, n in loop.answers if n == 3])
        wait_for(
            lambda: len([n for _, _, n in loop.answers if n == 3]) >= served_new + 5,
            60,
            message="more answers after the switch",
        )
    finally:
        loop.stop.set()
        loop.join(40)
    assert loop.failures == [], loop.failures[:5]
    answered = [n for _, _, n in loop.answers]
    assert answered.count(5) >= 5 and answered.count(3) >= 5
    first_new = answered.index(3)
    assert all(n == 3 for n in answered[first_new:])  # once switched, only the new replicas answer
    status = control.read_status(_state_dir(deployment))
    assert status["generation"] == 2 and status["retiring"] == []
    assert [r["pid"] for r in status["replicas"]] != [old_pid]
    deployment.refresh_from_db()
    assert deployment.state == ServiceState.HEALTHY and deployment.revision == 2


def _state_dir(deployment: Deployment):
    from django.conf import settings

    return settings.LYNX_LOCAL_DIR / "services" / deployment.name
