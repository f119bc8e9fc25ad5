"""AzureMLBackend end to end: the real azureml-core SDK against the local Azure emulator.

Nothing in the SDK is patched: ServicePrincipalAuthentication signs in through MSAL against the
emulated Azure AD, and every ARM / model-management call crosses HTTP (see tests/azure_emulator).
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import requests

from deployments.backends.base import BackendError, ClusterSpec, ServiceSpec, WorkspaceSpec
from deployments.vm_sizes import gpu_sizes, retirement_notice, validate_aks_cluster, vm_size_info
from targets.azureml import v1 as azureml_backend
from targets.azureml.v1 import AzureMLBackend
from tests.azure_emulator import AzureEmulator
from tests.targets.azureml.emulated_models import ECHO_SCORE_PY

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # the SDK's vendored ruamel

T = TypeVar("T")
WAIT_SECONDS = 15.0
GPU_SIZE = "Standard_NC4as_T4_v3"
CONDA_YAML = """name: lynx-infer
dependencies:
  - python=3.10
  - pip:
      - azureml-defaults
      - torch==2.3.1
"""
# A raw-bytes script that answers JSON rows with their means: the emulator runs it, as AKS would.
SCORE_PY = ECHO_SCORE_PY


def eventually(read: Callable[[], T], done: Callable[[T], bool], timeout: float = WAIT_SECONDS) -> T:
    """Poll `read` until `done` holds; fail (never hang) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    value = read()
    while not done(value):
        assert time.monotonic() < deadline, f"still {value!r} after {timeout}s"
        time.sleep(0.1)
        value = read()
    return value


def unique(prefix: str) -> str:
    # Ends with a letter: Azure refuses a compute name ending in a hyphen and digits only (gpu-1).
    return f"{prefix}-{uuid.uuid4().hex[:5]}z"


def workspace_spec(emu: AzureEmulator, **overrides: str) -> WorkspaceSpec:
    values = {
        **emu.workspace_fields(),
        **overrides,
    }
    return WorkspaceSpec(**values)


@pytest.fixture
def backend(azure_emulator: AzureEmulator) -> AzureMLBackend:
    return AzureMLBackend(workspace_spec(azure_emulator))


@pytest.fixture
def model_files(tmp_path: Path) -> tuple[Path, Path]:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "weights.bin").write_bytes(b"\x00" * 2048)
    source = tmp_path / "src"
    source.mkdir()
    (source / "score.py").write_text(SCORE_PY)
    return model_dir, source / "score.py"


def ready_cluster(backend: AzureMLBackend, vm_size: str = GPU_SIZE, nodes: int = 1) -> ClusterSpec:
    cluster = ClusterSpec(
        name=unique("aks"), vm_size=vm_size, node_count=nodes, cluster_purpose="DevTest", location="eastus"
    )
    backend.provision_cluster(cluster)
    eventually(lambda: backend.observe_cluster(cluster).provisioning_state, lambda s: s == "Succeeded")
    return cluster


def service_spec(cluster: ClusterSpec, files: tuple[Path, Path], **overrides: object) -> ServiceSpec:
    model_dir, entry = files
    values: dict[str, object] = {
        "name": unique("svc"),
        "cluster": cluster,
        "model_name": "resnet50",
        "model_version": 1,
        "model_path": model_dir,
        "entry_script": entry,
        "environment_yaml": CONDA_YAML,
        "gpu_enabled": True,
        "gpu_cores": 1,
        "cpu_cores": 1.0,
        "memory_gb": 4.0,
        **overrides,
    }
    return ServiceSpec(**values)  # type: ignore[arg-type]


def score(uri: str, key: str) -> requests.Response:
    return requests.post(
        uri, json={"data": [[1.0, 2.0, 3.0]]}, headers={"Authorization": f"Bearer {key}"}, timeout=10
    )


# --- connection ----------------------------------------------------------------------------------------


def test_connection_signs_in_and_finds_the_workspace(azure_emulator: AzureEmulator) -> None:
    message = azureml_backend.test_connection(workspace_spec(azure_emulator))

    assert azure_emulator.workspace_name in message and azure_emulator.resource_group in message
    assert any(name == "aad.token" for name, _ in azure_emulator.events)


def test_connection_with_a_wrong_secret_says_the_secret_is_invalid(azure_emulator: AzureEmulator) -> None:
    with pytest.raises(BackendError) as err:
        azureml_backend.test_connection(workspace_spec(azure_emulator, client_secret="not-the-secret"))

    assert "AADSTS7000215" in err.value.message and "Invalid client secret" in err.value.message
    assert not err.value.transient


