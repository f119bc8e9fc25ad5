"""Azure ML managed online endpoints (SDK v2) through Lynx's services and step engine, against the emulator.

The real azure-ai-ml SDK makes every call; the emulator builds the environment, runs the deployed score.py
in Microsoft's inference server and routes the endpoint's traffic. A Lynx cluster of this target is an
instance type; each deployment is one endpoint whose revisions are its deployments `rev<N>`.
"""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
import requests
from django.urls import reverse

from deployments.crypto import decrypt
from deployments.environments import default_environment_yaml
from deployments.models import AuditEvent, Cluster, Deployment, OperationKind
from deployments.selectors import costs_summary
from deployments.services import Refused, cluster_create, cluster_delete, deployment_create
from deployments.services.deployments import deployment_delete, deployment_traffic, deployment_update
from deployments.services.prices import vm_prices_seed
from tests.targets.azureml.conftest import GPU_SIZE, lines_of, run_inline, unique
from tests.targets.azureml.emulated_models import ECHO_SCORE_PY
from tests.targets.azureml.v2_samples import SLOW_INIT_PY, TF1_ON_PY310_CONDA

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")]

CPU_SIZE = "Standard_DS3_v2"  # on the managed SKU list, 4 cores

CRASHING_INIT_PY = """\
def init():
    raise ValueError("the model files are not where init() looks for them")


def run(raw_data):
    return raw_data
"""


def managed(user, workspace, *, vm_size: str = GPU_SIZE):
    """A managed-endpoint "cluster": an instance type in the workspace, checked with Azure."""
    operation = cluster_create(
        user=user,
        name=unique("mng"),
        backend="azureml_managed",
        workspace=workspace,
        vm_size=vm_size,
        node_count=1,
        location="eastus",
    )
    return run_inline(operation.pk)


def deploy(user, cluster, model, *, script: str = ECHO_SCORE_PY, expect: str = "succeeded", **config):
    gpu = cluster.has_gpu
    operation = deployment_create(
        user=user,
        name=config.pop("name", None) or unique("ep"),
        cluster=cluster,
        model=model,
        entry_script=script,
        environment_yaml=default_environment_yaml(gpu=gpu),
        **{"gpu_enabled": gpu, "gpu_cores": 1 if gpu else 0, **config},
    )
    operation = run_inline(operation.pk, timeout=120)
    assert operation.state == expect, f"{operation.error}\n" + "\n".join(lines_of(operation))
    return Deployment.objects.get(pk=operation.deployment_id), operation


def score(deployment: Deployment, key: str | None = None, pin: str = "") -> requests.Response:
    key = decrypt(deployment.primary_key_encrypted) if key is None else key
    headers = {"Authorization": f"Bearer {key}"}
    if pin:
        headers["azureml-model-deployment"] = pin
    return requests.post(
        deployment.scoring_uri, json={"data": [[1.0, 2.0, 3.0]]}, headers=headers, timeout=30
    )


def azure_deployments(emu, deployment: Deployment) -> set[str]:
    return set(emu.v2.deployments_of(deployment.name))


def test_an_instance_type_is_a_cluster_checked_with_azure_and_nothing_is_created(
    deployer, workspace, azure_emulator
) -> None:
    operation = managed(deployer, workspace)
    assert operation.state == "succeeded", operation.error
    cluster = operation.cluster
    cluster.refresh_from_db()
    assert cluster.gpu_count == 1 and "T4" in cluster.gpu_kind
    assert not azure_emulator.v2.endpoints  # no Azure resource for a cluster of this target

    retired = managed(deployer, workspace, vm_size="Standard_NC6s_v3")
    assert retired.state == "failed"
    assert "Standard_NC6s_v3 is not offered in eastus" in retired.error

    deleted = run_inline(cluster_delete(user=deployer, cluster=cluster).pk)
    assert deleted.state == "succeeded", deleted.error


