"""The GPU-inference how-to's own code, run against the Azure emulator as written (issue 13's "done when").

Only the connection is adapted (a service principal instead of `Workspace.from_config()` and an interactive
login), and what no longer exists is replaced and said so where it happens: the model is the demo digits
SavedModel (the how-to downloads ResNet-50; nothing may download here), and `gpu_cores=1` stands for the GPU
switch the how-to's SDK had (`InferenceConfig(enable_gpu=True)`, since removed). Everything else is the
how-to's: its cluster size, its conda file, its deployment configuration (no autoscale, 3 replicas, 2 CPU
cores, 4 GB), `Model.deploy`, `wait_for_deployment(show_output=True)`, a JPEG posted with
`Authorization: Bearer <key>`, `service.delete()` and `cluster.delete()`.

Run against Azure in 2026 that code fails twice, and so it must here: `Standard_NC6` was retired on
6 September 2023, and `tensorflow-gpu=1.12` cannot be installed on the Python 3.10 the SDK's conda file asks
for, so the image build fails with a log. With a current GPU size and an environment that builds, the same
code deploys, answers the JPEG through its own `score.py`, and tears down.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings

from tests.azure_emulator import AzureEmulator
from tests.conftest import digit_images
from tests.deployments.savedmodels import build_tf1_savedmodels
from tests.scoring.test_seed_style_entry_script import MODEL_NAME, SEED_STYLE_SCORE_PY

pytestmark = [
    pytest.mark.slow,  # the scoring host imports TensorFlow
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
]


@pytest.fixture
def ws(azure_emulator: AzureEmulator) -> Any:
    """`ws = Workspace.from_config()`, with a service principal (the only adapted line)."""
    from azureml.core import Workspace
    from azureml.core.authentication import ServicePrincipalAuthentication

    fields = azure_emulator.workspace_fields()
    auth = ServicePrincipalAuthentication(fields["tenant_id"], fields["client_id"], fields["client_secret"])
    return Workspace(fields["subscription_id"], fields["resource_group"], fields["workspace_name"], auth=auth)


def test_the_how_tos_nc6_cluster_is_refused_as_retired(ws: Any) -> None:
    from azureml.core.compute import AksCompute, ComputeTarget
    from azureml.exceptions import ComputeTargetException

    aks_name = f"aks-gpu-{uuid.uuid4().hex[:3]}z"  # gpu-1234 would be refused
    prov_config = AksCompute.provisioning_configuration(vm_size="Standard_NC6")
    with pytest.raises(ComputeTargetException) as refused:
        gpu_cluster = ComputeTarget.create(ws, aks_name, prov_config)
        gpu_cluster.wait_for_completion(show_output=True)
    assert "Standard_NC6" in str(refused.value) and "retired" in str(refused.value)
    with pytest.raises(ComputeTargetException):
        ComputeTarget(workspace=ws, name=aks_name)  # nothing was created, nothing bills


def _howto_environment_file(directory: Path) -> Path:
    """The how-to's conda file, made the how-to's way (the SDK picks the Python version)."""
    from azureml.core.conda_dependencies import CondaDependencies

    myenv = CondaDependencies.create(
        conda_packages=["tensorflow-gpu=1.12", "numpy", "ujson"],
        pip_packages=["azureml-core", "azureml-contrib-services", "azureml-defaults"],
    )
    path = directory / "myenv.yml"
    path.write_text(myenv.serialize_to_string())
    return path


def _buildable_environment_file(directory: Path) -> Path:
    """What the how-to's environment becomes in 2026: TensorFlow 2 with its own CUDA 12 libraries."""
    from azureml.core.conda_dependencies import CondaDependencies

    myenv = CondaDependencies.create(
        python_version="3.11",
        conda_packages=["numpy", "ujson"],
        pip_packages=[
            "tensorflow[and-cuda]==2.21.0",
            "Pillow",
            "azureml-core",
            "azureml-contrib-services",
            "azureml-defaults",
        ],
    )
    path = directory / "myenv-2026.yml"
    path.write_text(myenv.serialize_to_string())
    return path


def _register_model(ws: Any, tmp_path: Path) -> Any:
    from azureml.core.model import Model

    built = build_tf1_savedmodels(settings.VAR_DIR / "cache" / "tf1-models")
    model_root = tmp_path / "model"
    shutil.copytree(built / MODEL_NAME, model_root / MODEL_NAME)
    # Model.register uploads paths under the current directory only (the how-to runs beside its model).
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(model_root)
        return Model.register(ws, model_path=MODEL_NAME, model_name=MODEL_NAME, description="how-to")


