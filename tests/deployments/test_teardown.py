"""Tearing down more than one deployment at a time: a cluster with its deployments (one confirmation listing
them; each deletion its own audited operation; the cluster's delete waits for theirs, through the expiry
check's teardown), and several deployments selected on the overview."""

from __future__ import annotations

import re

import pytest
from django.contrib.messages import get_messages
from django.core import mail

from deployments.models import AuditEvent, Cluster, Deployment, Operation, OperationKind
from deployments.services import Refused
from deployments.services.deployments import cluster_delete_with_deployments
from deployments.services.expiry import clusters_expiry_check
from deployments.services.operations import operation_transition
from deployments.services.transitions import deployment_transition
from deployments.states import OperationState, ProvisioningState, ServiceState
from tests.conftest import wait_for
from tests.deployments.conftest import login
from tests.deployments.factories import ready_cluster, start_deployment
from tests.deployments.test_confirmations import healthy, submit

pytestmark = pytest.mark.django_db


def finish_delete(deployment: Deployment) -> None:
    """What a worker does with a deployment's delete: the service goes, the operation succeeds."""
    operation = deployment.operations.get(kind=OperationKind.SERVICE_DELETE)
    operation_transition(operation=operation, to=OperationState.RUNNING)
    deployment_transition(deployment=deployment, to=ServiceState.DELETED, message="deleted")
    operation_transition(operation=operation, to=OperationState.SUCCEEDED)


@pytest.fixture
def cluster(deployer) -> Cluster:
    return ready_cluster(deployer, "local-team")


@pytest.fixture
def two(deployer, teammate, cluster, demo_model) -> list[Deployment]:
    """Two Healthy deployments on the cluster: dana's and theo's."""
    return [
        healthy(start_deployment(deployer, cluster, demo_model, name="digits-a").deployment),
        healthy(start_deployment(teammate, cluster, demo_model, name="digits-b").deployment),
    ]


def test_a_cluster_goes_with_its_deployments_each_deleted_by_its_own_audited_operation_first(
    deployer, cluster, two
):
    teardown = cluster_delete_with_deployments(
        user=deployer, cluster=cluster, expected={d.pk for d in two}, idempotency_key="k1"
    )
    assert teardown.cluster_operation is None and teardown.waiting_for == ["digits-a", "digits-b"]
    deletes = Operation.objects.filter(kind=OperationKind.SERVICE_DELETE).order_by("resource_name")
    assert [(op.resource_name, op.requested_by_name) for op in deletes] == [
        ("digits-a", "dana"),
        ("digits-b", "dana"),
    ]
    assert {op.pk for op in teardown.deletes.operations} == {op.pk for op in deletes}
    for deployment in two:
        deployment.refresh_from_db()
        assert deployment.state == ServiceState.DELETING
        event = AuditEvent.objects.get(action="deployment.delete", resource_id=deployment.pk)
        assert (event.actor_name, event.message) == ("dana", "deleted with cluster local-team")
    asked = AuditEvent.objects.get(action="cluster.delete", resource_id=cluster.pk)
    assert asked.actor_name == "dana" and "digits-a, digits-b" in asked.message

    # The cluster's delete waits while its deployments are going...
    assert clusters_expiry_check()["clusters_deleted"] == 0
    assert not Operation.objects.filter(kind=OperationKind.CLUSTER_DELETE).exists()
    finish_delete(two[0])
    assert clusters_expiry_check()["clusters_deleted"] == 0
    # ... and starts once the last of them is gone, through the expiry check's own teardown.
    finish_delete(two[1])
    assert clusters_expiry_check()["clusters_deleted"] == 1
    cluster.refresh_from_db()
    assert cluster.provisioning_state == ProvisioningState.DELETING
    assert Operation.objects.filter(kind=OperationKind.CLUSTER_DELETE, cluster=cluster).count() == 1
    # Nobody was emailed that the cluster they asked to delete is about to be torn down.
    assert not mail.outbox and not AuditEvent.objects.filter(action="cluster.expiry_warning").exists()


def test_a_cluster_without_deployments_is_deleted_at_once(deployer, cluster):
    teardown = cluster_delete_with_deployments(user=deployer, cluster=cluster, expected=set())
    assert teardown.cluster_operation is not None
    assert teardown.cluster_operation.kind == OperationKind.CLUSTER_DELETE
    cluster.refresh_from_db()
    assert cluster.provisioning_state == ProvisioningState.DELETING
    assert not cluster.auto_teardown  # nothing left for the expiry check to do