def test_connection_with_an_expired_secret_says_it_expired(azure_emulator: AzureEmulator) -> None:
    azure_emulator.expire_client_secret()

    with pytest.raises(BackendError) as err:
        azureml_backend.test_connection(workspace_spec(azure_emulator))

    assert "AADSTS7000222" in err.value.message and "expired" in err.value.message
    assert not err.value.transient


def test_connection_to_an_unknown_tenant_says_the_tenant_is_unknown(azure_emulator: AzureEmulator) -> None:
    with pytest.raises(BackendError) as err:
        azureml_backend.test_connection(workspace_spec(azure_emulator, tenant_id=str(uuid.uuid4())))

    assert "does not know this tenant ID" in err.value.message and not err.value.transient


def test_connection_to_a_missing_workspace_says_not_found(azure_emulator: AzureEmulator) -> None:
    with pytest.raises(BackendError) as err:
        azureml_backend.test_connection(workspace_spec(azure_emulator, workspace_name="no-such-ws"))

    assert "Workspace not found" in err.value.message and "no-such-ws" in err.value.message
    assert not err.value.transient


def test_connection_without_permission_keeps_azures_authorization_message(
    azure_emulator: AzureEmulator,
) -> None:
    azure_emulator.deny_access()

    with pytest.raises(BackendError) as err:
        azureml_backend.test_connection(workspace_spec(azure_emulator))

    assert "AuthorizationFailed" in err.value.message
    assert "does not have authorization to perform action" in err.value.message
    assert not err.value.transient


# --- the whole GPU lifecycle ----------------------------------------------------------------------------


def test_gpu_cluster_and_service_lifecycle(
    backend: AzureMLBackend, azure_emulator: AzureEmulator, model_files: tuple[Path, Path]
) -> None:
    # Three nodes: the update below runs three replicas of one GPU each, and a T4 node has one.
    cluster = ClusterSpec(
        name=unique("gpu"), vm_size=GPU_SIZE, node_count=3, cluster_purpose="DevTest", location="eastus"
    )
    backend.provision_cluster(cluster)
    assert backend.observe_cluster(cluster).provisioning_state == "Creating"
    observed = eventually(
        lambda: backend.observe_cluster(cluster), lambda o: o.provisioning_state == "Succeeded"
    )
    assert (observed.gpu_count, observed.gpu_kind) == (3, "NVIDIA T4")

    spec = service_spec(cluster, model_files)
    backend.deploy_service(spec)
    assert backend.observe_service(spec).state == "Transitioning"
    healthy = eventually(lambda: backend.observe_service(spec), lambda o: o.state == "Healthy")
    assert healthy.scoring_uri.endswith(f"/api/v1/service/{spec.name}/score")
    assert healthy.swagger_uri.endswith("/swagger.json")
    deployed = azure_emulator.services[spec.name].payload
    assert deployed["containerResourceRequirements"]["gpu"] == 1 and deployed["authEnabled"] is True
    image = deployed["environmentImageRequest"]["environment"]["docker"]["baseImage"]
    assert "cuda" in image  # a CUDA base image, not the deprecated enable_gpu flag

    primary, secondary = backend.service_keys(spec)
    response = score(healthy.scoring_uri, primary)
    assert response.status_code == 200 and response.json()["scores"] == [2.0]
    assert score(healthy.scoring_uri, secondary).status_code == 200
    assert score(healthy.scoring_uri, "wrong-key").status_code == 401

    logs = backend.service_logs(spec, lines=50)
    assert "Booting worker" in logs["inference-server"] and "POST /score 200" in logs["inference-server"]
    assert "resnet50:1" in logs["storage-initializer"]

    new_primary, same_secondary = backend.regenerate_key(spec, "Primary")
    assert new_primary != primary and same_secondary == secondary
    assert score(healthy.scoring_uri, primary).status_code == 401
    assert score(healthy.scoring_uri, new_primary).status_code == 200

    backend.update_service(service_spec(cluster, model_files, name=spec.name, replicas=3))
    assert backend.observe_service(spec).state == "Transitioning"
    scaled = eventually(lambda: backend.observe_service(spec), lambda o: o.state == "Healthy")
    assert scaled.stats["desired_replicas"] == 3 and len(scaled.replicas) == 3
    assert len([m for m in azure_emulator.models if m.name == "resnet50"]) == 1  # update reused the model

    backend.restart_service(spec)  # a rolling update: new pods, same model
    assert backend.observe_service(spec).state == "Transitioning"
    eventually(lambda: backend.observe_service(spec).state, lambda s: s == "Healthy")
    env_vars = azure_emulator.services[spec.name].payload["environmentImageRequest"]["environment"]
    assert "LYNX_RESTARTED_AT" in env_vars["environmentVariables"]

    backend.delete_service(spec)
    assert eventually(lambda: backend.observe_service(spec).state, lambda s: s == "Missing") == "Missing"
    backend.delete_cluster(cluster)
    assert (
        eventually(lambda: backend.observe_cluster(cluster).provisioning_state, lambda s: s == "Deleted")
        == "Deleted"
    )


