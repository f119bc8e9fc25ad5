"""The v1 backend where it would fail on real Azure (issue 13): each defect reproduced against the emulator.

CUDA agreement, results from the MMS operation, TLS and token auth, batching that reaches azureml-fe, Azure's
cluster rules, attach as the recommended path with the Kubernetes version, and a sync that survives a real
workspace's mix of compute types and shows what Lynx gave up on but Azure still bills for.
"""

from __future__ import annotations

import datetime as dt
import importlib
import time

import numpy as np
import pytest
import requests
from django.urls import reverse

from deployments.cuda import GPU_BASE_IMAGE, image_cuda_major
from deployments.environments import default_entry_script, default_environment_yaml, runtime_version
from deployments.models import Cluster, Deployment, ExternalResource
from deployments.services import Refused, deployment_create
from deployments.services.deployments import deployment_update
from deployments.services.specs import backend_for, service_files_write, service_spec
from deployments.services.transitions import cluster_transition
from deployments.states import ProvisioningState
from deployments.vm_sizes import compute_name_problem, validate_aks_cluster, vm_size_info
from targets.azureml.forms import AzureClusterForm
from targets.azureml.services.clusters import azure_cluster_create, cluster_tls_enable
from targets.azureml.services.sync import azure_sync_workspace
from tests.targets.azureml.conftest import CPU_SIZE, GPU_SIZE, lines_of, provision, run_inline, unique

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")]

# A scorer with no model to load: what matters here is what Azure does with it.
SCORE_OK = "def init():\n    pass\n\n\ndef run(raw_data):\n    return {'ok': True}\n"
SCORE_CRASH = (
    "def init():\n    raise RuntimeError('the weights file is corrupt')\n\n\n"
    "def run(raw_data):\n    return {}\n"
)
PLAIN_ENVIRONMENT = """\
name: plain
channels:
  - conda-forge
dependencies:
  - python=3.11
  - pip
  - pip:
    - azureml-defaults
    - numpy
"""
# The how-to's environment: tensorflow-gpu 1.12 on the Python 3.10 the SDK picks; no image can be built.
HOW_TO_ENVIRONMENT = """\
name: project_environment
dependencies:
  - python=3.10
  - tensorflow-gpu=1.12
  - pip:
    - azureml-defaults
"""
TERMINAL = ("Succeeded", "Failed", "TimedOut", "Cancelled", "Canceled")


def create(user, cluster, model, *, entry_script: str = SCORE_OK, **config) -> Deployment:
    """A deployment recorded (its operation not run yet), with its files written for the backend."""
    operation = deployment_create(
        user=user,
        name=config.pop("name", None) or unique("svc"),
        cluster=cluster,
        model=model,
        entry_script=entry_script,
        environment_yaml=config.pop("environment_yaml", PLAIN_ENVIRONMENT),
        **{"cpu_cores": 0.5, "memory_gb": 1.0, **config},
    )
    deployment = Deployment.objects.get(pk=operation.deployment_id)
    service_files_write(deployment)
    return deployment


def follow(backend, spec, operation_ref: str, timeout: float = 30):
    """Observe with the MMS operation until it ends (what the step does, one observation per step)."""
    deadline = time.monotonic() + timeout
    while True:
        observed = backend.observe_service(spec, operation_ref)
        if observed.operation_state in TERMINAL:
            return observed
        assert time.monotonic() < deadline, f"operation still {observed.operation_state}"
        time.sleep(0.1)


# --- 1. CUDA ---------------------------------------------------------------------------------------------