def test_a_gpu_deployment_answers_over_https_with_its_key_and_is_billed_per_instance(
    deployer, workspace, tiny_model, azure_emulator
) -> None:
    cluster = managed(deployer, workspace).cluster
    deployment, operation = deploy(deployer, cluster, tiny_model, replicas=2)

    assert deployment.state == "Healthy"
    assert deployment.scoring_uri == f"https://{deployment.name}.eastus.inference.ml.azure.com/score"
    assert azure_deployments(azure_emulator, deployment) == {"rev1"}
    assert azure_emulator.v2.endpoints[deployment.name].traffic == {"rev1": 100}
    answer = score(deployment)
    assert answer.ok, answer.text
    assert answer.json()["scores"] == [2.0] and answer.headers["azureml-model-deployment"] == "rev1"
    assert score(deployment, key="wrong").status_code == 401
    assert deployment.stats["traffic"] == {"1": 100}
    sent = azure_emulator.v2.deployments[(deployment.name, "rev1")].body
    assert sent["sku"]["capacity"] == 2 and sent["properties"]["instanceType"] == GPU_SIZE

    # The deployment bills its 2 instances at the instance type's price; the "cluster" itself nothing.
    vm_prices_seed()
    assert costs_summary().by_cluster[cluster.pk].rate == 2 * Decimal("0.526")

    deleted = run_inline(deployment_delete(user=deployer, deployment=deployment).pk, timeout=60)
    assert deleted.state == "succeeded", deleted.error
    assert deployment.name not in azure_emulator.v2.endpoints


def test_blue_green_with_a_canary_then_complete_and_a_canary_rolled_back(
    deployer, workspace, tiny_model, azure_emulator
) -> None:
    cluster = managed(deployer, workspace, vm_size=CPU_SIZE).cluster
    deployment, _ = deploy(deployer, cluster, tiny_model)

    update = deployment_update(user=deployer, deployment=deployment, max_batch_size=8, canary_percent=10)
    update = run_inline(update.pk, timeout=120)
    assert update.state == "succeeded", update.error
    deployment.refresh_from_db()
    assert deployment.revision == 2 and deployment.stats["traffic"] == {"1": 90, "2": 10}
    assert azure_emulator.v2.endpoints[deployment.name].traffic == {"rev1": 90, "rev2": 10}
    assert score(deployment, pin="rev2").headers["azureml-model-deployment"] == "rev2"

    complete = run_inline(
        deployment_traffic(user=deployer, deployment=deployment, complete=True).pk, timeout=60
    )
    assert complete.state == "succeeded", complete.error
    deployment.refresh_from_db()
    assert deployment.stats["traffic"] == {"2": 100}
    assert azure_deployments(azure_emulator, deployment) == {"rev2"}  # rev1 removed: it no longer bills
    with pytest.raises(Refused, match="no canary"):
        deployment_traffic(user=deployer, deployment=deployment, complete=True)

    canary = deployment_update(user=deployer, deployment=deployment, max_batch_size=4, canary_percent=25)
    assert run_inline(canary.pk, timeout=120).state == "succeeded"
    deployment.refresh_from_db()
    assert deployment.revision == 3 and deployment.stats["traffic"] == {"2": 75, "3": 25}
    back = run_inline(deployment_traffic(user=deployer, deployment=deployment, complete=False).pk, timeout=60)
    assert back.state == "succeeded", back.error
    deployment.refresh_from_db()
    assert deployment.revision == 2 and deployment.max_batch_size == 8  # revision 2's configuration again
    assert deployment.stats["traffic"] == {"2": 100}
    assert azure_deployments(azure_emulator, deployment) == {"rev2"}
    assert score(deployment).ok
    actions = list(
        AuditEvent.objects.filter(resource_id=deployment.pk, action="deployment.traffic").values_list(
            "message", flat=True
        )
    )
    assert sorted("rolled back" in message for message in actions) == [False, True]
    kinds = set(deployment.operations.values_list("kind", flat=True))
    assert OperationKind.SERVICE_TRAFFIC in kinds


def test_a_canary_is_refused_where_traffic_is_not_split(deployer, workspace, tiny_model) -> None:
    local = Cluster.objects.create(name=unique("loc"), owner=deployer, provisioning_state="Succeeded")
    deployment = Deployment.objects.create(
        name=unique("svc"),
        cluster=local,
        model=tiny_model,
        entry_script="x",
        environment_yaml="x",
        state="Healthy",
        owner=deployer,
    )
    with pytest.raises(Refused, match="canary share needs a target that splits traffic"):
        deployment_update(user=deployer, deployment=deployment, max_batch_size=2, canary_percent=10)


