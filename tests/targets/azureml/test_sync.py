"""The periodic sync: what is in Azure but not in Lynx, and what Lynx believes exists but Azure does not."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from deployments.models import AuditEvent, ExternalResource
from targets.azureml.services.sync import azure_sync_workspace
from tests.targets.azureml.conftest import provision, unique
from workers.schedule import beat_schedule
from workers.tasks import sync_azure_workspace

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")]


@pytest.fixture
def clean_emulator(azure_emulator):
    """Only this test's resources in the workspace (the emulator outlives each test's database)."""
    azure_emulator.reset()
    return azure_emulator


def test_sync_finds_a_cluster_created_behind_lynxs_back(
    client, viewer, deployer, workspace, clean_emulator
) -> None:
    ours = provision(deployer, workspace)
    portal = unique("portal")
    clean_emulator.create_cluster_directly(portal, vm_size="Standard_NC8as_T4_v3", agent_count=2)

    result = azure_sync_workspace(workspace_id=workspace.pk)

    assert result.ok and result.computes == 2
    finding = ExternalResource.objects.get()
    assert (finding.finding, finding.kind, finding.name, finding.compute_type, finding.state) == (
        "unmanaged",
        "compute",
        portal,
        "AKS",
        "Succeeded",
    )
    assert (finding.vm_size, finding.node_count, finding.resolved_at) == ("Standard_NC8as_T4_v3", 2, None)
    event = AuditEvent.objects.get(action="azure.unmanaged")
    assert event.actor_name == "system" and event.resource_name == portal
    assert "exists in Azure (Succeeded) but was not created by Lynx" in event.message
    assert not ExternalResource.objects.filter(name=ours.name).exists()
    workspace.refresh_from_db()
    assert workspace.last_synced_at is not None and workspace.last_sync_error == ""

    # The next pass sees the same cluster: no second row, no second audit event.
    assert azure_sync_workspace(workspace_id=workspace.pk).found == []
    assert (
        ExternalResource.objects.count() == 1
        and AuditEvent.objects.filter(action="azure.unmanaged").count() == 1
    )

    client.force_login(viewer)
    page = client.get(reverse("workspace_list")).content.decode()
    assert portal in page and "2 × Standard_NC8as_T4_v3" in page
    assert "$1.50/h" in page  # 2 nodes × $0.752/h, by the price list

    # Someone deletes it in the portal: the finding is resolved and that is on the record too.
    del clean_emulator.computes[portal]
    result = azure_sync_workspace(workspace_id=workspace.pk)
    assert result.resolved == [f"Compute target {portal} is no longer in Azure"]
    assert ExternalResource.objects.get().resolved_at is not None
    assert AuditEvent.objects.filter(action="azure.unmanaged_resolved", resource_name=portal).count() == 1


def test_sync_finds_what_lynx_believes_exists_but_azure_does_not(deployer, workspace, clean_emulator) -> None:
    cluster = provision(deployer, workspace)
    del clean_emulator.computes[cluster.name]  # deleted in the portal, behind Lynx's back

    azure_sync_workspace(workspace_id=workspace.pk)

    finding = ExternalResource.objects.get()
    assert (finding.finding, finding.kind, finding.name, finding.cluster) == (
        "missing",
        "compute",
        cluster.name,
        cluster,
    )
    event = AuditEvent.objects.get(action="azure.missing")
    assert (event.resource_type, event.resource_id, event.actor_name) == ("cluster", cluster.pk, "system")
    assert event.message == f"Compute target {cluster.name} is Succeeded in Lynx but Azure does not list it"


def test_a_cluster_lynx_is_still_creating_is_not_reported(deployer, workspace, clean_emulator) -> None:
    from deployments.services import cluster_create

    cluster_create(
        user=deployer, name=unique("new"), backend="azureml", workspace=workspace, vm_size="Standard_D4s_v5"
    )

    result = azure_sync_workspace(workspace_id=workspace.pk)

    assert result.ok and result.found == [] and not ExternalResource.objects.exists()


def test_a_sync_azure_refuses_changes_nothing_and_says_why(deployer, workspace, clean_emulator) -> None:
    clean_emulator.create_cluster_directly(unique("portal"))
    clean_emulator.deny_access()

    result = sync_azure_workspace(workspace.pk)  # the task, run here

    assert result == {"ok": False, "found": 0, "resolved": 0}
    workspace.refresh_from_db()
    assert "AuthorizationFailed" in workspace.last_sync_error and workspace.last_synced_at is None
    assert not ExternalResource.objects.exists()


def test_the_sync_is_on_the_beat_schedule() -> None:
    entry = beat_schedule()["sync-azure"]

    assert entry["task"] == "workers.tasks.sync_azure" and float(entry["schedule"]) > 0


def test_unmanaged_cost_uses_the_price_table(admin_user, workspace, clean_emulator) -> None:
    from deployments.services.prices import vm_price_create
    from targets.azureml.selectors import external_resources_open, unmanaged_cost_per_hour

    vm_price_create(
        user=admin_user, vm_size="Standard_NC8as_T4_v3", price_per_hour=Decimal("1.0"), gpu_count=1
    )
    clean_emulator.create_cluster_directly(unique("portal"), vm_size="Standard_NC8as_T4_v3", agent_count=3)
    azure_sync_workspace(workspace_id=workspace.pk)

    assert unmanaged_cost_per_hour(external_resources_open(workspace)) == Decimal("3.0")


def test_the_periodic_task_hands_each_workspace_to_its_own_task(workspace, broker) -> None:
    import redis

    from workers.tasks import sync_azure

    assert sync_azure() == 1
    assert redis.Redis.from_url(broker).llen("celery") == 1  # one sync_azure_workspace task queued


def test_sync_compares_managed_online_endpoints_too(deployer, workspace, clean_emulator, tiny_model) -> None:
    from azure.ai.ml import MLClient
    from azure.ai.ml.entities import ManagedOnlineEndpoint
    from azure.identity import ClientSecretCredential

    from tests.targets.azureml.test_managed_endpoints import deploy, managed

    cluster = managed(deployer, workspace, vm_size="Standard_DS3_v2").cluster
    ours, _ = deploy(deployer, cluster, tiny_model, replicas=2)
    emu = clean_emulator
    ml = MLClient(ClientSecretCredential(**emu.credential_kwargs()), **emu.mlclient_kwargs())
    notebook = unique("nb")
    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name=notebook, auth_mode="key")).result()

    result = azure_sync_workspace(workspace_id=workspace.pk)

    assert result.ok and result.services == 2
    finding = ExternalResource.objects.get()
    assert (finding.finding, finding.kind, finding.name, finding.compute_type) == (
        "unmanaged",
        "service",
        notebook,
        "Managed online endpoint",
    )

    # Deleted behind Lynx's back: Lynx's managed deployment is reported missing.
    ml.online_endpoints.begin_delete(name=ours.name).result()
    azure_sync_workspace(workspace_id=workspace.pk)
    missing = ExternalResource.objects.get(finding="missing")
    assert (missing.kind, missing.name, missing.deployment) == ("service", ours.name, ours)
