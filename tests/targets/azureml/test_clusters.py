"""AKS clusters from the dashboard: the form's Azure rules, provisioning through the step engine, failures."""

from __future__ import annotations

import time

import pytest
from django.urls import reverse

from deployments.backends.base import ClusterSpec
from deployments.models import AuditEvent, Cluster, Operation
from deployments.services import cluster_create, cluster_delete
from deployments.services.specs import backend_for, cluster_spec
from deployments.states import ProvisioningState
from tests.azure_emulator import AzureEmulator
from tests.targets.azureml.conftest import CPU_SIZE, GPU_SIZE, lines_of, run_inline, unique

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")]


def cluster_form(workspace, **overrides) -> dict:
    return {
        "workspace": workspace.pk,
        "mode": "create",
        "name": unique("gpu"),
        "vm_size": GPU_SIZE,
        "node_count": 1,
        "cluster_purpose": "DevTest",
        "location": "",
        "attach_resource_id": "",
        "idempotency_key": unique("k"),
        **overrides,
    }


def azure_gone(emu: AzureEmulator, name: str, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        emu.tick()
        if name not in emu.computes:
            return True
        time.sleep(0.1)
    return False


def test_the_form_lists_current_sizes_with_gpus_marked_and_prices(client, deployer, workspace) -> None:
    client.force_login(deployer)

    page = client.get(reverse("azure_cluster_new")).content.decode()

    assert "🟢 Standard_NC4as_T4_v3 — GPU 1× NVIDIA T4, 4 vCPU, 28 GB, $0.526/h per node" in page
    assert "Standard_D4s_v5 — no GPU" in page
    assert 'value="Standard_NC6"' not in page  # retired in 2023: not offered


def test_a_retired_size_is_refused_naming_a_current_one(client, deployer, workspace, azure_emulator) -> None:
    client.force_login(deployer)
    data = cluster_form(workspace, vm_size="Standard_NC6")

    response = client.post(reverse("azure_cluster_new"), data)

    assert response.status_code == 400
    text = response.content.decode()
    assert "Standard_NC6 (NVIDIA Tesla K80) was retired on 6 September 2023" in text
    assert "Use Standard_NC4as_T4_v3 (1× NVIDIA T4) instead." in text
    assert not Cluster.objects.exists() and data["name"] not in azure_emulator.computes


def test_fast_prod_under_12_vcpus_is_refused_with_how_many_nodes_it_needs(
    client, deployer, workspace
) -> None:
    client.force_login(deployer)

    response = client.post(
        reverse("azure_cluster_new"), cluster_form(workspace, node_count=2, cluster_purpose="FastProd")
    )

    assert response.status_code == 400
    text = response.content.decode()
    assert "FastProd clusters need at least 12 vCPUs" in text and "at least 3 nodes" in text
    assert not Cluster.objects.exists()


def test_a_bad_name_and_a_bad_resource_id_are_refused(client, deployer, workspace) -> None:
    client.force_login(deployer)

    bad_name = client.post(reverse("azure_cluster_new"), cluster_form(workspace, name="x"))
    bad_attach = client.post(
        reverse("azure_cluster_new"), cluster_form(workspace, mode="attach", attach_resource_id="/nope")
    )

    assert "3 to 24 letters, digits or hyphens" in bad_name.content.decode()
    assert "That is not an AKS resource ID" in bad_attach.content.decode()
    assert not Cluster.objects.exists()


def test_a_gpu_cluster_is_provisioned_showing_azures_states_and_gpus_per_node(
    client, deployer, workspace, azure_emulator
) -> None:
    azure_emulator.cluster_create_seconds = 1.0
    client.force_login(deployer)
    data = cluster_form(workspace, node_count=2)

    response = client.post(reverse("azure_cluster_new"), data)

    cluster = Cluster.objects.get(name=data["name"])
    operation = cluster.operations.get()
    assert response.url == reverse("operation_detail", args=[operation.pk])
    assert (cluster.backend, cluster.workspace, cluster.vm_size, cluster.location) == (
        "azureml",
        workspace,
        GPU_SIZE,
        "eastus",
    )
    operation = run_inline(operation.pk)
    assert operation.state == "succeeded", operation.error
    lines = lines_of(operation)
    assert f"Creating.. 2 × {GPU_SIZE} (DevTest) in eastus" in lines
    assert lines[-1] == f"Succeeded: {cluster.name} is ready (1 × NVIDIA T4 per node)"
    cluster.refresh_from_db()
    assert cluster.provisioning_state == "Succeeded" and cluster.has_gpu
    assert (cluster.gpu_count, cluster.gpu_kind) == (1, "NVIDIA T4")
    assert azure_emulator.computes[cluster.name].vm_size == GPU_SIZE
    assert azure_emulator.count("PUT", rf"/computes/{cluster.name}$") == 1


def test_quota_exceeded_ends_with_azures_message_and_leaves_nothing(
    deployer, workspace, azure_emulator
) -> None:
    name = unique("quota")
    azure_emulator.fail_cluster_create_with_quota(name)
    operation = cluster_create(
        user=deployer, name=name, backend="azureml", workspace=workspace, vm_size=GPU_SIZE, node_count=2
    )

    operation = run_inline(operation.pk)

    assert operation.state == "failed"
    assert "QuotaExceeded" in operation.error and "standardNCASv3_T4 Family Cores quota" in operation.error
    assert "(HTTP 400)" in operation.error and operation.attempts == 0
    cluster = Cluster.objects.get(name=name)
    assert cluster.provisioning_state == "Failed" and "QuotaExceeded" in cluster.provisioning_errors
    assert name not in azure_emulator.computes
    # The failed record is deleted at once (nothing in Azure to wait for) and the name is free again.
    assert run_inline(cluster_delete(user=deployer, cluster=cluster).pk).state == "succeeded"
    assert Cluster.objects.get(pk=cluster.pk).provisioning_state == ProvisioningState.DELETED
    puts = [
        status for method, _h, path, status in azure_emulator.requests if method == "PUT" and name in path
    ]
    assert puts == [400]  # the one refused create; nothing was tried again


def test_a_cluster_azure_fails_to_provision_is_removed_so_nothing_bills(
    deployer, workspace, azure_emulator
) -> None:
    name = unique("broken")
    azure_emulator.fail_cluster_provisioning(name, "ClusterCreationFailed", "Subnet is full.")
    operation = cluster_create(
        user=deployer, name=name, backend="azureml", workspace=workspace, vm_size=GPU_SIZE
    )

    operation = run_inline(operation.pk)

    assert operation.state == "failed"
    assert operation.error.startswith("ClusterCreationFailed: Subnet is full.")
    assert "asked Azure to remove the failed compute target" in operation.error
    assert Cluster.objects.get(name=name).provisioning_state == "Failed"
    assert azure_gone(azure_emulator, name)


def test_transient_errors_are_retried_with_backoff(deployer, workspace, azure_emulator) -> None:
    name = unique("flaky")
    # The SDK retries a 503 three times itself; the fourth becomes a transient BackendError for the engine.
    azure_emulator.inject("GET", rf"/rp/workspaces/.*/computes/{name}$", 503, times=4)
    operation = cluster_create(
        user=deployer, name=name, backend="azureml", workspace=workspace, vm_size=GPU_SIZE
    )

    operation = run_inline(operation.pk)

    assert operation.state == "succeeded", operation.error
    assert operation.attempts == 1
    assert any("HTTP 503" in line and "(transient; retrying in 2 s)" in line for line in lines_of(operation))
    assert azure_emulator.count("PUT", rf"/computes/{name}$") == 1


def test_a_redelivered_provision_step_does_not_create_a_second_cluster(
    deployer, workspace, azure_emulator
) -> None:
    operation = cluster_create(
        user=deployer, name=unique("again"), backend="azureml", workspace=workspace, vm_size=GPU_SIZE
    )
    cluster = operation.cluster
    # A worker submitted the cluster to Azure and died before it could record that it had.
    backend_for(cluster).provision_cluster(cluster_spec(cluster))
    assert Operation.objects.get(pk=operation.pk).phase == "submit"

    operation = run_inline(operation.pk)

    assert operation.state == "succeeded", operation.error
    assert azure_emulator.count("PUT", rf"/computes/{cluster.name}$") == 1
    assert (
        AuditEvent.objects.filter(resource_id=cluster.pk, after__provisioning_state="Succeeded").count() == 1
    )


def test_an_existing_aks_cluster_is_attached_then_detached_not_deleted(
    client, deployer, workspace, azure_emulator
) -> None:
    resource_id = (
        f"/subscriptions/{azure_emulator.subscription_id}/resourceGroups/aks-rg/providers/"
        f"Microsoft.ContainerService/managedClusters/{unique('team')}"
    )
    azure_emulator.register_external_aks(resource_id, "Standard_NC8as_T4_v3", 2)
    client.force_login(deployer)
    data = cluster_form(workspace, mode="attach", attach_resource_id=resource_id, vm_size="")

    client.post(reverse("azure_cluster_new"), data)
    cluster = Cluster.objects.get(name=data["name"])
    operation = run_inline(cluster.operations.get().pk)

    assert operation.state == "succeeded", operation.error
    cluster.refresh_from_db()
    assert (cluster.vm_size, cluster.node_count, cluster.gpu_count) == ("Standard_NC8as_T4_v3", 2, 1)
    assert cluster.attach_resource_id == resource_id

    response = client.post(reverse("cluster_delete", args=[cluster.pk]), {"idempotency_key": unique("k")})
    detach = Operation.objects.get(cluster=cluster, kind="cluster_delete")
    assert response.url == reverse("operation_detail", args=[detach.pk])
    assert run_inline(detach.pk).state == "succeeded"
    assert lines_of(detach)[1].startswith(f"Detaching {cluster.name} from the workspace")
    assert ("arm.compute_delete", {"name": cluster.name, "action": "detach"}) in azure_emulator.events
    assert resource_id.lower() in azure_emulator.external_aks  # the AKS cluster itself is someone else's


def test_a_cpu_cluster_reports_no_gpu(deployer, workspace) -> None:
    from tests.targets.azureml.conftest import provision

    cluster = provision(deployer, workspace, vm_size=CPU_SIZE)

    assert (cluster.gpu_count, cluster.gpu_kind, cluster.has_gpu) == (0, "", False)


def test_cluster_spec_carries_the_workspace(deployer, workspace) -> None:
    operation = cluster_create(user=deployer, name=unique("spec"), backend="azureml", workspace=workspace)

    spec = cluster_spec(operation.cluster)

    assert isinstance(spec, ClusterSpec) and spec.workspace is not None
    assert spec.workspace.workspace_name == workspace.workspace_name


def test_a_worker_that_died_removing_a_failed_cluster_is_finished_by_the_next(
    deployer, workspace, azure_emulator
) -> None:
    from deployments.services import operation_advance

    name = unique("half")
    azure_emulator.fail_cluster_provisioning(name, "ClusterCreationFailed", "Subnet is full.")
    operation = cluster_create(
        user=deployer, name=name, backend="azureml", workspace=workspace, vm_size=GPU_SIZE
    )
    operation_advance(operation_id=operation.pk)  # submitted
    deadline = time.monotonic() + 10
    while azure_emulator.computes[name].provisioning_state != "Failed":
        assert time.monotonic() < deadline
        time.sleep(0.1)
        azure_emulator.tick()
    # What the worker had recorded when it died, before it could ask Azure to remove the compute target.
    Operation.objects.filter(pk=operation.pk).update(
        params={"failed_error": "ClusterCreationFailed: Subnet is full."}
    )

    operation = run_inline(operation.pk)

    assert operation.state == "failed" and operation.error.startswith(
        "ClusterCreationFailed: Subnet is full."
    )
    assert Cluster.objects.get(name=name).provisioning_state == "Failed"
    assert azure_gone(azure_emulator, name)