def test_a_crashing_init_fails_with_azures_reason_and_the_traceback_and_leaves_nothing_billing(
    deployer, workspace, tiny_model, azure_emulator
) -> None:
    cluster = managed(deployer, workspace, vm_size=CPU_SIZE).cluster
    deployment, operation = deploy(deployer, cluster, tiny_model, script=CRASHING_INIT_PY, expect="failed")

    assert "(ResourceNotReady)" in operation.error
    assert "ValueError: the model files are not where init() looks for them" in operation.error
    deployment.refresh_from_db()
    assert deployment.state == "Failed"
    # The failed revision is removed, so its instances stop billing.
    deadline = time.monotonic() + 20
    while azure_deployments(azure_emulator, deployment) and time.monotonic() < deadline:
        time.sleep(0.2)
        azure_emulator.tick()
    assert not azure_deployments(azure_emulator, deployment)


# --- the pages ---------------------------------------------------------------------------------------------


def test_the_pages_offer_managed_endpoints_first_and_refuse_a_retired_instance_type(
    client, deployer, workspace
) -> None:
    client.force_login(deployer)
    assert reverse("azure_managed_new") in client.get(reverse("cluster_new")).content.decode()
    page = client.get(reverse("workspace_detail", args=[workspace.pk])).content.decode()
    assert page.index(reverse("azure_managed_new") + "?") < page.index(reverse("azure_cluster_new") + "?")

    form = {
        "workspace": workspace.pk,
        "name": unique("mng"),
        "vm_size": "Standard_NC6",
        "idempotency_key": "a1",
    }
    refused = client.post(reverse("azure_managed_new"), form)
    assert refused.status_code == 400
    assert "Standard_NC6 is retired" in refused.content.decode()
    assert not Cluster.objects.filter(name=form["name"]).exists()

    created = client.post(
        reverse("azure_managed_new"), {**form, "vm_size": GPU_SIZE, "idempotency_key": "a2"}
    )
    assert created.status_code == 302
    cluster = Cluster.objects.get(name=form["name"])
    assert cluster.backend == "azureml_managed" and cluster.vm_size == GPU_SIZE
    assert cluster.location == workspace.location


def test_the_deployment_page_shows_the_split_and_ends_a_canary_from_its_buttons(
    client, deployer, workspace, tiny_model, azure_emulator
) -> None:
    cluster = managed(deployer, workspace, vm_size=CPU_SIZE).cluster
    deployment, _ = deploy(deployer, cluster, tiny_model)
    client.force_login(deployer)
    update_page = client.get(reverse("deployment_update", args=[deployment.pk])).content.decode()
    assert "Traffic to the new revision at first" in update_page

    update = deployment_update(user=deployer, deployment=deployment, max_batch_size=8, canary_percent=10)
    assert run_inline(update.pk, timeout=120).state == "succeeded"
    page = client.get(reverse("deployment_detail", args=[deployment.pk])).content.decode()
    assert "revision 1: 90 %" in page and "revision 2: 10 %" in page
    assert "Complete: 100 % to revision 2" in page and "Roll back to revision 1" in page
    assert f"1 × {CPU_SIZE} instance" in page

    answer = client.post(
        reverse("deployment_traffic", args=[deployment.pk]), {"action": "complete", "idempotency_key": "t1"}
    )
    assert answer.status_code == 302
    operation = deployment.operations.get(kind=OperationKind.SERVICE_TRAFFIC)
    assert run_inline(operation.pk, timeout=60).state == "succeeded"
    page = client.get(reverse("deployment_detail", args=[deployment.pk])).content.decode()
    assert "revision 2: 100 %" in page and "Complete: 100 %" not in page
    assert reverse("azure_deployment", args=[deployment.pk]) in page
    azure_page = client.get(reverse("azure_deployment", args=[deployment.pk]))
    assert azure_page.status_code == 200 and deployment.scoring_uri in azure_page.content.decode()
    cluster_page = client.get(reverse("azure_cluster", args=[cluster.pk])).content.decode()
    assert "Always on" in cluster_page and deployment.name in cluster_page
    tls = client.post(reverse("azure_cluster_tls", args=[cluster.pk]), {"tls_mode": "leaf"})
    assert tls.status_code == 404  # no TLS to set on managed endpoints