def test_a_deployment_added_after_the_confirmation_was_shown_stops_the_teardown(
    deployer, cluster, two, demo_model
):
    late = healthy(start_deployment(deployer, cluster, demo_model, name="digits-late").deployment)
    with pytest.raises(Refused, match="digits-late was deployed to local-team after the confirmation"):
        cluster_delete_with_deployments(user=deployer, cluster=cluster, expected={d.pk for d in two})
    assert not Operation.objects.filter(kind=OperationKind.SERVICE_DELETE).exists()
    assert Deployment.objects.get(pk=late.pk).state == ServiceState.HEALTHY
    cluster.refresh_from_db()
    assert not cluster.auto_teardown and cluster.expires_at is None


def test_a_deployment_busy_now_is_deleted_once_its_operation_has_finished(deployer, cluster, two):
    busy = two[1]
    update = Operation.objects.create(
        kind=OperationKind.SERVICE_UPDATE, deployment=busy, cluster=cluster, resource_name=busy.name
    )
    teardown = cluster_delete_with_deployments(user=deployer, cluster=cluster, expected={d.pk for d in two})
    assert "busy" in teardown.deletes.refused["digits-b"]
    assert Deployment.objects.get(pk=busy.pk).state == ServiceState.HEALTHY

    operation_transition(operation=update, to=OperationState.RUNNING)
    operation_transition(operation=update, to=OperationState.SUCCEEDED)
    assert clusters_expiry_check()["deployments_deleted"] == 1
    assert Deployment.objects.get(pk=busy.pk).state == ServiceState.DELETING


def test_sending_the_teardown_twice_starts_nothing_more(deployer, cluster, two):
    for _ in range(2):
        cluster_delete_with_deployments(user=deployer, cluster=cluster, idempotency_key="same")
    assert Operation.objects.filter(kind=OperationKind.SERVICE_DELETE).count() == 2
    assert AuditEvent.objects.filter(action="cluster.delete").count() == 1
    assert AuditEvent.objects.filter(action="deployment.delete").count() == 2


def test_a_cluster_still_provisioning_cannot_be_torn_down(deployer):
    from deployments.services.clusters import cluster_create

    creating = cluster_create(user=deployer, name="new-1").cluster
    with pytest.raises(Refused, match="still being provisioned"):
        cluster_delete_with_deployments(user=deployer, cluster=creating)


def test_the_cluster_page_lists_its_deployments_on_one_confirmation_and_tears_down(deployer, cluster, two):
    client = login(deployer)
    page = client.get(f"/clusters/{cluster.pk}/").content.decode()
    assert f'href="/clusters/{cluster.pk}/delete/confirm/">Delete cluster and its 2 deployments</a>' in page
    text, response = submit(client, f"/clusters/{cluster.pk}/delete/confirm/")
    assert "Delete cluster local-team and its 2 deployments?" in text
    assert re.findall(r'data-deployment="([^"]+)"', text) == ["digits-a", "digits-b"]
    assert "Some of them belong to someone else: theo." in text
    assert response.status_code == 302 and response["Location"] == f"/clusters/{cluster.pk}/"
    assert Operation.objects.filter(kind=OperationKind.SERVICE_DELETE).count() == 2
    assert "Deleting digits-a, digits-b first" in " ".join(
        str(m) for m in get_messages(response.wsgi_request)
    )
    page = client.get(f"/clusters/{cluster.pk}/").content.decode()
    assert 'id="teardown"' in page and "Delete cluster and its" not in page


def test_a_cluster_without_deployments_keeps_its_dialog_and_gets_a_plain_confirmation(deployer, cluster):
    client = login(deployer)
    page = client.get(f"/clusters/{cluster.pk}/").content.decode()
    assert 'class="inline needs-js" data-once data-confirm="Delete cluster local-team?"' in page
    assert (
        f'<a class="button danger" href="/clusters/{cluster.pk}/delete/confirm/">Delete cluster</a>' in page
    )
    text, response = submit(client, f"/clusters/{cluster.pk}/delete/confirm/")
    assert "Delete cluster local-team?" in text and "nothing runs on it any more" in text
    operation = Operation.objects.get(kind=OperationKind.CLUSTER_DELETE)
    assert response["Location"] == f"/operations/{operation.pk}/"


