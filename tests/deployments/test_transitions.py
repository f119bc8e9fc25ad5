import pytest

from deployments.models import AuditEvent, Cluster
from deployments.services import Refused, cluster_create, cluster_delete
from deployments.services.transitions import TransitionError, cluster_transition
from deployments.states import CLUSTER_TRANSITIONS, SERVICE_TRANSITIONS, ProvisioningState, ServiceState
from tests.deployments.factories import ready_cluster

pytestmark = pytest.mark.django_db


def test_state_machines_use_azures_words_and_deleted_is_final():
    assert set(CLUSTER_TRANSITIONS) == {"Creating", "Succeeded", "Failed", "Deleting", "Deleted"}
    assert set(SERVICE_TRANSITIONS) == {
        "Transitioning",
        "Healthy",
        "Unhealthy",
        "Failed",
        "Deleting",
        "Deleted",
    }
    assert CLUSTER_TRANSITIONS[ProvisioningState.DELETED] == frozenset()
    assert SERVICE_TRANSITIONS[ServiceState.DELETED] == frozenset()


def test_transition_not_in_the_machine_is_refused_and_changes_nothing(deployer):
    cluster = cluster_create(user=deployer, name="gpu-a").cluster
    events = AuditEvent.objects.count()
    with pytest.raises(TransitionError, match="cannot go from Creating to Deleted"):
        cluster_transition(cluster=cluster, to=ProvisioningState.DELETED)
    assert Cluster.objects.get(pk=cluster.pk).provisioning_state == ProvisioningState.CREATING
    assert AuditEvent.objects.count() == events


def test_transition_from_a_stale_copy_loses_the_race(deployer):
    cluster = cluster_create(user=deployer, name="gpu-a").cluster
    stale = Cluster.objects.get(pk=cluster.pk)
    cluster_transition(cluster=cluster, to=ProvisioningState.SUCCEEDED)
    with pytest.raises(TransitionError, match="no longer Creating"):
        cluster_transition(cluster=stale, to=ProvisioningState.FAILED)
    assert Cluster.objects.get(pk=cluster.pk).provisioning_state == ProvisioningState.SUCCEEDED


def test_each_transition_appends_an_audit_event_with_before_and_after(deployer):
    cluster = cluster_create(user=deployer, name="gpu-a").cluster
    cluster_transition(cluster=cluster, to=ProvisioningState.SUCCEEDED, actor=deployer)
    event = AuditEvent.objects.filter(action="cluster.state").latest("id")
    assert (event.actor_name, event.resource_name) == ("dana", "gpu-a")
    assert event.before == {"provisioning_state": "Creating"}
    assert event.after["provisioning_state"] == "Succeeded"


def test_deleting_a_cluster_twice_is_refused(deployer):
    cluster = ready_cluster(deployer)
    cluster_delete(user=deployer, cluster=cluster)
    with pytest.raises(Refused, match="already deleting"):
        cluster_delete(user=deployer, cluster=cluster)
