"""AKS deployments through the existing deploy form and services: GPU checks, keys, logs, failures."""

from __future__ import annotations

import pytest
import requests
from django.urls import reverse

from deployments.crypto import decrypt
from deployments.environments import default_environment_yaml
from deployments.models import AuditEvent, Deployment, Operation, OperationKind
from deployments.services import Refused, deployment_create
from deployments.services.deployments import deployment_update
from tests.targets.azureml.conftest import CPU_SIZE, lines_of, provision, run_inline, unique
from tests.targets.azureml.emulated_models import ECHO_SCORE_PY

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")]


def deploy_form(cluster, model, **overrides) -> dict:
    return {
        "name": unique("svc"),
        "cluster": cluster.pk,
        "model": model.pk,
        "entry_script": ECHO_SCORE_PY,
        "environment_yaml": default_environment_yaml(),
        "gpu_enabled": "on",
        "gpu_cores": 1,
        "replicas": 1,
        "cpu_cores": 1.0,
        "memory_gb": 4.0,
        "autoscale_min_replicas": 1,
        "autoscale_max_replicas": 1,
        "autoscale_target_utilization": 70,
        "idempotency_key": unique("k"),
        **overrides,
    }


def deploy(user, cluster, model, **config) -> Deployment:
    operation = deployment_create(
        user=user,
        name=config.pop("name", None) or unique("svc"),
        cluster=cluster,
        model=model,
        entry_script=ECHO_SCORE_PY,
        environment_yaml=default_environment_yaml(),
        **{"gpu_enabled": True, "gpu_cores": 1, "cpu_cores": 1.0, "memory_gb": 4.0, **config},
    )
    operation = run_inline(operation.pk)
    assert operation.state == "succeeded", f"{operation.error}\n" + "\n".join(lines_of(operation))
    return Deployment.objects.get(pk=operation.deployment_id)


def score(uri: str, key: str) -> requests.Response:
    return requests.post(
        uri, json={"data": [[1.0, 2.0, 3.0]]}, headers={"Authorization": f"Bearer {key}"}, timeout=10
    )


def test_a_gpu_deployment_on_a_cpu_size_is_refused_by_the_form_and_the_service(
    client, deployer, workspace, tiny_model, azure_emulator
) -> None:
    cluster = provision(deployer, workspace, vm_size=CPU_SIZE)
    client.force_login(deployer)
    data = deploy_form(cluster, tiny_model)

    response = client.post(reverse("deployment_new"), data)

    assert response.status_code == 400
    assert f"{cluster.name} has no GPU" in response.content.decode()
    with pytest.raises(Refused, match="has no GPU"):
        deployment_create(
            user=deployer,
            name=data["name"],
            cluster=cluster,
            model=tiny_model,
            entry_script=ECHO_SCORE_PY,
            environment_yaml=default_environment_yaml(),
            gpu_enabled=True,
        )
    assert not Deployment.objects.exists() and data["name"] not in azure_emulator.services


def test_a_gpu_deployment_on_a_gpu_size_becomes_healthy_with_azures_keys_stored_encrypted(
    client, deployer, workspace, tiny_model, azure_emulator
) -> None:
    cluster = provision(deployer, workspace)
    client.force_login(deployer)
    data = deploy_form(cluster, tiny_model)

    response = client.post(reverse("deployment_new"), data)

    assert response.status_code == 302, response.content.decode()[:3000]
    deployment = Deployment.objects.get(name=data["name"])
    operation = run_inline(deployment.operations.get().pk)
    assert operation.state == "succeeded", operation.error
    deployment.refresh_from_db()
    assert deployment.state == "Healthy" and deployment.scoring_uri == azure_emulator.scoring_uri(
        deployment.name
    )
    payload = azure_emulator.services[deployment.name].payload
    assert payload["containerResourceRequirements"]["gpu"] == 1
    assert "cuda" in payload["environmentImageRequest"]["environment"]["docker"]["baseImage"]
    service = azure_emulator.services[deployment.name]
    primary, secondary = service.primary_key, service.secondary_key
    assert primary not in deployment.primary_key_encrypted
    assert (decrypt(deployment.primary_key_encrypted), decrypt(deployment.secondary_key_encrypted)) == (
        primary,
        secondary,
    )
    assert score(deployment.scoring_uri, primary).json()["scores"] == [2.0]
    page = client.get(reverse("azure_deployment", args=[deployment.pk])).content.decode()
    assert primary not in page and primary[:4] + "…" in page


