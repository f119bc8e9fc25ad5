"""The how-to's whole lifecycle from the dashboard, run by real Celery workers against the Azure emulator.

Provision a GPU AKS cluster, deploy with GPU, wait for Healthy, score with the key, read the logs and keys,
regenerate a key, update, delete the service, delete the cluster: every Azure call is the real SDK's.
"""

from __future__ import annotations

import pytest
import requests
from django.urls import reverse

from deployments.crypto import decrypt
from deployments.environments import default_environment_yaml
from deployments.models import AuditEvent, Cluster, Deployment, Operation, OperationKind, Workspace
from deployments.services import cluster_create
from deployments.services.deployments import deployment_update
from deployments.states import ProvisioningState, ServiceState
from tests.conftest import wait_for
from tests.targets.azureml.conftest import GPU_SIZE, lines_of, unique
from tests.targets.azureml.emulated_models import ECHO_SCORE_PY

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
]


def finished(operation_id: int, timeout: float = 60) -> Operation:
    wait_for(
        lambda: Operation.objects.get(pk=operation_id).is_finished,
        timeout,
        message=f"operation {operation_id}",
    )
    operation = Operation.objects.get(pk=operation_id)
    assert operation.state == "succeeded", f"{operation.error}\n" + "\n".join(lines_of(operation))
    return operation


def newest(kind: str) -> Operation:
    return Operation.objects.filter(kind=kind).latest("created_at")


def score(uri: str, key: str) -> requests.Response:
    return requests.post(
        uri, json={"data": [[1.0, 2.0, 3.0]]}, headers={"Authorization": f"Bearer {key}"}, timeout=10
    )