def test_a_gpu_deployment_is_built_on_a_cuda_12_image_and_asks_score_py_to_require_the_gpu(
    deployer, workspace, tiny_model, azure_emulator
) -> None:
    cluster = provision(deployer, workspace, vm_size=GPU_SIZE)
    deployment = create(
        deployer,
        cluster,
        tiny_model,
        gpu_enabled=True,
        gpu_cores=1,
        environment_yaml=default_environment_yaml(gpu=True),
    )
    backend, spec = backend_for(cluster), service_spec(deployment)

    assert backend.deploy_service(spec)

    environment = azure_emulator.services[deployment.name].payload["environmentImageRequest"]["environment"]
    assert environment["docker"]["baseImage"] == GPU_BASE_IMAGE and image_cuda_major(GPU_BASE_IMAGE) == 12
    assert environment["environmentVariables"]["LYNX_REQUIRE_GPU"] == "1"


def test_a_gpu_deployment_whose_tensorflow_cannot_use_the_images_cuda_is_refused_before_azure(
    deployer, workspace, tiny_model, azure_emulator
) -> None:
    cluster = provision(deployer, workspace, vm_size=GPU_SIZE)
    tensorflow = f"tensorflow=={runtime_version('tensorflow')}"
    environment = default_environment_yaml().replace(tensorflow, "tensorflow==2.12.0")
    deployment = create(
        deployer, cluster, tiny_model, gpu_enabled=True, gpu_cores=1, environment_yaml=environment
    )

    operation = run_inline(deployment.operations.get().pk)

    assert operation.state == "failed"
    assert (
        "tensorflow==2.12.0 needs CUDA 11" in operation.error and "tensorflow[and-cuda]==" in operation.error
    )
    assert deployment.name not in azure_emulator.services  # nothing reached Azure


def test_the_default_score_py_fails_init_when_it_asked_for_a_gpu_and_tensorflow_sees_none(
    monkeypatch,
) -> None:
    monkeypatch.setenv("LYNX_REQUIRE_GPU", "1")
    score = importlib.import_module("scoring.entry_scripts.score_tf2")
    monkeypatch.setattr(score.tf.config, "list_physical_devices", lambda kind=None: [])

    with pytest.raises(RuntimeError, match="asked for a GPU but TensorFlow sees none.*CUDA"):
        score.require_gpu_if_asked()

    monkeypatch.delenv("LYNX_REQUIRE_GPU")
    score.require_gpu_if_asked()  # a CPU deployment runs on the CPU, as asked


# --- 3. results from the MMS operation -------------------------------------------------------------------


def test_a_deploy_whose_image_cannot_be_built_reads_failed_with_azures_error_and_build_log(
    deployer, workspace, tiny_model, azure_emulator
) -> None:
    cluster = provision(deployer, workspace, vm_size=CPU_SIZE)
    deployment = create(deployer, cluster, tiny_model, environment_yaml=HOW_TO_ENVIRONMENT)
    backend, spec = backend_for(cluster), service_spec(deployment)

    operation_ref = backend.deploy_service(spec)
    observed = follow(backend, spec, operation_ref)

    assert operation_ref and observed.operation_state == "Failed"
    assert "EnvironmentBuildFailed" in observed.error and "build.log" in observed.error


def test_an_operation_mms_forgot_or_a_reference_to_another_host_is_no_operation(
    deployer, workspace, tiny_model, azure_emulator
) -> None:
    cluster = provision(deployer, workspace, vm_size=CPU_SIZE)
    deployment = create(deployer, cluster, tiny_model, environment_yaml=HOW_TO_ENVIRONMENT)
    backend, spec = backend_for(cluster), service_spec(deployment)
    operation_ref = backend.deploy_service(spec)
    assert operation_ref
    before = len(azure_emulator.requests)

    forgotten = operation_ref.rpartition("/")[0] + "/00000000-0000-0000-0000-000000000000"
    assert backend.observe_service(spec, forgotten).operation_state == ""  # 404: the state alone decides
    # The workspace's token goes to its own Model Management Service only.
    elsewhere = "https://attacker.example/modelmanagement" + operation_ref.split("/modelmanagement", 1)[1]
    assert backend.observe_service(spec, elsewhere).operation_state == ""
    hosts = {host for _method, host, _path, _status in list(azure_emulator.requests)[before:]}
    assert "attacker.example" not in hosts


