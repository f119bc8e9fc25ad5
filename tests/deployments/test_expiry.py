"""Nothing forgotten running: warnings ahead of a cluster's expiry or idle limit, automatic teardown
through the ordinary services (as the system, with the reason), and extending or cancelling."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from deployments.models import AuditEvent, Cluster, Deployment, Operation, OperationKind
from deployments.services.clusters import cluster_create
from deployments.services.expiry import (
    cluster_expiry_cancel,
    cluster_expiry_extend,
    clusters_expiry_check,
    expiry_status,
)
from deployments.services.operations import Refused, operation_transition
from deployments.services.transitions import deployment_transition
from deployments.states import OperationState, ProvisioningState, ServiceState
from tests.deployments.factories import ready_cluster, start_deployment

pytestmark = pytest.mark.django_db


def set_rule(cluster: Cluster, **fields) -> Cluster:
    Cluster.objects.filter(pk=cluster.pk).update(**fields)
    cluster.refresh_from_db()
    return cluster


def finish(operation: Operation, **deployment_fields) -> None:
    """What a worker would do with a delete operation: the service goes, the operation succeeds."""
    operation_transition(operation=operation, to=OperationState.RUNNING)
    if operation.deployment_id:
        deployment_transition(deployment=operation.deployment, to=ServiceState.DELETED, message="deleted")
    operation_transition(operation=operation, to=OperationState.SUCCEEDED)


def healthy(deployment: Deployment) -> Deployment:
    operation = deployment.operations.get()
    operation_transition(operation=operation, to=OperationState.RUNNING)
    operation_transition(operation=operation, to=OperationState.SUCCEEDED)
    return deployment_transition(deployment=deployment, to=ServiceState.HEALTHY)


@pytest.fixture
def cluster(deployer):
    return ready_cluster(deployer, "local-gpu")


def test_the_earlier_of_the_expiry_date_and_the_idle_limit_decides(cluster):
    now = timezone.now()
    set_rule(cluster, expires_at=now + timedelta(hours=5), idle_teardown_hours=2)
    status = expiry_status(
        cluster, last_activity=now - timedelta(minutes=30), now=now, window=timedelta(hours=1)
    )
    assert status.deadline == now + timedelta(minutes=90)
    assert status.reason.startswith("idle for 2 hours") and not status.warn and not status.due
    later = expiry_status(
        cluster,
        last_activity=now - timedelta(minutes=30),
        now=now + timedelta(minutes=31),
        window=timedelta(hours=1),
    )
    assert later.warn and not later.due


def test_the_owner_is_warned_once_ahead_of_time_by_audit_and_email(cluster, deployer):
    set_rule(cluster, expires_at=timezone.now() + timedelta(minutes=30), auto_teardown=True)
    assert clusters_expiry_check()["warned"] == 1
    assert clusters_expiry_check()["warned"] == 0  # once per deadline
    cluster.refresh_from_db()
    assert cluster.expiry_warned_at is not None
    assert cluster.provisioning_state == ProvisioningState.SUCCEEDED  # a warning, not a teardown
    event = AuditEvent.objects.get(action="cluster.expiry_warning")
    assert event.actor_name == "system" and "local-gpu will be torn down at" in event.message
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == [deployer.email] and "local-gpu" in mail.outbox[0].subject
    assert "Extend or cancel" in mail.outbox[0].body


def test_no_warning_far_from_the_deadline(cluster):
    set_rule(cluster, expires_at=timezone.now() + timedelta(hours=3), auto_teardown=True)
    assert clusters_expiry_check() == {
        "checked": 1,
        "warned": 0,
        "deployments_deleted": 0,
        "clusters_deleted": 0,
    }
    assert not mail.outbox


def test_the_warning_window_is_a_setting(cluster, settings):
    settings.LYNX_EXPIRY_WARN_MINUTES = 240
    set_rule(cluster, expires_at=timezone.now() + timedelta(hours=3))
    assert clusters_expiry_check()["warned"] == 1


def test_extending_after_a_warning_warns_again_before_the_new_deadline(cluster, deployer):
    set_rule(cluster, expires_at=timezone.now() + timedelta(minutes=30), auto_teardown=True)
    clusters_expiry_check()
    cluster_expiry_extend(user=deployer, cluster=cluster, hours=4)
    assert clusters_expiry_check()["warned"] == 0
    clusters_expiry_check(now=timezone.now() + timedelta(hours=4))
    assert AuditEvent.objects.filter(action="cluster.expiry_warning").count() == 2


def test_without_automatic_teardown_an_expired_cluster_is_only_warned_about(cluster, deployer, demo_model):
    healthy(start_deployment(deployer, cluster, demo_model).deployment)
    set_rule(cluster, expires_at=timezone.now() - timedelta(minutes=1), auto_teardown=False)
    counts = clusters_expiry_check()
    assert counts["warned"] == 1 and counts["deployments_deleted"] == counts["clusters_deleted"] == 0
    assert "automatic teardown is off" in AuditEvent.objects.get(action="cluster.expiry_warning").message
    assert Deployment.objects.get().state == ServiceState.HEALTHY


def test_an_expired_cluster_is_torn_down_deployments_first_then_the_cluster(cluster, deployer, demo_model):
    deployment = healthy(start_deployment(deployer, cluster, demo_model).deployment)
    expired_at = timezone.now() - timedelta(minutes=1)
    set_rule(cluster, expires_at=expired_at, auto_teardown=True)

    first = clusters_expiry_check()
    assert first["deployments_deleted"] == 1 and first["clusters_deleted"] == 0  # the cluster waits
    deployment.refresh_from_db()
    assert deployment.state == ServiceState.DELETING
    delete_op = Operation.objects.get(kind=OperationKind.SERVICE_DELETE)
    assert delete_op.requested_by is None and delete_op.requested_by_name == "system"
    assert clusters_expiry_check()["deployments_deleted"] == 0  # nothing twice while it is going

    finish(delete_op)
    assert clusters_expiry_check()["clusters_deleted"] == 1
    cluster.refresh_from_db()
    assert cluster.provisioning_state == ProvisioningState.DELETING
    assert Operation.objects.get(kind=OperationKind.CLUSTER_DELETE).requested_by_name == "system"

    reason = f"automatic teardown: expired at {expired_at:%Y-%m-%d %H:%M} UTC"
    for action, name in (("deployment.delete", "digits-demo"), ("cluster.delete", "local-gpu")):
        event = AuditEvent.objects.get(action=action)
        assert (event.actor_name, event.actor_id, event.resource_name) == ("system", None, name)
        assert event.message == reason
    assert AuditEvent.objects.filter(
        action="cluster.state", message=reason, after__provisioning_state="Deleting"
    ).exists()


def test_an_idle_cluster_is_torn_down_saying_how_long_it_was_idle(deployer):
    cluster = ready_cluster(deployer, "idle-1")
    set_rule(
        cluster, idle_teardown_hours=3, auto_teardown=True, created_at=timezone.now() - timedelta(hours=5)
    )
    assert clusters_expiry_check()["clusters_deleted"] == 1
    event = AuditEvent.objects.get(action="cluster.delete")
    assert event.actor_name == "system"
    assert event.message.startswith("automatic teardown: idle for 3 hours (no scoring request since")


def test_a_recent_scoring_request_keeps_an_idle_cluster(cluster, deployer, demo_model):
    deployment = healthy(start_deployment(deployer, cluster, demo_model).deployment)
    long_ago = timezone.now() - timedelta(hours=10)
    set_rule(cluster, idle_teardown_hours=3, auto_teardown=True, created_at=long_ago)
    Deployment.objects.filter(pk=deployment.pk).update(created_at=long_ago, last_scored_at=timezone.now())
    assert clusters_expiry_check() == {
        "checked": 1,
        "warned": 0,
        "deployments_deleted": 0,
        "clusters_deleted": 0,
    }
    Deployment.objects.filter(pk=deployment.pk).update(last_scored_at=long_ago)
    assert clusters_expiry_check()["deployments_deleted"] == 1


def test_a_cluster_still_provisioning_is_left_for_a_later_pass(deployer):
    cluster = cluster_create(
        user=deployer, name="new-1", expires_at=timezone.now() - timedelta(minutes=1), auto_teardown=True
    ).cluster
    assert cluster.provisioning_state == ProvisioningState.CREATING
    assert clusters_expiry_check()["clusters_deleted"] == 0


def test_extending_moves_the_expiry_from_where_it_was_and_is_audited(cluster, deployer):
    expires = timezone.now() + timedelta(minutes=20)
    set_rule(cluster, expires_at=expires, auto_teardown=True, expiry_warned_at=timezone.now())
    cluster = cluster_expiry_extend(user=deployer, cluster=cluster, hours=4)
    assert cluster.expires_at == expires + timedelta(hours=4)
    assert cluster.expiry_warned_at is None
    event = AuditEvent.objects.get(action="cluster.expiry_extend")
    assert event.actor_name == "dana" and event.message == "extended by 4 h"
    assert event.before["expires_at"] == expires.isoformat()
    assert event.after["expires_at"] == (expires + timedelta(hours=4)).isoformat()


def test_extending_a_past_expiry_counts_from_now(cluster, deployer):
    set_rule(cluster, expires_at=timezone.now() - timedelta(hours=2))
    before = timezone.now()
    cluster = cluster_expiry_extend(user=deployer, cluster=cluster, hours=1)
    assert before + timedelta(hours=1) <= cluster.expires_at <= timezone.now() + timedelta(hours=1)


def test_extending_an_idle_rule_postpones_the_idle_teardown(deployer):
    cluster = ready_cluster(deployer, "idle-2")
    set_rule(
        cluster, idle_teardown_hours=3, auto_teardown=True, created_at=timezone.now() - timedelta(hours=5)
    )
    cluster = cluster_expiry_extend(user=deployer, cluster=cluster, hours=2)
    assert cluster.idle_teardown_hours == 3  # the rule stays; its deadline moves
    assert clusters_expiry_check()["clusters_deleted"] == 0
    assert clusters_expiry_check(now=timezone.now() + timedelta(hours=2, minutes=1))["clusters_deleted"] == 1


def test_cancelling_removes_the_expiry_and_the_idle_rule_and_is_audited(cluster, deployer):
    set_rule(
        cluster, expires_at=timezone.now() - timedelta(minutes=5), idle_teardown_hours=1, auto_teardown=True
    )
    cluster = cluster_expiry_cancel(user=deployer, cluster=cluster)
    assert (cluster.expires_at, cluster.idle_teardown_hours, cluster.auto_teardown) == (None, None, False)
    event = AuditEvent.objects.get(action="cluster.expiry_cancel")
    assert event.before["auto_teardown"] is True and event.after["expires_at"] is None
    assert clusters_expiry_check()["checked"] == 0
    with pytest.raises(Refused, match="no expiry to cancel"):
        cluster_expiry_cancel(user=deployer, cluster=cluster)


def test_a_deleted_cluster_cannot_be_extended(cluster, deployer):
    set_rule(cluster, expires_at=timezone.now(), provisioning_state=ProvisioningState.DELETED)
    with pytest.raises(Refused, match="already deleted"):
        cluster_expiry_extend(user=deployer, cluster=cluster, hours=1)
    assert not AuditEvent.objects.filter(action="cluster.expiry_extend").exists()


@pytest.mark.parametrize("hours", [0, -1, 24 * 90 + 1])
def test_extending_by_a_silly_number_of_hours_is_refused(cluster, deployer, hours):
    set_rule(cluster, expires_at=timezone.now())
    with pytest.raises(Refused, match="Extend by 1 to"):
        cluster_expiry_extend(user=deployer, cluster=cluster, hours=hours)


def test_a_cluster_without_a_rule_has_nothing_to_extend(cluster, deployer):
    with pytest.raises(Refused, match="no expiry to extend"):
        cluster_expiry_extend(user=deployer, cluster=cluster, hours=1)
