import pytest
from django.db import transaction

from deployments.crypto import decrypt
from deployments.models import AuditEvent, Cluster, Deployment, Operation
from deployments.services import Refused, cluster_create, deployment_delete
from deployments.states import OperationState, ServiceState
from tests.deployments.factories import ready_cluster, start_deployment

pytestmark = pytest.mark.django_db


def test_create_records_resource_operation_and_audit_and_dispatches_on_commit(
    deployer, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        operation = cluster_create(user=deployer, name="local-a")
    assert operation.state == OperationState.QUEUED
    assert operation.cluster.provisioning_state == "Creating"
    assert operation.requested_by_name == "dana"
    assert AuditEvent.objects.filter(
        action="cluster.create", resource_name="local-a", actor_name="dana"
    ).exists()
    assert len(callbacks) == 1  # the task goes out only once the rows are committed


def test_nothing_is_dispatched_when_the_transaction_rolls_back(deployer, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        with pytest.raises(RuntimeError), transaction.atomic():
            cluster_create(user=deployer, name="local-a")
            raise RuntimeError("boom")
    assert callbacks == []
    assert not Cluster.objects.exists() and not Operation.objects.exists() and not AuditEvent.objects.exists()


def test_the_same_form_submitted_twice_starts_one_operation(deployer):
    first = cluster_create(user=deployer, name="local-a", idempotency_key="k1")
    second = cluster_create(user=deployer, name="local-a", idempotency_key="k1")
    assert first.pk == second.pk
    assert Cluster.objects.count() == 1 and Operation.objects.count() == 1


def test_a_second_cluster_with_a_live_name_is_refused(deployer):
    cluster_create(user=deployer, name="local-a")
    with pytest.raises(Refused, match="already exists"):
        cluster_create(user=deployer, name="local-a")
    assert Cluster.objects.count() == 1


def test_deploying_a_gpu_service_to_a_cluster_without_gpu_is_refused(deployer, demo_model):
    cluster = ready_cluster(deployer, gpu_count=0)
    with pytest.raises(Refused, match="has no GPU"):
        start_deployment(deployer, cluster, demo_model, gpu_enabled=True, gpu_cores=1)
    assert not Deployment.objects.exists()


def test_local_deployment_keys_are_encrypted_at_rest(deployer, demo_model):
    cluster = ready_cluster(deployer)
    deployment = start_deployment(deployer, cluster, demo_model).deployment
    primary = decrypt(deployment.primary_key_encrypted)
    assert len(primary) >= 32
    assert primary not in deployment.primary_key_encrypted
    assert primary != decrypt(deployment.secondary_key_encrypted)
    for event in AuditEvent.objects.all():
        assert primary not in str(event.before) + str(event.after) + event.message


def test_acting_on_a_deployment_mid_operation_is_refused(deployer, demo_model):
    cluster = ready_cluster(deployer)
    deployment = start_deployment(deployer, cluster, demo_model).deployment
    with pytest.raises(Refused, match="busy: deploy service is queued"):
        deployment_delete(user=deployer, deployment=deployment)
    deployment.refresh_from_db()
    assert deployment.state == ServiceState.TRANSITIONING
    assert Operation.objects.filter(deployment=deployment).count() == 1


def test_a_cluster_with_live_deployments_cannot_be_deleted(deployer, demo_model):
    from deployments.services import cluster_delete

    cluster = ready_cluster(deployer)
    start_deployment(deployer, cluster, demo_model, name="svc-one")
    with pytest.raises(Refused, match="Delete the deployments on local-1 first: svc-one"):
        cluster_delete(user=deployer, cluster=cluster)