def test_a_viewer_cannot_shift_traffic(client, viewer, deployer, workspace, tiny_model) -> None:
    cluster = managed(deployer, workspace, vm_size=CPU_SIZE).cluster
    deployment = Deployment.objects.create(
        name=unique("svc"),
        cluster=cluster,
        model=tiny_model,
        entry_script="x",
        environment_yaml="x",
        state="Healthy",
        owner=deployer,
        stats={"traffic": {"1": 90, "2": 10}},
        revision=2,
    )
    client.force_login(viewer)
    answer = client.post(
        reverse("deployment_traffic", args=[deployment.pk]), {"action": "complete", "idempotency_key": "v1"}
    )
    assert answer.status_code == 403
    assert not deployment.operations.exists()


# --- Azure's refusals reach the deployment's owner in Azure's words -----------------------------------------


def test_an_instance_type_managed_endpoints_do_not_offer_is_refused_before_anything_is_deployed(
    deployer, workspace, tiny_model, azure_emulator
) -> None:
    # A VM size Azure sells, but not for managed online endpoints: the region's list leaves it out.
    operation = managed(deployer, workspace, vm_size="Standard_D4s_v5")
    assert operation.state == "failed"
    assert "Standard_D4s_v5 is not offered in eastus" in operation.error


def test_instances_beyond_the_quota_fail_out_of_quota(
    deployer, workspace, tiny_model, azure_emulator, monkeypatch
) -> None:
    used = azure_emulator.v2.cores_in_use("standardDSv2Family")
    monkeypatch.setitem(azure_emulator.v2.quota, "standardDSv2Family", used + 8)
    cluster = managed(deployer, workspace, vm_size=CPU_SIZE).cluster
    _, operation = deploy(deployer, cluster, tiny_model, replicas=3, expect="failed")
    assert f"Not enough quota available for {CPU_SIZE}" in operation.error
    assert f"Current usage/limit: {used}/{used + 8}" in operation.error


def test_an_environment_that_cannot_build_fails_with_image_build_failure_and_its_log(
    deployer, workspace, tiny_model, azure_emulator
) -> None:
    cluster = managed(deployer, workspace, vm_size=CPU_SIZE).cluster
    operation = deployment_create(
        user=deployer,
        name=unique("ep"),
        cluster=cluster,
        model=tiny_model,
        entry_script=ECHO_SCORE_PY,
        environment_yaml=TF1_ON_PY310_CONDA,
    )
    operation = run_inline(operation.pk, timeout=120)
    assert operation.state == "failed"
    assert "(ImageBuildFailure)" in operation.error
    log_uri = operation.error.split("Build log may be available at ")[1].split()[0]
    assert (
        "No matching distribution found for tensorflow-gpu==1.15.5" in requests.get(log_uri, timeout=10).text
    )


# --- moving an AKS service (v1) to a managed endpoint (v2) --------------------------------------------------