def test_redelivered_provision_and_deploy_create_nothing_twice(
    backend: AzureMLBackend, azure_emulator: AzureEmulator, model_files: tuple[Path, Path]
) -> None:
    cluster = ClusterSpec(name=unique("twice"), vm_size=GPU_SIZE, node_count=1, cluster_purpose="DevTest")
    backend.provision_cluster(cluster)
    backend.provision_cluster(cluster)  # while Creating
    eventually(lambda: backend.observe_cluster(cluster).provisioning_state, lambda s: s == "Succeeded")
    backend.provision_cluster(cluster)  # once Succeeded
    assert azure_emulator.count("PUT", rf"/computes/{cluster.name}$") == 1

    spec = service_spec(cluster, model_files, model_name=unique("model"))
    creates_before = azure_emulator.count("POST", r"/services$")
    backend.deploy_service(spec)
    uploads = azure_emulator.count("POST", r"/artifacts/batch/metadata/")
    backend.deploy_service(spec)  # while Transitioning
    eventually(lambda: backend.observe_service(spec).state, lambda s: s == "Healthy")
    backend.deploy_service(spec)  # once Healthy
    assert azure_emulator.count("POST", r"/services$") == creates_before + 1
    # The redelivered calls found the service first: no upload, no validation, no second model.
    assert azure_emulator.count("POST", r"/artifacts/batch/metadata/") == uploads
    assert [e for e in azure_emulator.events if e == ("mms.service_create", {"service": spec.name})] == [
        ("mms.service_create", {"service": spec.name})
    ]
    assert [m.name for m in azure_emulator.models].count(spec.model_name) == 1

    # A later deployment of the same Lynx model version finds the registered model instead of uploading again.
    other = service_spec(cluster, model_files, model_name=spec.model_name)
    backend.deploy_service(other)
    assert [m.name for m in azure_emulator.models].count(spec.model_name) == 1


# --- failures Azure reports -----------------------------------------------------------------------------


def test_quota_exceeded_on_create_surfaces_azures_message_and_leaves_nothing(
    backend: AzureMLBackend, azure_emulator: AzureEmulator
) -> None:
    cluster = ClusterSpec(name=unique("quota"), vm_size=GPU_SIZE, node_count=2, cluster_purpose="DevTest")
    azure_emulator.fail_cluster_create_with_quota(cluster.name)

    with pytest.raises(BackendError) as err:
        backend.provision_cluster(cluster)

    assert "QuotaExceeded" in err.value.message
    assert "exceeding approved standardNCASv3_T4 Family Cores quota" in err.value.message
    assert "HTTP 400" in err.value.message and not err.value.transient
    assert backend.observe_cluster(cluster).provisioning_state == "Deleted"
    computes, _services = azureml_backend.list_resources(workspace_spec(azure_emulator))
    assert cluster.name not in [c["name"] for c in computes]


def test_cluster_that_fails_to_provision_is_observed_failed_with_azures_errors(
    backend: AzureMLBackend, azure_emulator: AzureEmulator
) -> None:
    cluster = ClusterSpec(name=unique("broken"), vm_size=GPU_SIZE, node_count=1, cluster_purpose="DevTest")
    azure_emulator.fail_cluster_provisioning(cluster.name, "ClusterCreationFailed", "Subnet is full.")

    backend.provision_cluster(cluster)
    observed = eventually(
        lambda: backend.observe_cluster(cluster), lambda o: o.provisioning_state != "Creating"
    )

    assert observed.provisioning_state == "Failed"
    assert observed.errors == ("ClusterCreationFailed: Subnet is full.",)


