"""The Azure emulator serves Azure ML v2 Kubernetes online endpoints (issue 14).

The real azure-ai-ml MLClient, unpatched, attaches an AKS cluster that has the AzureML extension as a
KubernetesCompute, deploys KubernetesOnlineDeployments on its instance types, scores through the
extension's front end with the endpoint's key, and is refused what Azure refuses: a cluster without the
extension, a v1 AKS compute for a v2 endpoint, an unknown instance type, GPU pods on a CPU node pool.
"""

from __future__ import annotations

import collections
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.azure_emulator import AzureEmulator
from tests.conftest import wait_for
from tests.targets.azureml import v2_samples as samples

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

T4_POOL = "Standard_NC8as_T4_v3"  # 8 vCPUs, 56 GiB, 1 × NVIDIA T4 per node
CPU_POOL = "Standard_D4s_v5"
GPU_TYPE = {
    "requests": {"cpu": "1", "memory": "4Gi"},
    "limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": 1},
}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}z"


@pytest.fixture(scope="module")
def ml(azure_emulator_session: AzureEmulator) -> Any:
    from azure.ai.ml import MLClient
    from azure.identity import ClientSecretCredential

    emu = azure_emulator_session
    return MLClient(ClientSecretCredential(**emu.credential_kwargs()), **emu.mlclient_kwargs())


def attach(ml: Any, resource_id: str, name: str | None = None, namespace: str = "lynx") -> Any:
    from azure.ai.ml.entities import KubernetesCompute

    compute = KubernetesCompute(name=name or unique("k8s"), resource_id=resource_id, namespace=namespace)
    return ml.compute.begin_attach(compute).result()


def failure_of(call: Any) -> str:
    from azure.core.exceptions import HttpResponseError

    with pytest.raises(HttpResponseError) as caught:
        call()
    return str(caught.value)


def create_endpoint(ml: Any, compute: str) -> str:
    from azure.ai.ml.entities import KubernetesOnlineEndpoint

    endpoint = KubernetesOnlineEndpoint(name=unique("kep"), compute=compute, auth_mode="key")
    return ml.online_endpoints.begin_create_or_update(endpoint).result().name


def k8s_deployment(endpoint: str, root: Path, *, name: str = "blue", **kwargs: Any) -> Any:
    from azure.ai.ml.entities import CodeConfiguration, Environment, KubernetesOnlineDeployment, Model

    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    conda_file = folder / "conda.yaml"
    conda_file.write_text(samples.SERVER_ONLY_CONDA)
    return KubernetesOnlineDeployment(
        name=name,
        endpoint_name=endpoint,
        model=Model(path=samples.tiny_model_dir(folder)),
        environment=Environment(image=samples.GPU_IMAGE, conda_file=str(conda_file)),
        code_configuration=CodeConfiguration(
            code=str(samples.code_dir(folder, samples.WHOAMI_SCORE_PY)), scoring_script="score.py"
        ),
        **{"instance_count": 1, **kwargs},
    )


def set_traffic(ml: Any, name: str, traffic: dict[str, int]) -> None:
    endpoint = ml.online_endpoints.get(name)
    endpoint.traffic = traffic
    ml.online_endpoints.begin_create_or_update(endpoint).result()


def score(ml: Any, name: str, *, key: str | None = None, pin: str = "") -> requests.Response:
    uri = ml.online_endpoints.get(name).scoring_uri
    key = key if key is not None else ml.online_endpoints.get_keys(name).primary_key
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if pin:
        headers["azureml-model-deployment"] = pin
    return requests.post(uri, json={"data": [1]}, headers=headers, timeout=30)


# --- attach and detach --------------------------------------------------------------------------------