def test_the_how_to_lifecycle_runs_from_the_dashboard(
    client, admin_user, deployer, tiny_model, azure_emulator, celery_processes
) -> None:
    celery_processes("worker")
    emu = azure_emulator
    emu.cluster_create_seconds = emu.service_deploy_seconds = (
        2.0  # long enough to be seen Creating/Transitioning
    )

    # An admin connects the workspace; the connection test runs on the worker.
    client.force_login(admin_user)
    client.post(
        reverse("workspace_new"),
        {
            "name": "team",
            **emu.workspace_fields(),
            "idempotency_key": unique("k"),
        },
    )
    finished(newest(OperationKind.WORKSPACE_TEST).pk)
    workspace = Workspace.objects.get(name="team")

    # 1. Provision a GPU cluster (the how-to's Standard_NC6 is retired; its suggested replacement).
    client.force_login(deployer)
    name = unique("gpu")
    response = client.post(
        reverse("azure_cluster_new"),
        {
            "workspace": workspace.pk,
            "mode": "create",
            "name": name,
            "vm_size": GPU_SIZE,
            "node_count": 3,  # the update below runs 3 replicas with a GPU each; a T4 node has one
            "cluster_purpose": "DevTest",
            "idempotency_key": unique("k"),
        },
    )
    assert response.status_code == 302
    provision = finished(newest(OperationKind.CLUSTER_PROVISION).pk)
    assert any(line.startswith("Creating..") for line in lines_of(provision))
    cluster = Cluster.objects.get(name=name)
    # GPUs are counted per node.
    assert (cluster.provisioning_state, cluster.gpu_count, cluster.gpu_kind) == ("Succeeded", 1, "NVIDIA T4")

    # 2-5. Deploy with GPU through the deploy form; follow it until Healthy.
    service_name = unique("lynx")
    response = client.post(
        reverse("deployment_new"),
        {
            "name": service_name,
            "cluster": cluster.pk,
            "model": tiny_model.pk,
            "entry_script": ECHO_SCORE_PY,
            "environment_yaml": default_environment_yaml(),
            "gpu_enabled": "on",
            "gpu_cores": 1,
            "replicas": 1,
            "cpu_cores": 2,
            "memory_gb": 4,
            "autoscale_min_replicas": 1,
            "autoscale_max_replicas": 1,
            "autoscale_target_utilization": 70,
            "idempotency_key": unique("k"),
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    deploy = finished(newest(OperationKind.SERVICE_DEPLOY).pk)
    assert "Transitioning" in lines_of(deploy)
    deployment = Deployment.objects.get(name=service_name)
    assert deployment.state == ServiceState.HEALTHY and deployment.scoring_uri == emu.scoring_uri(
        service_name
    )

    # 6. Score with the key Lynx fetched from Azure (stored encrypted).
    primary = decrypt(deployment.primary_key_encrypted)
    assert primary == emu.services[service_name].primary_key
    assert score(deployment.scoring_uri, primary).json()["scores"] == [2.0]
    assert score(deployment.scoring_uri, "not-a-key").status_code == 401

    # Logs, read by the worker.
    client.post(reverse("azure_logs", args=[deployment.pk]), {"lines": 100})
    logs = finished(newest(OperationKind.SERVICE_LOGS).pk)
    assert any("POST /score 200" in line for line in lines_of(logs))

    # Keys: masked on the page; regenerate the primary one.
    page = client.get(reverse("azure_deployment", args=[deployment.pk])).content.decode()
    assert primary not in page
    client.post(reverse("azure_key_regenerate", args=[deployment.pk]), {"key": "Primary"})
    finished(newest(OperationKind.SERVICE_KEY_REGENERATE).pk)
    deployment.refresh_from_db()
    new_primary = decrypt(deployment.primary_key_encrypted)
    assert new_primary != primary
    assert score(deployment.scoring_uri, primary).status_code == 401
    assert score(deployment.scoring_uri, new_primary).status_code == 200

    # Update: three replicas, as in the how-to's deployment configuration.
    finished(deployment_update(user=deployer, deployment=deployment, replicas=3).pk)
    deployment.refresh_from_db()
    assert deployment.state == ServiceState.HEALTHY and emu.services[service_name].payload["numReplicas"] == 3

    # 7. Delete the service, then the cluster, from their pages.
    client.post(reverse("deployment_delete", args=[deployment.pk]), {"idempotency_key": unique("k")})
    finished(newest(OperationKind.SERVICE_DELETE).pk)
    assert Deployment.objects.get(pk=deployment.pk).state == ServiceState.DELETED
    assert service_name not in emu.services
    client.post(reverse("cluster_delete", args=[cluster.pk]), {"idempotency_key": unique("k")})
    finished(newest(OperationKind.CLUSTER_DELETE).pk)
    assert Cluster.objects.get(pk=cluster.pk).provisioning_state == ProvisioningState.DELETED
    assert name not in emu.computes

    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {
        "workspace.create",
        "workspace.test",
        "cluster.create",
        "deployment.create",
        "deployment.key_regenerate",
        "deployment.update",
        "deployment.delete",
        "cluster.delete",
        "cluster.state",
        "deployment.state",
    } <= actions
    assert emu.count("PUT", rf"/computes/{name}$") == 1 and emu.count("POST", r"/services$") >= 1


def test_a_worker_killed_mid_provision_is_finished_exactly_once_by_another(
    settings, deployer, workspace, azure_emulator, celery_processes
) -> None:
    settings.LYNX_OPERATION_LEASE_SECONDS = 4  # the workers and beat get it through worker_env()
    azure_emulator.cluster_create_seconds = 8
    doomed = celery_processes("worker", "doomed")
    celery_processes("beat")
    name = unique("kill")
    operation = cluster_create(
        user=deployer, name=name, backend="azureml", workspace=workspace, vm_size=GPU_SIZE
    )

    # Kill the worker once Azure has the cluster and the worker holds the message of the next step (received,
    # not yet run): killed before it took that message, the broker would simply hand it to the next worker.
    def holds_next_step() -> bool:
        row = Operation.objects.get(pk=operation.pk)
        received = [line for line in doomed.log.read_text().splitlines() if "advance_operation[" in line]
        return row.phase == "wait" and len([line for line in received if "received" in line]) > row.steps

    wait_for(
        holds_next_step, 60, interval=0.05, message="cluster submitted, its next step held by the worker"
    )
    doomed.kill()
    assert Operation.objects.get(pk=operation.pk).state == "running"
    assert azure_emulator.computes[name].provisioning_state == "Creating"

    celery_processes("worker", "rescuer")
    operation = finished(operation.pk, timeout=90)

    assert operation.attempts >= 1  # the reconciler handed it to the new worker
    cluster = Cluster.objects.get(pk=operation.cluster_id)
    assert cluster.provisioning_state == ProvisioningState.SUCCEEDED and cluster.gpu_count == 1
    assert azure_emulator.count("PUT", rf"/computes/{name}$") == 1
    assert (
        AuditEvent.objects.filter(
            action="cluster.state", resource_id=cluster.pk, after__provisioning_state="Succeeded"
        ).count()
        == 1
    )
    assert Operation.objects.filter(cluster=cluster).count() == 1
    assert [line for line in lines_of(operation) if line.startswith("Succeeded:")] == [
        f"Succeeded: {name} is ready (1 × NVIDIA T4 per node)"
    ]