def test_deployment_asking_for_more_gpus_than_a_node_has_is_unschedulable(
    backend: AzureMLBackend, model_files: tuple[Path, Path]
) -> None:
    cluster = ready_cluster(backend)
    spec = service_spec(cluster, model_files, gpu_cores=2)  # an NC4as_T4_v3 node has one T4

    backend.deploy_service(spec)
    observed = eventually(lambda: backend.observe_service(spec), lambda o: o.state != "Transitioning")

    assert observed.state == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in observed.error
    assert "0/1 nodes are available" in observed.error


def test_faults_can_be_armed_through_the_control_api(
    backend: AzureMLBackend, azure_emulator: AzureEmulator, model_files: tuple[Path, Path]
) -> None:
    cluster = ready_cluster(backend)
    spec = service_spec(cluster, model_files)
    armed = requests.post(
        f"{azure_emulator.plain_url}/_emulator/unschedulable",
        json={"name": spec.name, "message": "0/1 nodes are available: 1 node(s) had taint."},
        timeout=10,
    )
    assert armed.status_code == 200

    backend.deploy_service(spec)
    observed = eventually(lambda: backend.observe_service(spec), lambda o: o.state != "Transitioning")

    assert observed.state == "Unschedulable" and "had taint" in observed.error


def test_operation_in_progress_409_is_permanent_and_keeps_azures_message(
    backend: AzureMLBackend, model_files: tuple[Path, Path], azure_emulator
) -> None:
    cluster = ready_cluster(backend)
    spec = service_spec(cluster, model_files)
    # Keep the deployment in progress long enough that the update surely lands during it, however busy
    # the machine is.
    azure_emulator.service_deploy_seconds = 5
    backend.deploy_service(spec)

    with pytest.raises(BackendError) as err:  # the deployment is still Transitioning
        backend.update_service(service_spec(cluster, model_files, name=spec.name, replicas=2))

    assert "HTTP 409" in err.value.message and "already in progress" in err.value.message
    assert not err.value.transient


def test_a_single_500_is_retried_and_persistent_500s_are_transient(
    backend: AzureMLBackend, azure_emulator: AzureEmulator
) -> None:
    cluster = ready_cluster(backend)
    compute_path = rf"/rp/workspaces/.*/computes/{cluster.name}$"

    azure_emulator.inject("GET", compute_path, 500, times=1)
    assert backend.observe_cluster(cluster).provisioning_state == "Succeeded"
    assert (azure_emulator.requests[-2][3], azure_emulator.requests[-1][3]) == (500, 200)

    azure_emulator.inject("GET", compute_path, 503, times=4)  # more than the SDK's three retries
    with pytest.raises(BackendError) as err:
        backend.observe_cluster(cluster)
    assert err.value.transient and "HTTP 503" in err.value.message
    assert backend.observe_cluster(cluster).provisioning_state == "Succeeded"


def test_gpu_deployment_to_a_cpu_cluster_is_refused_before_anything_is_created(
    backend: AzureMLBackend, azure_emulator: AzureEmulator, model_files: tuple[Path, Path]
) -> None:
    cluster = ready_cluster(backend, vm_size="Standard_D4s_v5")
    spec = service_spec(cluster, model_files)

    with pytest.raises(BackendError) as err:
        backend.deploy_service(spec)

    assert "Standard_D4s_v5, which has no GPU" in err.value.message
    assert spec.name not in azure_emulator.services


def test_deploying_to_a_cluster_still_creating_is_transient(
    backend: AzureMLBackend, azure_emulator: AzureEmulator, model_files: tuple[Path, Path]
) -> None:
    azure_emulator.cluster_create_seconds = 30
    cluster = ClusterSpec(name=unique("slow"), vm_size=GPU_SIZE, node_count=1, cluster_purpose="DevTest")
    backend.provision_cluster(cluster)

    with pytest.raises(BackendError) as err:
        backend.deploy_service(service_spec(cluster, model_files))

    assert err.value.transient and "still Creating" in err.value.message


def test_attached_cluster_is_detached_not_deleted(
    backend: AzureMLBackend, azure_emulator: AzureEmulator
) -> None:
    resource_id = (
        f"/subscriptions/{azure_emulator.subscription_id}/resourcegroups/aks-rg/providers/"
        "Microsoft.ContainerService/managedClusters/team-gpu"
    )
    azure_emulator.register_external_aks(resource_id, "Standard_NC8as_T4_v3", 2)
    cluster = ClusterSpec(name=unique("att"), cluster_purpose="DevTest", attach_resource_id=resource_id)

    backend.provision_cluster(cluster)
    observed = eventually(
        lambda: backend.observe_cluster(cluster), lambda o: o.provisioning_state == "Succeeded"
    )
    assert (observed.gpu_count, observed.gpu_kind) == (2, "NVIDIA T4")

    backend.delete_cluster(cluster)
    assert ("arm.compute_delete", {"name": cluster.name, "action": "detach"}) in azure_emulator.events
    eventually(lambda: backend.observe_cluster(cluster).provisioning_state, lambda s: s == "Deleted")
    assert resource_id.lower() in azure_emulator.external_aks


