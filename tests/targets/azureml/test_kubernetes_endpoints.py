"""Azure ML v2 Kubernetes online endpoints through Lynx's services and step engine, against the emulator.

A Lynx cluster of this target is an AKS cluster with the Azure ML extension, attached as Kubernetes compute;
its deployments are Kubernetes online endpoints on the cluster's instance types, with autoscale by
utilisation, staged and split between revisions like managed endpoints.
"""

from __future__ import annotations

import pytest
import requests
from django.urls import reverse

from deployments.crypto import decrypt
from deployments.environments import default_environment_yaml
from deployments.models import Cluster, Deployment
from deployments.services import cluster_create, cluster_delete, deployment_create
from deployments.services.deployments import deployment_delete, deployment_traffic, deployment_update
from tests.targets.azureml.conftest import lines_of, run_inline, unique
from tests.targets.azureml.emulated_models import ECHO_SCORE_PY

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")]

T4_POOL = "Standard_NC8as_T4_v3"  # 8 vCPUs, 1 × NVIDIA T4 per node
GPU_TYPE = {
    "requests": {"cpu": "1", "memory": "4Gi"},
    "limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": 1},
}


def attach(user, workspace, resource_id: str):
    operation = cluster_create(
        user=user,
        name=unique("k8s"),
        backend="azureml_k8s",
        workspace=workspace,
        attach_resource_id=resource_id,
        location="eastus",
    )
    return run_inline(operation.pk, timeout=60)


def test_an_aks_cluster_without_the_extension_is_refused_with_azures_words(
    deployer, workspace, azure_emulator
):
    bare = azure_emulator.create_aks_for_kubernetes_compute(unique("bare"), extension=False)
    operation = attach(deployer, workspace, bare)
    assert operation.state == "failed"
    assert "extension" in operation.error.lower()


def test_a_gpu_deployment_with_autoscale_runs_a_canary_and_detaching_leaves_the_cluster(
    client, deployer, workspace, tiny_model, azure_emulator
) -> None:
    aks = azure_emulator.create_aks_for_kubernetes_compute(
        unique("aks"), vm_size=T4_POOL, node_count=2, instance_types={"gpu-t4": GPU_TYPE}
    )
    attached = attach(deployer, workspace, aks)
    assert attached.state == "succeeded", attached.error
    cluster = Cluster.objects.get(pk=attached.cluster_id)
    assert cluster.gpu_count == 1 and cluster.name in azure_emulator.computes
    # What the AKS nodes are, read from the AKS resource: the overview prices them.
    assert (cluster.vm_size, cluster.node_count, cluster.kubernetes_version) == (T4_POOL, 2, "1.32.6")

    operation = deployment_create(
        user=deployer,
        name=unique("ep"),
        cluster=cluster,
        model=tiny_model,
        entry_script=ECHO_SCORE_PY,
        environment_yaml=default_environment_yaml(gpu=True),
        gpu_enabled=True,
        gpu_cores=1,
        cpu_cores=1.0,
        memory_gb=2.0,
        autoscale_enabled=True,
        autoscale_min_replicas=1,
        autoscale_max_replicas=2,
        autoscale_target_utilization=60,
    )
    operation = run_inline(operation.pk, timeout=120)
    assert operation.state == "succeeded", f"{operation.error}\n" + "\n".join(lines_of(operation))
    deployment = Deployment.objects.get(pk=operation.deployment_id)
    assert deployment.scoring_uri.endswith(f"/api/v1/endpoint/{deployment.name}/score")
    body = azure_emulator.v2.deployments[(deployment.name, "rev1")].body
    props = body["properties"]
    assert props["endpointComputeType"] == "Kubernetes" and props["instanceType"] == "gpu-t4"
    assert props["scaleSettings"]["scaleType"] == "TargetUtilization"
    assert (props["scaleSettings"]["minInstances"], props["scaleSettings"]["maxInstances"]) == (1, 2)
    key = decrypt(deployment.primary_key_encrypted)
    answer = requests.post(
        deployment.scoring_uri,
        json={"data": [[1.0, 3.0]]},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert answer.ok and answer.json()["scores"] == [2.0]
    assert requests.post(deployment.scoring_uri, json={}, timeout=30).status_code == 401

    update = deployment_update(user=deployer, deployment=deployment, max_batch_size=8, canary_percent=20)
    assert run_inline(update.pk, timeout=120).state == "succeeded"
    deployment.refresh_from_db()
    assert deployment.stats["traffic"] == {"1": 80, "2": 20}
    done = run_inline(deployment_traffic(user=deployer, deployment=deployment, complete=True).pk, timeout=60)
    assert done.state == "succeeded", done.error
    assert set(azure_emulator.v2.deployments_of(deployment.name)) == {"rev2"}

    client.force_login(deployer)
    page = client.get(reverse("azure_cluster", args=[cluster.pk])).content.decode()
    assert "attached as Kubernetes compute" in page and deployment.name in page

    assert (
        run_inline(deployment_delete(user=deployer, deployment=deployment).pk, timeout=60).state
        == "succeeded"
    )
    detached = run_inline(cluster_delete(user=deployer, cluster=cluster).pk, timeout=60)
    assert detached.state == "succeeded", detached.error
    assert cluster.name not in azure_emulator.computes
    assert aks.lower() in azure_emulator.v2.k8s_clusters  # the AKS cluster itself stays


def test_a_gpu_deployment_on_a_cluster_without_a_gpu_instance_type_says_what_to_make(
    deployer, workspace, tiny_model, azure_emulator
) -> None:
    aks = azure_emulator.create_aks_for_kubernetes_compute(unique("cpu"))
    cluster = Cluster.objects.get(pk=attach(deployer, workspace, aks).cluster_id)
    cluster.gpu_count = 1  # as if an admin removed the GPU instance type after the attach
    cluster.save(update_fields=["gpu_count"])
    operation = deployment_create(
        user=deployer,
        name=unique("ep"),
        cluster=cluster,
        model=tiny_model,
        entry_script=ECHO_SCORE_PY,
        environment_yaml=default_environment_yaml(gpu=True),
        gpu_enabled=True,
        gpu_cores=1,
    )
    operation = run_inline(operation.pk, timeout=60)
    assert operation.state == "failed"
    assert "no instance type with 1 GPU(s)" in operation.error and "kubectl" in operation.error


def test_the_attach_page_explains_what_azure_ml_cannot_make_and_checks_the_resource_id(
    client, deployer, workspace
) -> None:
    client.force_login(deployer)
    page = client.get(reverse("azure_kubernetes_new")).content.decode()
    assert "Microsoft.AzureML.Kubernetes" in page and "InstanceType" in page
    form = {"workspace": workspace.pk, "name": unique("k8s"), "attach_resource_id": "/subscriptions/x/nope"}
    refused = client.post(reverse("azure_kubernetes_new"), {**form, "idempotency_key": "k1"})
    assert refused.status_code == 400 and "not an AKS resource ID" in refused.content.decode()
    assert not Cluster.objects.filter(name=form["name"]).exists()