def test_a_cluster_with_the_extension_attaches_with_its_instance_types_and_detaches(azure_emulator, ml):
    from azure.core.exceptions import ResourceNotFoundError

    cluster = unique("aks")
    resource_id = azure_emulator.create_aks_for_kubernetes_compute(
        cluster, vm_size=T4_POOL, node_count=2, instance_types={"gpu-t4": GPU_TYPE}
    )
    assert resource_id == (
        f"/subscriptions/{azure_emulator.subscription_id}/resourceGroups/{azure_emulator.resource_group}"
        f"/providers/Microsoft.ContainerService/managedClusters/{cluster}"
    )
    name = unique("k8s")
    attached = attach(ml, resource_id, name)

    compute = ml.compute.get(name)
    assert attached.provisioning_state == compute.provisioning_state == "Succeeded"
    assert compute.type == "kubernetes" and compute.namespace == "lynx" and compute.resource_id == resource_id
    assert compute.properties["defaultInstanceType"] == "defaultinstancetype"
    types = compute.properties["instanceTypes"]
    assert types["defaultinstancetype"]["resources"]["limits"] == {
        "cpu": "2",
        "memory": "2Gi",
        "nvidia.com/gpu": None,
    }
    assert types["gpu-t4"]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert ml.compute.get(name).type == "kubernetes"

    ml.compute.begin_delete(name, action="Detach").result()
    with pytest.raises(ResourceNotFoundError):
        ml.compute.get(name)


def test_attach_refuses_a_cluster_without_the_extension_an_unknown_cluster_and_a_bad_namespace(
    azure_emulator, ml
):
    bare = azure_emulator.create_aks_for_kubernetes_compute(unique("aks"), extension=False)
    assert "Microsoft.AzureML.Kubernetes) is not installed" in failure_of(lambda: attach(ml, bare))
    unknown = bare.rsplit("/", 1)[0] + "/nowhere"
    assert "managedClusters/nowhere' under resource group" in failure_of(lambda: attach(ml, unknown))
    good = azure_emulator.create_aks_for_kubernetes_compute(unique("aks"))
    message = failure_of(lambda: attach(ml, good, namespace="Lynx_NS"))
    assert "a lowercase RFC 1123 label must consist of lower case alphanumeric characters" in message