def test_list_resources_sees_what_was_created_behind_lynxs_back(azure_emulator: AzureEmulator) -> None:
    name = unique("portal")
    azure_emulator.create_cluster_directly(name, vm_size="Standard_NC8as_T4_v3", agent_count=2)

    computes, services = azureml_backend.list_resources(workspace_spec(azure_emulator))

    found = {c["name"]: c for c in computes}[name]
    assert (found["provisioning_state"], found["vm_size"], found["node_count"]) == (
        "Succeeded",
        "Standard_NC8as_T4_v3",
        2,
    )
    assert found["compute_type"] == "AKS"
    assert isinstance(services, list)


def test_importing_the_backend_imports_neither_the_sdk_nor_tensorflow() -> None:
    code = (
        "import sys, targets.azureml.v1; "
        "print(any(m == 'tensorflow' or m.startswith('azureml.core') for m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[3],
        check=True,
    )
    assert out.stdout.strip() == "False"


# --- VM sizes -----------------------------------------------------------------------------------------

TODAY = dt.date(2026, 11, 25)


def test_retired_nc6_is_refused_with_its_retirement_date_and_a_replacement() -> None:
    errors = validate_aks_cluster("Standard_NC6", 1, "DevTest", TODAY)

    assert errors == [
        "Standard_NC6 (NVIDIA Tesla K80) was retired on 6 September 2023 and can no longer be "
        "created. Use Standard_NC4as_T4_v3 (1× NVIDIA T4) instead."
    ]


def test_fast_prod_with_fewer_than_12_vcpus_suggests_dev_test_or_more_nodes() -> None:
    errors = validate_aks_cluster("Standard_NC4as_T4_v3", 2, "FastProd", TODAY)

    assert len(errors) == 1
    assert "at least 12 vCPUs" in errors[0] and "gives 8" in errors[0]
    assert "Use DevTest, or at least 3 nodes" in errors[0]
    assert validate_aks_cluster("Standard_NC4as_T4_v3", 3, "FastProd", TODAY) == []


def test_cluster_validation_rejects_unknown_sizes_and_empty_clusters() -> None:
    assert validate_aks_cluster("Standard_NC4as_T4_v3", 1, "DevTest", TODAY) == []
    assert validate_aks_cluster("Standard_Nope", 1, "DevTest", TODAY)[0].startswith("Unknown VM size")
    assert "at least 1 node" in validate_aks_cluster("Standard_NC4as_T4_v3", 0, "DevTest", TODAY)[0]


def test_sizes_retire_on_their_planned_date() -> None:
    before, after = dt.date(2026, 9, 29), dt.date(2026, 9, 30)

    assert validate_aks_cluster("Standard_NV12s_v3", 1, "DevTest", before) == []
    assert "scheduled for retirement on 30 September 2026" in retirement_notice("Standard_NV12s_v3", before)
    assert "retired on 30 September 2026" in validate_aks_cluster("Standard_NV12s_v3", 1, "DevTest", after)[0]
    assert "Standard_NV12s_v3" in [s.vm_size for s in gpu_sizes(before)]
    assert "Standard_NV12s_v3" not in [s.vm_size for s in gpu_sizes(after)]


def test_vm_size_data() -> None:
    t4 = vm_size_info("standard_nc4as_t4_v3")
    a10 = vm_size_info("Standard_NV6ads_A10_v5")
    assert t4 is not None and a10 is not None
    assert (t4.vm_size, t4.vcpus, t4.memory_gb, t4.gpu_count, t4.price_eastus_per_hour) == (
        "Standard_NC4as_T4_v3",
        4,
        28,
        1,
        0.526,
    )
    assert a10.gpu_count == pytest.approx(1 / 6) and a10.price_eastus_per_hour is None
    assert vm_size_info("Standard_D3_v2").is_gpu is False  # type: ignore[union-attr]
    assert all(s.is_gpu and not s.is_retired(TODAY) for s in gpu_sizes(TODAY))
    assert "Standard_NC6" not in [s.vm_size for s in gpu_sizes(TODAY)]