def test_an_unschedulable_deployment_fails_with_azures_message(deployer, workspace, tiny_model) -> None:
    cluster = provision(deployer, workspace)
    operation = deployment_create(
        user=deployer,
        name=unique("big"),
        cluster=cluster,
        model=tiny_model,
        entry_script=ECHO_SCORE_PY,
        environment_yaml=default_environment_yaml(),
        gpu_enabled=True,
        gpu_cores=2,  # a T4 node has one
    )

    operation = run_inline(operation.pk)

    assert operation.state == "failed"
    assert "0/1 nodes are available: 1 Insufficient nvidia.com/gpu." in operation.error
    deployment = Deployment.objects.get(pk=operation.deployment_id)
    assert deployment.state == "Failed" and "Insufficient nvidia.com/gpu" in deployment.error
    assert not deployment.primary_key_encrypted


def test_a_409_during_an_update_ends_it_with_azures_message(
    deployer, workspace, tiny_model, azure_emulator
) -> None:
    deployment = deploy(deployer, provision(deployer, workspace), tiny_model)
    azure_emulator.inject(
        "PATCH",
        rf"/services/{deployment.name}$",
        409,
        {
            "code": "Conflict",
            "statusCode": 409,
            "message": "An operation is already in progress on this service.",
        },
    )

    operation = run_inline(deployment_update(user=deployer, deployment=deployment, replicas=2).pk)

    assert operation.state == "failed" and operation.attempts == 0
    assert (
        "An operation is already in progress on this service." in operation.error
        and "HTTP 409" in operation.error
    )


def test_keys_are_regenerated_by_azure_in_an_operation(
    client, deployer, viewer, workspace, tiny_model
) -> None:
    deployment = deploy(deployer, provision(deployer, workspace), tiny_model)
    old_primary, old_secondary = (
        decrypt(deployment.primary_key_encrypted),
        decrypt(deployment.secondary_key_encrypted),
    )
    client.force_login(viewer)
    assert (
        client.post(reverse("azure_key_regenerate", args=[deployment.pk]), {"key": "Primary"}).status_code
        == 403
    )
    client.force_login(deployer)

    response = client.post(reverse("azure_key_regenerate", args=[deployment.pk]), {"key": "Primary"})

    operation = Operation.objects.get(kind=OperationKind.SERVICE_KEY_REGENERATE)
    assert response.url == reverse("operation_detail", args=[operation.pk])
    assert run_inline(operation.pk).state == "succeeded"
    deployment.refresh_from_db()
    new_primary = decrypt(deployment.primary_key_encrypted)
    assert new_primary != old_primary and decrypt(deployment.secondary_key_encrypted) == old_secondary
    assert score(deployment.scoring_uri, old_primary).status_code == 401
    assert score(deployment.scoring_uri, new_primary).status_code == 200
    assert deployment.state == "Healthy"
    assert AuditEvent.objects.filter(action="deployment.key_regenerate", resource_id=deployment.pk).exists()


def test_logs_are_read_from_azure_in_an_operation(client, deployer, workspace, tiny_model) -> None:
    deployment = deploy(deployer, provision(deployer, workspace), tiny_model)
    client.force_login(deployer)

    client.post(reverse("azure_logs", args=[deployment.pk]), {"lines": 50})

    operation = Operation.objects.get(kind=OperationKind.SERVICE_LOGS)
    assert operation.resource_name == deployment.name and operation.workspace == workspace
    assert run_inline(operation.pk).state == "succeeded"
    text = "\n".join(lines_of(operation))
    assert "[inference-server]" in text and "Booting worker" in text and "[storage-initializer]" in text
    page = client.get(reverse("azure_deployment", args=[deployment.pk])).content.decode()
    assert "Booting worker" in page