def test_an_aks_service_moves_to_a_managed_endpoint_and_both_answer_until_the_old_one_is_deleted(
    client, deployer, workspace, tiny_model, azure_emulator
) -> None:
    from tests.targets.azureml.conftest import provision
    from tests.targets.azureml.test_deployments import deploy as deploy_v1

    aks = provision(deployer, workspace, vm_size=GPU_SIZE)
    old = deploy_v1(deployer, aks, tiny_model)
    target = managed(deployer, workspace).cluster
    client.force_login(deployer)
    page = client.get(reverse("deployment_detail", args=[old.pk])).content.decode()
    assert "Deploy a copy there" in page and target.name in page

    answer = client.post(
        reverse("deployment_move", args=[old.pk]),
        {"cluster": target.pk, "name": f"{old.name}-v2", "idempotency_key": "m1"},
    )
    assert answer.status_code == 302
    new = Deployment.objects.get(name=f"{old.name}-v2")
    operation = run_inline(new.operations.get().pk, timeout=120)
    assert operation.state == "succeeded", operation.error
    new.refresh_from_db()
    assert new.moved_from == old and new.revision == 1 and new.gpu_enabled
    assert new.scoring_uri.startswith(f"https://{new.name}.eastus.inference.ml.azure.com")
    assert score(old).ok and score(new).ok  # both answer, each with its own key
    old_page = client.get(reverse("deployment_detail", args=[old.pk])).content.decode()
    assert f'Moved to <a href="{reverse("deployment_detail", args=[new.pk])}">{new.name}</a>' in old_page
    assert new.scoring_uri in old_page
    assert AuditEvent.objects.filter(action="deployment.move", resource_id=old.pk).exists()
    with pytest.raises(Refused, match="already moved"):
        from deployments.services.deployments import deployment_move

        deployment_move(user=deployer, deployment=old, cluster=target, name=unique("again"))

    # The switch: the v1 service is deleted; the managed endpoint keeps answering.
    assert run_inline(deployment_delete(user=deployer, deployment=old).pk, timeout=60).state == "succeeded"
    assert score(new).ok
    assert "Moved from" in client.get(reverse("deployment_detail", args=[new.pk])).content.decode()


def test_an_operation_url_outside_arm_never_gets_the_token(workspace, azure_emulator) -> None:
    from deployments.backends.base import BackendError
    from deployments.services.specs import workspace_spec
    from targets.azureml.v2.client import arm_get

    spec = workspace_spec(workspace)
    arm_host = azure_emulator.base_url.removeprefix("https://")
    for url in (
        f"https://attacker.example/subscriptions/{spec.subscription_id}/providers/x/operations/1",
        f"http://{arm_host}/subscriptions/{spec.subscription_id}/providers/x/operations/1",
        f"https://{arm_host}/subscriptions/00000000-0000-0000-0000-000000000000/providers/x/operations/1",
    ):
        with pytest.raises(BackendError, match="outside Azure Resource Manager"):
            arm_get(spec, url)


def test_a_stage_taken_over_after_its_worker_died_follows_what_is_already_running(
    deployer, workspace, tiny_model, azure_emulator
) -> None:
    """Submitting the same stage again (the step's worker died before it kept the reference) must not PUT a
    second time: Azure answers 409 to a deployment that is still being created."""
    from deployments.services.specs import backend_for, service_files_write, service_spec
    from targets.azureml.v2.managed import Stage

    azure_emulator.time_scale = 0.01  # slow enough to be caught Creating
    cluster = managed(deployer, workspace, vm_size=CPU_SIZE).cluster
    deployment = Deployment.objects.create(
        name=unique("ep"),
        cluster=cluster,
        model=tiny_model,
        entry_script=ECHO_SCORE_PY,
        environment_yaml=default_environment_yaml(),
        owner=deployer,
    )
    service_files_write(deployment)
    backend, spec = backend_for(cluster), service_spec(deployment)
    endpoint = backend.deploy_service(spec)
    while backend.observe_service(spec, endpoint).operation_state != "StageSucceeded":
        azure_emulator.tick()
    submitted = Stage.parse(backend.advance_service(spec, endpoint))
    again = Stage.parse(backend.advance_service(spec, endpoint))
    assert submitted is not None and again is not None
    assert (submitted.stage, again.stage, again.name) == ("deployment", "deployment", "rev1")
    assert azure_emulator.v2.deployments[(deployment.name, "rev1")].provisioning_state == "Creating"
    backend.delete_service(spec)


def test_a_deployment_not_ready_within_azures_timeout_fails_with_its_reason_and_is_removed(
    deployer, workspace, tiny_model, azure_emulator
) -> None:
    azure_emulator.host_start_floor_seconds = 2.0  # Azure's paced timeout, floored here at 2 s
    cluster = managed(deployer, workspace, vm_size=CPU_SIZE).cluster
    deployment, operation = deploy(deployer, cluster, tiny_model, script=SLOW_INIT_PY, expect="failed")
    assert "(DeploymentTimeout)" in operation.error
    deadline = time.monotonic() + 20
    while azure_deployments(azure_emulator, deployment) and time.monotonic() < deadline:
        time.sleep(0.2)
        azure_emulator.tick()
    assert not azure_deployments(azure_emulator, deployment)