def test_an_operation_reference_outside_the_workspaces_mms_operations_over_https_is_no_operation(
    deployer, workspace, tiny_model, azure_emulator
) -> None:
    cluster = provision(deployer, workspace, vm_size=CPU_SIZE)
    deployment = create(deployer, cluster, tiny_model, environment_yaml=HOW_TO_ENVIRONMENT)
    backend, spec = backend_for(cluster), service_spec(deployment)
    operation_ref = backend.deploy_service(spec)
    assert operation_ref and operation_ref.startswith("https://")
    assert follow(backend, spec, operation_ref).operation_state == "Failed"  # the genuine one is read
    workspace_path, _, operation_id = operation_ref.partition("/operations/")
    before = len(azure_emulator.requests)

    refused = [
        "http://" + operation_ref.removeprefix("https://"),  # the token in clear
        workspace_path + "-other/operations/" + operation_id,  # another workspace
        workspace_path + "/services/" + spec.name,  # not an operation
        workspace_path + "/operations/../services/" + spec.name,
    ]

    for reference in refused:
        assert backend.observe_service(spec, reference).operation_state == "", reference
    paths = [path for _method, _host, path, _status in list(azure_emulator.requests)[before:]]
    assert not any("-other/" in path or "/operations/" in path for path in paths), paths


def test_the_lynx_operation_of_a_deploy_whose_image_cannot_be_built_fails_with_azures_error(
    deployer, workspace, tiny_model, azure_emulator
) -> None:
    cluster = provision(deployer, workspace, vm_size=CPU_SIZE)
    deployment = create(deployer, cluster, tiny_model, environment_yaml=HOW_TO_ENVIRONMENT)

    operation = run_inline(deployment.operations.get().pk)

    assert operation.state == "failed", "\n".join(lines_of(operation))
    assert "EnvironmentBuildFailed" in operation.error


def test_an_update_whose_init_crashes_fails_though_the_previous_revision_stays_healthy(
    deployer, workspace, tiny_model, azure_emulator
) -> None:
    cluster = provision(deployer, workspace, vm_size=CPU_SIZE)
    deployment = create(deployer, cluster, tiny_model)
    operation = run_inline(deployment.operations.get().pk)
    assert operation.state == "succeeded", operation.error
    deployment.refresh_from_db()
    backend = backend_for(cluster)

    Deployment.objects.filter(pk=deployment.pk).update(entry_script=SCORE_CRASH)
    deployment.refresh_from_db()
    service_files_write(deployment)
    spec = service_spec(deployment)
    observed = follow(backend, spec, backend.update_service(spec))

    # Azure's words are the operation's; the script's own error is in the service's logs.
    assert (
        observed.operation_state in ("Failed", "TimedOut") and "KubernetesDeploymentFailed" in observed.error
    )
    assert observed.state == "Healthy"  # the previous revision still serves

    update = deployment_update(
        user=deployer,
        deployment=deployment,
        model=tiny_model,
        entry_script=SCORE_CRASH + "\n# again\n",
        environment_yaml=PLAIN_ENVIRONMENT,
    )
    update = run_inline(update.pk)
    assert update.state == "failed" and "KubernetesDeploymentFailed" in update.error


# --- 5. TLS and token auth --------------------------------------------------------------------------------


def test_a_cluster_created_with_a_leaf_domain_label_scores_over_https(
    deployer, workspace, tiny_model, azure_emulator
) -> None:
    operation = azure_cluster_create(
        user=deployer,
        name=unique("tls"),
        workspace=workspace,
        vm_size=CPU_SIZE,
        location="eastus",
        tls={"tls_mode": "leaf", "tls_leaf_domain_label": "lynxtls"},
    )
    operation = run_inline(operation.pk)
    assert operation.state == "succeeded", operation.error
    compute = azure_emulator.computes[operation.cluster.name]
    assert compute.ssl.status == "Auto" and compute.ssl.leaf_domain_label == "lynxtls"

    deployment = create(deployer, operation.cluster, tiny_model)
    assert run_inline(deployment.operations.get().pk).state == "succeeded"
    deployment.refresh_from_db()
    assert deployment.scoring_uri.startswith("https://lynxtls")