def _deploy(ws: Any, model: Any, gpu_cluster: Any, source: Path, env_file: Path, base_image: str) -> Any:
    from azureml.core.environment import Environment
    from azureml.core.model import InferenceConfig, Model
    from azureml.core.webservice import AksWebservice

    gpu_aks_config = AksWebservice.deploy_configuration(
        autoscale_enabled=False,
        num_replicas=3,
        cpu_cores=2,
        memory_gb=4,
        gpu_cores=1,  # the GPU switch: InferenceConfig(enable_gpu=True) is gone from the SDK
    )
    myenv = Environment.from_conda_specification(name="myenv", file_path=str(env_file))
    myenv.docker.base_image = base_image
    inference_config = InferenceConfig(
        entry_script="score.py", source_directory=str(source), environment=myenv
    )
    aks_service_name = f"aks-dnn-{uuid.uuid4().hex[:6]}"
    return Model.deploy(
        workspace=ws,
        name=aks_service_name,
        models=[model],
        inference_config=inference_config,
        deployment_config=gpu_aks_config,
        deployment_target=gpu_cluster,
    )


def test_the_how_tos_code_fails_where_azure_would_and_runs_end_to_end_where_it_can(
    ws: Any, azure_emulator: AzureEmulator, tmp_path: Path
) -> None:
    from azureml.core.compute import AksCompute, ComputeTarget
    from azureml.core.environment import DEFAULT_GPU_IMAGE
    from azureml.exceptions import WebserviceException

    # 1. A GPU cluster: the how-to's NC6 is retired (the test above); its suggested replacement, 3 nodes
    #    (a FastProd cluster, the how-to's default purpose, needs at least 3 nodes and 12 vCPUs).
    aks_name = f"aks-gpu-{uuid.uuid4().hex[:3]}z"  # gpu-1234 would be refused
    prov_config = AksCompute.provisioning_configuration(vm_size="Standard_NC4as_T4_v3", agent_count=3)
    gpu_cluster = ComputeTarget.create(ws, aks_name, prov_config)
    gpu_cluster.wait_for_completion(show_output=True)
    assert gpu_cluster.provisioning_state == "Succeeded"

    # 2-3. The entry script and the how-to's conda file; the model registered.
    source = tmp_path / "source"
    source.mkdir()
    (source / "score.py").write_text(SEED_STYLE_SCORE_PY)
    model = _register_model(ws, tmp_path)

    # 4-5. Deploy with the how-to's environment: the image cannot be built, and the log says why.
    failing = _deploy(ws, model, gpu_cluster, source, _howto_environment_file(tmp_path), DEFAULT_GPU_IMAGE)
    with pytest.raises(WebserviceException) as failed:
        failing.wait_for_deployment(show_output=True)
    assert failing.state == "Failed"
    message = str(failed.value)
    assert "Failed Building the Environment" in message, message
    # The error links the build log, as Azure's does; it names the package and the Python it could not meet.
    log_url = re.search(r"More information can be found here: (\S+)", message)
    assert log_url, message
    build_log = requests.get(log_url[1], timeout=30).text
    assert "tensorflow-gpu" in build_log and "3.10" in build_log, build_log
    failing.delete()

    # With an environment that builds (and a CUDA 12 image), the same code deploys.
    gpu_service = _deploy(
        ws,
        model,
        gpu_cluster,
        source,
        _buildable_environment_file(tmp_path),
        "mcr.microsoft.com/azureml/openmpi5.0-cuda12.4-ubuntu22.04",
    )
    gpu_service.wait_for_deployment(show_output=True)
    print(gpu_service.state)
    assert gpu_service.state == "Healthy", gpu_service.get_logs()

    # 6. POST a photo (a handwritten 3, as a JPEG) with the key, and read the scores from its own score.py.
    scoring_url = gpu_service.scoring_uri
    api_key = gpu_service.get_keys()[0]
    headers = {"Content-Type": "application/octet-stream", "Authorization": "Bearer " + api_key}
    labels = []
    for image in digit_images(3, count=3, fmt="JPEG"):
        resp = requests.post(scoring_url, data=image, headers=headers, timeout=60)
        assert resp.status_code == 200, resp.text
        labels.append(json.loads(resp.text)["predictions"][0]["label"])
    assert labels.count("three") >= 2, labels
    assert requests.get(scoring_url, headers=headers, timeout=30).status_code == 405
    assert requests.post(scoring_url, data=b"x", timeout=30).status_code == 401

    # 7. Clean up: the service, then the cluster; neither is left billing.
    gpu_service.delete()
    gpu_cluster.delete()
    gpu_cluster.wait_for_completion(show_output=True, is_delete_operation=True)
    assert gpu_service.name not in azure_emulator.services
    assert aks_name not in azure_emulator.computes