# --- what an outside review reproduced ----------------------------------------------------------------------


def settle(emu, predicate, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.2)
        emu.tick()
    return predicate()


def test_an_endpoint_of_the_same_name_that_is_not_this_deployments_is_left_alone(
    deployer, workspace, tiny_model, azure_emulator
) -> None:
    cluster = managed(deployer, workspace, vm_size=CPU_SIZE).cluster
    first, _ = deploy(deployer, cluster, tiny_model)
    assert run_inline(
        deployment_update(user=deployer, deployment=first, max_batch_size=8).pk, timeout=120
    ).state
    assert settle(azure_emulator, lambda: azure_deployments(azure_emulator, first) == {"rev2"})
    # Lynx no longer accounts for it (a row marked Deleted while its endpoint stayed, or one made elsewhere).
    Deployment.objects.filter(pk=first.pk).update(state="Deleted")

    _, operation = deploy(deployer, cluster, tiny_model, name=first.name, expect="failed")

    assert (
        f"An endpoint named {first.name} already exists in the workspace and is not this" in operation.error
    )
    assert azure_deployments(azure_emulator, first) == {"rev2"}  # nothing of it taken over or removed
    assert azure_emulator.v2.endpoints[first.name].traffic == {"rev2": 100}


def test_a_traffic_stage_taken_over_while_azure_sets_it_follows_it_and_removes_the_old_revision(
    deployer, workspace, tiny_model, azure_emulator
) -> None:
    from deployments.models import Operation
    from deployments.services import operation_advance

    cluster = managed(deployer, workspace, vm_size=CPU_SIZE).cluster
    deployment, _ = deploy(deployer, cluster, tiny_model)
    update = deployment_update(user=deployer, deployment=deployment, max_batch_size=8)
    deadline, deployment_ref = time.monotonic() + 120, ""
    while True:  # step until the traffic PUT has gone out
        operation = Operation.objects.get(pk=update.pk)
        ref = operation.params.get("operation_ref", "")
        if '"stage": "deployment"' in ref:
            deployment_ref = ref
        if '"stage": "traffic"' in ref:
            break
        assert time.monotonic() < deadline
        operation_advance(operation_id=update.pk)
        time.sleep(0.2)
    # Its worker died after the PUT, before it kept the reference: the step is taken over, at Azure's pace.
    azure_emulator.time_scale *= 50
    Operation.objects.filter(pk=update.pk).update(
        params={**operation.params, "operation_ref": deployment_ref}, lease_until=None
    )
    operation = run_inline(update.pk, timeout=120)
    assert operation.state == "succeeded", operation.error
    assert settle(azure_emulator, lambda: azure_deployments(azure_emulator, deployment) == {"rev2"})


def test_a_deployment_whose_revision_gets_no_traffic_is_unhealthy_with_the_reason_and_gets_it_back(
    deployer, workspace, tiny_model, azure_emulator
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from deployments.services import services_reconcile
    from deployments.services.specs import backend_for

    cluster = managed(deployer, workspace, vm_size=CPU_SIZE).cluster
    deployment, _ = deploy(deployer, cluster, tiny_model)
    ml = backend_for(cluster).ml
    endpoint = ml.online_endpoints.get(deployment.name)
    endpoint.traffic = {"rev1": 0}  # someone set it in the studio
    ml.online_endpoints.begin_create_or_update(endpoint)
    assert settle(azure_emulator, lambda: not azure_emulator.v2.endpoints[deployment.name].busy)
    Deployment.objects.filter(pk=deployment.pk).update(stats={})  # observe at the next pass
    start = timezone.now()
    for minute in range(12):
        services_reconcile("elsewhere", now=start + timedelta(minutes=minute))
        azure_emulator.tick()
        deployment.refresh_from_db()
        if minute == 0:
            assert deployment.state == "Unhealthy"
            assert "gets traffic" in deployment.error
        if deployment.state == "Healthy":
            break
        time.sleep(0.3)
    assert deployment.state == "Healthy", deployment.error
    assert azure_emulator.v2.endpoints[deployment.name].traffic == {"rev1": 100}