def test_a_v1_aks_compute_cannot_host_a_v2_endpoint_but_the_same_cluster_attached_as_kubernetes_can(
    azure_emulator, ml
):
    from azure.ai.ml.entities import KubernetesOnlineEndpoint
    from azure.identity import ClientSecretCredential

    emu = azure_emulator
    resource_id = emu.create_aks_for_kubernetes_compute(unique("aks"), node_count=3)
    # The same cluster attached by v1 (azureml-core's AKS attach request, as it sends it).
    token = ClientSecretCredential(**emu.credential_kwargs()).get_token(
        "https://management.azure.com/.default"
    )
    v1_name = unique("aksv1")
    answer = requests.put(
        f"{emu.base_url}{emu.workspace_scope}/computes/{v1_name}?api-version=2021-01-01",
        json={"properties": {"computeType": "AKS", "resourceId": resource_id, "properties": {}}},
        headers={"Authorization": f"Bearer {token.token}"},
        verify=str(emu.ca_bundle),
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    # The attach takes the emulator's (paced) attach time; the SDK's reads move its clock on. One read was
    # enough on a quiet machine, not on a loaded CI one: read until it is done, boundedly.
    wait_for(
        lambda: ml.compute.get(v1_name) and emu.computes[v1_name].provisioning_state == "Succeeded",
        60,
        interval=0.5,
        message="the v1 attach to finish",
    )

    endpoint = KubernetesOnlineEndpoint(name=unique("kep"), compute=v1_name, auth_mode="key")
    message = failure_of(lambda: ml.online_endpoints.begin_create_or_update(endpoint).result())
    assert "Creation of Online Endpoints or deployments on AKS compute type is no longer supported" in message

    k8s_name = attach(ml, resource_id).name
    name = create_endpoint(ml, k8s_name)
    assert ml.online_endpoints.get(name).compute.endswith(f"/computes/{k8s_name}")
    ml.online_endpoints.begin_delete(name=name).result()


# --- deployments ----------------------------------------------------------------------------------------


def test_an_instance_type_the_compute_does_not_have_is_refused(azure_emulator, ml, tmp_path):
    compute = attach(ml, azure_emulator.create_aks_for_kubernetes_compute(unique("aks"))).name
    name = create_endpoint(ml, compute)
    message = failure_of(
        lambda: ml.online_deployments.begin_create_or_update(
            k8s_deployment(name, tmp_path, instance_type="gpu-a100")
        )
    )
    assert "Instance type gpu-a100 is not found in compute" in message and "defaultinstancetype" in message
    ml.online_endpoints.begin_delete(name=name).result()


def test_gpu_pods_on_a_cpu_node_pool_are_unschedulable(azure_emulator, ml, tmp_path):
    resource_id = azure_emulator.create_aks_for_kubernetes_compute(
        unique("aks"), vm_size=CPU_POOL, node_count=2, instance_types={"gpu-t4": GPU_TYPE}
    )
    name = create_endpoint(ml, attach(ml, resource_id).name)
    message = failure_of(
        lambda: ml.online_deployments.begin_create_or_update(
            k8s_deployment(name, tmp_path, instance_type="gpu-t4")
        ).result()
    )
    assert "(OutOfQuota) Kubernetes unschedulable. Details:0/2 nodes are available: 2 Insufficient" in message
    assert "Insufficient nvidia.com/gpu" in message
    assert ml.online_deployments.get("blue", name).provisioning_state == "Failed"
    ml.online_endpoints.begin_delete(name=name).result()


@pytest.fixture
def gpu_endpoint(azure_emulator, ml, tmp_path):
    """A Kubernetes endpoint on a T4 pool: blue on the GPU instance type (100 %), green on the default one
    (0 %), autoscaled by target utilization."""
    from azure.ai.ml.entities import TargetUtilizationScaleSettings

    resource_id = azure_emulator.create_aks_for_kubernetes_compute(
        unique("aks"), vm_size=T4_POOL, node_count=2, instance_types={"gpu-t4": GPU_TYPE}
    )
    compute = attach(ml, resource_id).name
    name = create_endpoint(ml, compute)
    ml.online_deployments.begin_create_or_update(
        k8s_deployment(name, tmp_path, instance_type="gpu-t4")
    ).result()
    set_traffic(ml, name, {"blue": 100})
    scale = TargetUtilizationScaleSettings(
        min_instances=1, max_instances=3, polling_interval=10, target_utilization_percentage=60
    )
    ml.online_deployments.begin_create_or_update(
        k8s_deployment(name, tmp_path, name="green", scale_settings=scale)
    ).result()
    yield name, compute
    ml.online_endpoints.begin_delete(name=name).result()
    assert not azure_emulator.v2.deployments_of(name)
    ml.compute.begin_delete(compute, action="Detach").result()


def test_a_gpu_deployment_answers_through_its_own_score_py_with_its_key(azure_emulator, ml, gpu_endpoint):
    name, compute = gpu_endpoint
    endpoint = ml.online_endpoints.get(name)
    assert endpoint.scoring_uri == f"{azure_emulator.plain_url}/api/v1/endpoint/{name}/score"
    assert endpoint.traffic == {"blue": 100, "green": 0}

    answer = score(ml, name)
    assert answer.ok and answer.headers["azureml-model-deployment"] == "blue"
    assert answer.json()["nvidia_visible_devices"].startswith("GPU-")  # the pod's GPU limit
    assert answer.json()["model_dir"] == "1"  # AZUREML_MODEL_DIR …/azureml-models/<name>/<version>
    assert score(ml, name, key="").status_code == 401
    assert score(ml, name, key="not-the-key").status_code == 401
    green = score(ml, name, pin="green")
    assert green.ok and green.json()["nvidia_visible_devices"] == ""  # defaultinstancetype: no GPU

    deployment = ml.online_deployments.get("blue", name)
    assert deployment.type.lower() == "kubernetes" and deployment.instance_type == "gpu-t4"
    logs = ml.online_deployments.get_logs("blue", name, lines=50)
    assert "POST /score 200" in logs


def test_target_utilization_round_trips_and_traffic_shifts_blue_green(azure_emulator, ml, gpu_endpoint):
    name, _ = gpu_endpoint
    green = ml.online_deployments.get("green", name)
    assert green.instance_type == "defaultinstancetype"
    scale = green.scale_settings
    assert scale.type == "target_utilization"
    assert (scale.min_instances, scale.max_instances, scale.target_utilization_percentage) == (1, 3, 60)
    assert scale.polling_interval == 10

    set_traffic(ml, name, {"blue": 0, "green": 100})
    served = collections.Counter(score(ml, name).headers["azureml-model-deployment"] for _ in range(10))
    assert served == {"green": 10}
    assert "100%" in failure_of(lambda: ml.online_deployments.begin_delete("green", name).result())