def test_tls_is_enabled_and_renewed_on_an_existing_cluster_through_aks_compute_update(
    client, deployer, workspace, azure_emulator
) -> None:
    cluster = provision(deployer, workspace, vm_size=CPU_SIZE)
    client.force_login(deployer)
    page = client.get(reverse("azure_cluster", args=[cluster.pk])).content.decode()
    assert "plain http" in page and "renew it by hand" in page

    enable = run_inline(
        cluster_tls_enable(
            user=deployer, cluster=cluster, tls={"tls_mode": "leaf", "tls_leaf_domain_label": "lynxrenew"}
        ).pk
    )
    assert enable.state == "succeeded", enable.error
    assert azure_emulator.computes[cluster.name].ssl.status == "Auto"
    cluster.refresh_from_db()
    renew = run_inline(cluster_tls_enable(user=deployer, cluster=cluster, tls={}, renew=True).pk)
    assert renew.state == "succeeded", renew.error
    assert azure_emulator.computes[cluster.name].ssl.renewals == 1


def test_an_internal_load_balancer_needs_an_own_certificate(deployer, workspace, azure_emulator) -> None:
    cluster = provision(deployer, workspace, vm_size=CPU_SIZE)
    Cluster.objects.filter(pk=cluster.pk).update(internal_load_balancer=True)
    cluster.refresh_from_db()
    with pytest.raises(Refused, match="own certificate"):
        cluster_tls_enable(
            user=deployer, cluster=cluster, tls={"tls_mode": "leaf", "tls_leaf_domain_label": "lynxilb"}
        )


