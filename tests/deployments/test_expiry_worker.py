"""Done when: an expired cluster is torn down on its own, with the audit log saying why. Real Celery
worker and beat processes, a real local deployment of the demo model."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from deployments.models import AuditEvent, Cluster, Deployment
from deployments.services.clusters import cluster_create
from deployments.states import ProvisioningState, ServiceState
from tests.conftest import wait_for
from tests.deployments.factories import start_deployment

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_beat_tears_down_an_expired_cluster_deployments_first_saying_why(
    monkeypatch, deployer, demo_model, celery_processes, stop_local_replicas
):
    monkeypatch.setenv("LYNX_EXPIRY_CHECK_SECONDS", "1")  # read by beat's schedule, in its own process
    celery_processes("worker")
    cluster = cluster_create(
        user=deployer, name="forgotten", expires_at=timezone.now() + timedelta(hours=8), auto_teardown=True
    ).cluster
    wait_for(
        lambda: Cluster.objects.get(pk=cluster.pk).provisioning_state == ProvisioningState.SUCCEEDED,
        message="the cluster to be provisioned",
    )
    deployment = start_deployment(
        deployer, Cluster.objects.get(pk=cluster.pk), demo_model, name="forgotten-svc"
    ).deployment
    wait_for(
        lambda: Deployment.objects.get(pk=deployment.pk).state == ServiceState.HEALTHY,
        timeout=180,
        message="the deployment to be Healthy",
    )

    # Eight hours later (the clock is the one thing a test cannot wait for):
    expired_at = timezone.now() - timedelta(seconds=1)
    Cluster.objects.filter(pk=cluster.pk).update(expires_at=expired_at)
    celery_processes("beat")

    wait_for(
        lambda: Cluster.objects.get(pk=cluster.pk).provisioning_state == ProvisioningState.DELETED,
        timeout=120,
        message="the expired cluster to be torn down",
    )
    assert Deployment.objects.get(pk=deployment.pk).state == ServiceState.DELETED
    reason = f"automatic teardown: expired at {expired_at:%Y-%m-%d %H:%M} UTC"
    teardown = list(
        AuditEvent.objects.filter(action__in=("deployment.delete", "cluster.delete"))
        .order_by("id")
        .values_list("actor_name", "action", "resource_name", "message")
    )
    assert teardown == [
        ("system", "deployment.delete", "forgotten-svc", reason),
        ("system", "cluster.delete", "forgotten", reason),
    ]
    assert AuditEvent.objects.filter(action="cluster.expiry_warning", resource_name="forgotten").count() == 1