# --- the overview's selection ----------------------------------------------------------------------------


def test_the_overview_offers_deployers_a_checkbox_per_deployment_and_viewers_none(deployer, viewer, two):
    page = login(deployer).get("/").content.decode()
    boxes = re.findall(
        r'<input type="checkbox" name="deployments" value="(\d+)" form="delete-selected"', page
    )
    assert sorted(int(pk) for pk in boxes) == sorted(d.pk for d in two)
    assert 'id="delete-selected"' in page and 'method="get"' in page
    viewer_page = login(viewer).get("/").content.decode()
    assert 'name="deployments"' not in viewer_page and "Delete selected" not in viewer_page


def test_several_deployments_are_deleted_after_one_confirmation_listing_them(deployer, two, demo_model):
    client = login(deployer)
    kept = healthy(start_deployment(deployer, two[0].cluster, demo_model, name="digits-kept").deployment)
    query = "&".join(f"deployments={d.pk}" for d in two)
    text, response = submit(client, f"/deployments/delete/confirm/?{query}")
    assert "Delete 2 deployments?" in text
    assert re.findall(r'data-deployment="([^"]+)"', text) == ["digits-a", "digits-b"]
    assert response.status_code == 302 and response["Location"] == "/#deployments"
    deletes = Operation.objects.filter(kind=OperationKind.SERVICE_DELETE).order_by("resource_name")
    assert [op.resource_name for op in deletes] == ["digits-a", "digits-b"]
    assert AuditEvent.objects.filter(action="deployment.delete", actor_name="dana").count() == 2
    assert Deployment.objects.get(pk=kept.pk).state == ServiceState.HEALTHY
    assert Cluster.objects.get(pk=two[0].cluster_id).provisioning_state == ProvisioningState.SUCCEEDED


def test_one_deployment_selected_goes_straight_to_its_operation(deployer, two):
    _, response = submit(login(deployer), f"/deployments/delete/confirm/?deployments={two[0].pk}")
    operation = Operation.objects.get(kind=OperationKind.SERVICE_DELETE)
    assert response["Location"] == f"/operations/{operation.pk}/"


def test_nothing_selected_goes_back_to_the_overview_saying_so(deployer, two):
    response = login(deployer).get("/deployments/delete/confirm/")
    assert response.status_code == 302 and response["Location"] == "/#deployments"
    assert "Select the deployments to delete first" in str(list(get_messages(response.wsgi_request))[0])


def test_a_selection_sent_twice_deletes_each_deployment_once(deployer, two):
    client = login(deployer)
    data = {"deployments": [str(d.pk) for d in two], "idempotency_key": "twice"}
    first = client.post("/deployments/delete/", data)
    second = client.post("/deployments/delete/", data)
    assert first.status_code == second.status_code == 302
    assert Operation.objects.filter(kind=OperationKind.SERVICE_DELETE).count() == 2
    assert AuditEvent.objects.filter(action="deployment.delete").count() == 2


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_real_workers_delete_the_deployments_and_then_the_cluster(
    monkeypatch, deployer, demo_model, celery_processes, stop_local_replicas
):
    monkeypatch.setenv("LYNX_EXPIRY_CHECK_SECONDS", "1")  # read by beat's schedule, in its own process
    cluster = ready_cluster(deployer, "local-real")
    deployments = [
        healthy(start_deployment(deployer, cluster, demo_model, name=f"digits-real-{n}").deployment)
        for n in (1, 2)
    ]
    cluster_delete_with_deployments(user=deployer, cluster=cluster, expected={d.pk for d in deployments})
    celery_processes("worker")
    celery_processes("beat")
    wait_for(
        lambda: Cluster.objects.get(pk=cluster.pk).provisioning_state == ProvisioningState.DELETED,
        timeout=120,
        message="the cluster to be deleted after its deployments",
    )
    deletes = list(Operation.objects.filter(kind=OperationKind.SERVICE_DELETE))
    assert len(deletes) == 2 and all(op.state == OperationState.SUCCEEDED for op in deletes)
    cluster_delete = Operation.objects.get(kind=OperationKind.CLUSTER_DELETE)
    assert cluster_delete.state == OperationState.SUCCEEDED
    assert cluster_delete.created_at >= max(op.finished_at for op in deletes)  # it waited for them
    assert set(Deployment.objects.values_list("state", flat=True)) == {ServiceState.DELETED}