def test_a_token_auth_deployment_refuses_anonymous_calls_and_takes_a_token_from_the_sdk(
    deployer, workspace, tiny_model, azure_emulator
) -> None:
    cluster = provision(deployer, workspace, vm_size=CPU_SIZE)
    deployment = create(deployer, cluster, tiny_model)
    Deployment.objects.filter(pk=deployment.pk).update(token_auth_enabled=True)

    operation = run_inline(deployment.operations.get().pk)

    assert operation.state == "succeeded", operation.error
    deployment.refresh_from_db()
    payload = azure_emulator.services[deployment.name].payload
    assert payload.get("aadAuthEnabled") is True and payload.get("authEnabled") is False
    token, _refresh = backend_for(cluster).service_access_token(service_spec(deployment))
    anonymous = requests.post(deployment.scoring_uri, data=b"{}", timeout=10)
    with_token = requests.post(
        deployment.scoring_uri, data=b"{}", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert anonymous.status_code == 401 and with_token.status_code == 200


def _switch_auth(deployer, deployment, *, token_auth_enabled: bool):
    """Lynx's own update path with only the auth mode changed; returns the finished operation."""
    update = deployment_update(user=deployer, deployment=deployment, token_auth_enabled=token_auth_enabled)
    return run_inline(update.pk)


def test_an_update_switches_a_key_auth_service_to_token_auth(
    deployer, workspace, tiny_model, azure_emulator
) -> None:
    cluster = provision(deployer, workspace, vm_size=CPU_SIZE)
    deployment = create(deployer, cluster, tiny_model)
    assert run_inline(deployment.operations.get().pk).state == "succeeded"
    deployment.refresh_from_db()
    key = azure_emulator.services[deployment.name].primary_key

    update = _switch_auth(deployer, deployment, token_auth_enabled=True)

    assert update.state == "succeeded", update.error
    payload = azure_emulator.services[deployment.name].payload
    assert payload.get("aadAuthEnabled") is True and payload.get("authEnabled") is False
    deployment.refresh_from_db()
    token, _refresh = backend_for(cluster).service_access_token(service_spec(deployment))
    with_key = requests.post(
        deployment.scoring_uri, data=b"{}", headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    with_token = requests.post(
        deployment.scoring_uri, data=b"{}", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert with_key.status_code == 401 and with_token.status_code == 200


def test_an_update_switches_a_token_auth_service_back_to_key_auth_and_never_to_no_auth(
    deployer, workspace, tiny_model, azure_emulator
) -> None:
    cluster = provision(deployer, workspace, vm_size=CPU_SIZE)
    deployment = create(deployer, cluster, tiny_model)
    Deployment.objects.filter(pk=deployment.pk).update(token_auth_enabled=True)
    assert run_inline(deployment.operations.get().pk).state == "succeeded"
    deployment.refresh_from_db()

    update = _switch_auth(deployer, deployment, token_auth_enabled=False)

    assert update.state == "succeeded", update.error
    svc = azure_emulator.services[deployment.name]
    assert svc.payload.get("authEnabled") is True and svc.payload.get("aadAuthEnabled") is False
    deployment.refresh_from_db()
    anonymous = requests.post(deployment.scoring_uri, data=b"{}", timeout=10)
    with_key = requests.post(
        deployment.scoring_uri,
        data=b"{}",
        headers={"Authorization": f"Bearer {svc.primary_key}"},
        timeout=10,
    )
    assert anonymous.status_code == 401 and with_key.status_code == 200


def test_the_azure_page_says_the_key_travels_in_clear_over_plain_http(
    client, deployer, workspace, tiny_model, azure_emulator
) -> None:
    cluster = provision(deployer, workspace, vm_size=CPU_SIZE)
    deployment = create(deployer, cluster, tiny_model)
    assert run_inline(deployment.operations.get().pk).state == "succeeded"
    client.force_login(deployer)

    page = client.get(reverse("azure_deployment", args=[deployment.pk])).content.decode()

    assert "http://" in page and "travel in clear" in page


# --- 6. batching reaches azureml-fe -----------------------------------------------------------------------


def test_the_batching_settings_reach_azureml_fe(deployer, workspace, tiny_model, azure_emulator) -> None:
    cluster = provision(deployer, workspace, vm_size=CPU_SIZE)
    deployment = create(deployer, cluster, tiny_model, max_batch_size=8, max_batch_wait_ms=50)

    backend_for(cluster).deploy_service(service_spec(deployment))

    payload = azure_emulator.services[deployment.name].payload
    assert payload["maxConcurrentRequestsPerContainer"] == 8
    assert payload["maxQueueWaitMs"] == 1050  # the batch wait plus a second for the model call


def test_the_image_runs_enough_server_threads_for_a_full_batch(deployer, workspace, tiny_model) -> None:
    cluster = provision(deployer, workspace, vm_size=CPU_SIZE)
    deployment = create(deployer, cluster, tiny_model, max_batch_size=64)

    config = backend_for(cluster)._inference_config(service_spec(deployment))

    # azureml-fe hands a replica at most 32 requests at once; the server gets a thread for each, plus four.
    assert config.environment.environment_variables["GUNICORN_CMD_ARGS"] == "--threads 36"


@pytest.mark.slow  # TensorFlow in the emulator's scoring host
def test_concurrent_images_are_batched_by_the_default_script_on_aks(
    deployer, workspace, demo_model_files, azure_emulator
) -> None:
    pytest.importorskip("tensorflow")
    from concurrent.futures import ThreadPoolExecutor

    from scoring.demo_model import render_digit
    from tests.targets.azureml.emulated_models import digits_model

    cluster = provision(deployer, workspace, vm_size=CPU_SIZE)
    deployment = create(
        deployer,
        cluster,
        digits_model(demo_model_files),
        entry_script=default_entry_script(),
        environment_yaml=default_environment_yaml(),
        cpu_cores=1,
        memory_gb=2.0,
        max_batch_size=16,
        max_batch_wait_ms=200,
    )
    operation = run_inline(deployment.operations.get().pk, timeout=240)
    assert operation.state == "succeeded", operation.error
    deployment.refresh_from_db()
    key = azure_emulator.services[deployment.name].primary_key
    image = render_digit(np.full((8, 8), 8.0))

    def post(_index: int) -> requests.Response:
        return requests.post(
            deployment.scoring_uri,
            data=image,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/octet-stream"},
            timeout=60,
        )

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(post, range(16)))

    assert [a.status_code for a in answers] == [200] * 16, answers[0].text[:300]
    sizes = [int(a.headers.get("X-Lynx-Batch-Size", "0")) for a in answers]
    assert max(sizes) > 1, f"every image was scored alone: {sizes}"


# --- 7. cluster rules --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["ab", "-gpu", "1gpu", "gpu-", "a" * 25, "gpu_1", "gpu-1", "gpu-12", "cpu-cluster-1"]
)
def test_azures_compute_name_rule_refuses(name, deployer, workspace) -> None:
    form = AzureClusterForm(
        data={
            "workspace": workspace.pk,
            "mode": "create",
            "name": name,
            "vm_size": CPU_SIZE,
            "node_count": 1,
            "cluster_purpose": "DevTest",
            "idempotency_key": unique("k"),
        }
    )
    assert not form.is_valid() and "name" in form.errors


def test_a_24_character_name_is_accepted_and_provisioned(deployer, workspace, azure_emulator) -> None:
    name = "gpu-" + unique("x")[:6] + "a" * 14  # 24 characters
    assert len(name) == 24
    cluster = provision(deployer, workspace, vm_size=CPU_SIZE, name=name)
    assert Cluster.objects.get(pk=cluster.pk).name == name and name in azure_emulator.computes


@pytest.mark.parametrize("name", ["gpu1", "gpu-1a", "a1-b2c"])
def test_digits_after_a_letter_are_accepted_by_the_name_rule(name, deployer, workspace) -> None:
    form = AzureClusterForm(
        data={
            "workspace": workspace.pk,
            "mode": "create",
            "name": name,
            "vm_size": CPU_SIZE,
            "node_count": 1,
            "cluster_purpose": "DevTest",
            "idempotency_key": unique("k"),
        }
    )
    form.is_valid()
    assert "name" not in form.errors


def test_the_backend_refuses_a_name_azure_would_refuse(deployer, workspace, azure_emulator) -> None:
    from deployments.services import cluster_create

    operation = cluster_create(
        user=deployer,
        name="1gpu",
        backend="azureml",
        workspace=workspace,
        vm_size=CPU_SIZE,
        location="eastus",
    )
    operation = run_inline(operation.pk)
    assert operation.state == "failed" and "starting with a letter" in operation.error
    assert "1gpu" not in azure_emulator.computes


@pytest.mark.parametrize(("name", "refused"), [("gpu-1", True), ("cpu-cluster-12", True), ("gpu-1a", False)])
def test_the_backend_states_azures_hyphen_digits_rule_itself(name, refused) -> None:
    problem = compute_name_problem(name)
    assert bool(problem) is refused
    assert not refused or "ends in a hyphen followed by digits only" in problem


def test_fast_prod_needs_three_nodes_as_well_as_twelve_vcpus() -> None:
    today = dt.date(2026, 11, 29)
    one_a100 = validate_aks_cluster("Standard_NC24ads_A100_v4", 1, "FastProd", today)
    two_t4 = validate_aks_cluster("Standard_NC8as_T4_v3", 2, "FastProd", today)
    assert one_a100 and "at least 3 nodes" in one_a100[0] and "gives 24 vCPUs on 1 node" in one_a100[0]
    assert two_t4 and "at least 3 nodes" in two_t4[0]
    assert validate_aks_cluster("Standard_D4s_v5", 3, "FastProd", today) == []


def test_the_vm_table_follows_the_reference() -> None:
    info = vm_size_info("Standard_NC24rs_v3")
    assert info is not None and info.retired_on == dt.date(2025, 3, 31)


def test_retiring_dv2_sizes_are_not_default_looking_options(deployer, workspace) -> None:
    form = AzureClusterForm()
    cpu_group = dict(form.fields["vm_size"].widget.choices)["CPU sizes (no GPU: no GPU deployments)"]
    names = [value for value, _label in cpu_group]
    assert names[0] == "Standard_D4s_v5"
    assert all("capacity limited" in label for value, label in cpu_group if value.endswith("_v2"))


# --- 8. attach first; the Kubernetes version -------------------------------------------------------------


def test_the_cluster_form_presents_attach_first_with_the_reason(client, deployer, workspace) -> None:
    client.force_login(deployer)
    page = client.get(reverse("azure_cluster_new")).content.decode()
    assert page.index("Attach an existing AKS cluster") < page.index("Provision a new AKS cluster")
    assert "Basic load balancer" in page and "30 September 2025" in page


def test_an_attached_clusters_kubernetes_version_is_read_and_shown(
    client, deployer, workspace, azure_emulator
) -> None:
    resource_id = (
        f"/subscriptions/{workspace.subscription_id}/resourceGroups/{workspace.resource_group}"
        f"/providers/Microsoft.ContainerService/managedClusters/{unique('aks')}"
    )
    azure_emulator.register_external_aks(resource_id, CPU_SIZE, 3, kubernetes_version="1.32.6")

    operation = run_inline(
        azure_cluster_create(
            user=deployer, name=unique("att"), workspace=workspace, attach_resource_id=resource_id
        ).pk
    )

    assert operation.state == "succeeded", operation.error
    cluster = Cluster.objects.get(pk=operation.cluster_id)
    assert cluster.kubernetes_version == "1.32.6"
    client.force_login(deployer)
    assert "1.32.6" in client.get(reverse("azure_cluster", args=[cluster.pk])).content.decode()


# --- sync -------------------------------------------------------------------------------------------------


@pytest.fixture
def clean_emulator(azure_emulator):
    azure_emulator.reset()
    return azure_emulator


@pytest.mark.parametrize(
    ("compute_type", "properties_null"),
    [("AmlCompute", False), ("ComputeInstance", False), ("Kubernetes", False), ("AKS", True)],
)
def test_the_sync_lists_a_real_workspaces_mix_of_compute_types(
    compute_type, properties_null, workspace, clean_emulator
) -> None:
    name = unique("mix")
    clean_emulator.create_cluster_directly(
        name,
        compute_type=compute_type,
        properties_null=properties_null,
        state="Failed" if properties_null else "Succeeded",
    )

    result = azure_sync_workspace(workspace_id=workspace.pk)

    assert result.ok, result.error
    finding = ExternalResource.objects.get(name=name)
    assert (finding.finding, finding.compute_type) == ("unmanaged", compute_type)


def test_a_cluster_lynx_gave_up_on_that_azure_still_has_is_reported_as_still_billing(
    client, viewer, deployer, workspace, clean_emulator
) -> None:
    from deployments.services import cluster_create

    # Lynx gave up waiting (a timeout), while Azure went on and created the cluster.
    cluster = cluster_create(
        user=deployer, name=unique("gone"), backend="azureml", workspace=workspace, vm_size=CPU_SIZE
    ).cluster
    clean_emulator.create_cluster_directly(cluster.name, vm_size=CPU_SIZE)
    cluster_transition(cluster=cluster, to=ProvisioningState.FAILED, message="did not finish in time")
    Cluster.objects.filter(pk=cluster.pk).update(state_changed_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))

    azure_sync_workspace(workspace_id=workspace.pk)

    finding = ExternalResource.objects.get(name=cluster.name)
    assert (finding.finding, finding.cluster_id) == ("billing", cluster.pk)
    client.force_login(viewer)
    assert "still billing" in client.get(reverse("workspace_list")).content.decode().lower()
