"""The Azure emulator builds the environment and runs the deployed score.py, as AKS does (issue 13).

Everything goes through the real azureml-core SDK, as a user's notebook would: `Model.register`,
`Model.deploy` with `AksWebservice.deploy_configuration`, `wait_for_deployment`, `get_logs`,
`get_access_token`. The scoring host is Microsoft's inference server running the uploaded entry script with
the registered model's files.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.azure_emulator import AzureEmulator
from tests.conftest import wait_for
from tests.targets.azureml.emulated_models import ECHO_SCORE_PY

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # the SDK's vendored ruamel

GPU_SIZE = "Standard_NC4as_T4_v3"  # one T4 per node
CPU_SIZE = "Standard_D4s_v5"

CRASHING_INIT_PY = """\
def init():
    raise ValueError("the model files are not where init() looks for them")


def run(data):
    return data
"""

SLOW_INIT_PY = """\
import time


def init():
    time.sleep(120)


def run(data):
    return data
"""

SLOW_RUN_PY = """\
import json
import time


def init():
    pass


def run(data):
    time.sleep(float(json.loads(data)["sleep"]))
    return "done"
"""

GPU_PROBE_PY = """\
import os

import tensorflow as tf


def init():
    global gpus
    gpus = tf.config.list_physical_devices("GPU")
    print(f"GPUs TensorFlow sees: {gpus}")


def run(data):
    return {"gpus": len(gpus), "nvidia_visible_devices": os.environ.get("NVIDIA_VISIBLE_DEVICES")}
"""


def unique(prefix: str) -> str:
    # Ends with a letter: Azure refuses a compute name ending in a hyphen and digits only (gpu-1).
    return f"{prefix}-{uuid.uuid4().hex[:5]}z"


@pytest.fixture
def ws(azure_emulator: AzureEmulator) -> Any:
    from azureml.core import Workspace
    from azureml.core.authentication import ServicePrincipalAuthentication

    fields = azure_emulator.workspace_fields()
    auth = ServicePrincipalAuthentication(fields["tenant_id"], fields["client_id"], fields["client_secret"])
    return Workspace.get(
        fields["workspace_name"],
        auth=auth,
        subscription_id=fields["subscription_id"],
        resource_group=fields["resource_group"],
    )


@pytest.fixture
def model(ws: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A registered model of a few bytes (the echo script only lists its files)."""
    from azureml.core import Model

    weights = tmp_path / "model" / "weights"
    weights.mkdir(parents=True)
    (weights / "saved_model.pb").write_bytes(b"\x08\x01" * 64)
    monkeypatch.chdir(weights.parent)  # the SDK uploads the path as given: keep it relative, as Lynx does
    return Model.register(ws, model_path="weights", model_name=unique("tiny"))


def cluster(emu: AzureEmulator, vm_size: str = CPU_SIZE, nodes: int = 1) -> str:
    name = unique("aks")
    emu.create_cluster_directly(name, vm_size=vm_size, agent_count=nodes)
    return name


def environment(*pip: str, conda: tuple[str, ...] = (), python: str | None = None, image: str = "") -> Any:
    from azureml.core import Environment
    from azureml.core.conda_dependencies import CondaDependencies

    env = Environment(unique("env"))
    kwargs: dict[str, Any] = {"python_version": python} if python else {}
    env.python.conda_dependencies = CondaDependencies.create(
        conda_packages=list(conda), pip_packages=list(pip), **kwargs
    )
    if image:
        env.docker.base_image = image
    return env


def inference_config(tmp_path: Path, script: str, env: Any | None = None) -> Any:
    from azureml.core.model import InferenceConfig

    source = tmp_path / unique("src")
    source.mkdir()
    (source / "score.py").write_text(script)
    return InferenceConfig(
        entry_script="score.py",
        source_directory=str(source),
        environment=env if env is not None else environment("azureml-defaults"),
    )


def deploy(ws: Any, compute: str, models: list[Any], config: Any, **deployment: Any) -> Any:
    from azureml.core import Model
    from azureml.core.compute import AksCompute
    from azureml.core.webservice import AksWebservice

    return Model.deploy(
        ws,
        unique("svc"),
        models,
        inference_config=config,
        deployment_config=AksWebservice.deploy_configuration(**deployment),
        deployment_target=AksCompute(ws, compute),
    )


def deployment_fails(service: Any) -> str:
    from azureml.exceptions import WebserviceException

    with pytest.raises(WebserviceException) as failure:
        service.wait_for_deployment()
    return str(failure.value.message)


def jpeg() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 40, 40)).save(buffer, format="JPEG")
    return buffer.getvalue()


def keyed(service: Any) -> dict[str, str]:
    primary, _secondary = service.get_keys()
    return {"Authorization": f"Bearer {primary}"}


# --- it runs the deployed score.py ---------------------------------------------------------------------


def test_a_rawhttp_script_gets_the_jpegs_bytes_and_answers_get_with_405(
    ws: Any, model: Any, azure_emulator: AzureEmulator, tmp_path: Path
) -> None:
    service = deploy(ws, cluster(azure_emulator), [model], inference_config(tmp_path, ECHO_SCORE_PY))
    service.wait_for_deployment()
    assert service.state == "Healthy"

    image = jpeg()
    answer = requests.post(
        service.scoring_uri, data=image, headers={**keyed(service), "Content-Type": "image/jpeg"}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "bytes": len(image),
        "content_type": "image/jpeg",
        "model_files": ["weights/saved_model.pb"],
    }
    assert answer.headers["x-ms-server-version"].startswith("azmlinfsrv/")  # Microsoft's server answered

    get = requests.get(service.scoring_uri, headers=keyed(service), timeout=30)
    assert (get.status_code, get.text) == (405, "Method not allowed")
    assert requests.post(service.scoring_uri, data=image, timeout=30).status_code == 401  # key auth

    logs = service.get_logs()
    assert "Users's init has completed successfully" in logs and "POST /score 200" in logs


def test_an_init_that_raises_fails_the_deployment_with_the_traceback_in_the_logs(
    ws: Any, model: Any, azure_emulator: AzureEmulator, tmp_path: Path
) -> None:
    service = deploy(ws, cluster(azure_emulator), [model], inference_config(tmp_path, CRASHING_INIT_PY))

    message = deployment_fails(service)

    assert "current service state: Failed" in message
    assert "CrashLoopBackOff" in message and "Your container application crashed" in message
    assert service.state == "Failed"
    logs = service.get_logs()
    assert "Traceback" in logs
    assert "ValueError: the model files are not where init() looks for them" in logs
    assert (
        requests.post(service.scoring_uri, data=b"{}", headers=keyed(service), timeout=30).status_code == 503
    )


def test_a_failed_update_keeps_the_previous_revision_serving(
    ws: Any, model: Any, azure_emulator: AzureEmulator, tmp_path: Path
) -> None:
    service = deploy(ws, cluster(azure_emulator), [model], inference_config(tmp_path, ECHO_SCORE_PY))
    service.wait_for_deployment()

    service.update(models=[model], inference_config=inference_config(tmp_path, CRASHING_INIT_PY))
    message = deployment_fails(service)

    assert "CrashLoopBackOff" in message
    operation = azure_emulator.operations[service._operation_endpoint.rsplit("/", 1)[-1]]
    assert (operation.operation_type, operation.state) == ("Update", "Failed")
    # Azure keeps the old pods: the previous revision still answers (the state MMS shows is our choice).
    assert service.state == "Healthy" and service.error["details"][0]["code"] == "CrashLoopBackOff"
    answer = requests.post(
        service.scoring_uri, json={"data": [[1.0, 3.0]]}, headers=keyed(service), timeout=30
    )
    assert answer.status_code == 200 and answer.json()["scores"] == [2.0]


def test_a_healthy_service_whose_container_dies_turns_unhealthy(
    ws: Any, model: Any, azure_emulator: AzureEmulator, tmp_path: Path
) -> None:
    service = deploy(ws, cluster(azure_emulator), [model], inference_config(tmp_path, ECHO_SCORE_PY))
    service.wait_for_deployment()

    azure_emulator.crash_service_host(service.name)

    def state() -> str:
        service.update_deployment_state()
        return str(service.state)

    wait_for(lambda: state() == "Unhealthy", timeout=30, message="the service to turn Unhealthy")
    assert service.error["details"][0]["code"] == "CrashLoopBackOff"
    assert (
        requests.post(service.scoring_uri, data=b"{}", headers=keyed(service), timeout=30).status_code == 503
    )


# --- the image build ----------------------------------------------------------------------------------------


def test_the_how_tos_tensorflow_gpu_1_12_on_python_3_10_fails_the_build_with_its_log(
    ws: Any, model: Any, azure_emulator: AzureEmulator, tmp_path: Path
) -> None:
    # The how-to's environment: CondaDependencies.create puts the SDK's default python=3.10.18 in.
    env = environment("azureml-defaults", conda=("tensorflow-gpu=1.12",))
    service = deploy(ws, cluster(azure_emulator), [model], inference_config(tmp_path, ECHO_SCORE_PY, env))

    message = deployment_fails(service)

    assert "EnvironmentBuildFailed" in message and "Failed Building the Environment." in message
    log_uri = message.split("More information can be found here: ", 1)[1].split()[0]
    build_log = requests.get(log_uri, timeout=30).text  # the blob, through the emulator's storage proxy
    assert "ResolvePackageNotFound" in build_log and "tensorflow-gpu=1.12" in build_log
    assert "Python 3.10" in build_log
    assert service.state == "Failed"
    assert "ResolvePackageNotFound" in service.get_logs()


def test_an_environment_without_the_inference_server_fails_the_build(
    ws: Any, model: Any, azure_emulator: AzureEmulator, tmp_path: Path
) -> None:
    env = environment("numpy")
    service = deploy(ws, cluster(azure_emulator), [model], inference_config(tmp_path, ECHO_SCORE_PY, env))

    message = deployment_fails(service)

    assert "EnvironmentBuildFailed" in message and service.state == "Failed"
    logs = service.get_logs()
    assert "No module named 'azureml_inference_server_http'" in logs and "azureml-defaults" in logs


@pytest.mark.slow
def test_a_gpu_deployment_sees_the_gpu_only_when_tensorflow_can_use_the_images_cuda(
    ws: Any, model: Any, azure_emulator: AzureEmulator, tmp_path: Path
) -> None:
    from azureml.core.environment import DEFAULT_GPU_IMAGE  # CUDA 11.8 / cuDNN 8

    assert "cuda11.8" in DEFAULT_GPU_IMAGE
    compute = cluster(azure_emulator, GPU_SIZE, nodes=2)  # one T4 for each service
    pinned = environment("azureml-defaults", "tensorflow==2.21.0", python="3.11", image=DEFAULT_GPU_IMAGE)
    and_cuda = environment(
        "azureml-defaults", "tensorflow[and-cuda]==2.21.0", python="3.11", image=DEFAULT_GPU_IMAGE
    )
    on_cpu = deploy(ws, compute, [model], inference_config(tmp_path, GPU_PROBE_PY, pinned), gpu_cores=1)
    on_gpu = deploy(ws, compute, [model], inference_config(tmp_path, GPU_PROBE_PY, and_cuda), gpu_cores=1)
    on_cpu.wait_for_deployment()
    on_gpu.wait_for_deployment()

    seen = {
        name: requests.post(svc.scoring_uri, json={}, headers=keyed(svc), timeout=60).json()
        for name, svc in (("cuda 11.8 + tensorflow 2.21", on_cpu), ("and-cuda", on_gpu))
    }

    assert seen["cuda 11.8 + tensorflow 2.21"]["gpus"] == 0  # Healthy, and silently on the CPU
    assert seen["and-cuda"]["gpus"] == 1
    assert seen["cuda 11.8 + tensorflow 2.21"]["nvidia_visible_devices"]  # the node did give it a GPU
    assert on_cpu.state == on_gpu.state == "Healthy"


# --- the front end ------------------------------------------------------------------------------------------


def _score_together(service: Any, count: int, sleep: float) -> list[tuple[int, float]]:
    def one(_: int) -> tuple[int, float]:
        started = time.monotonic()
        answer = requests.post(
            service.scoring_uri, data=json.dumps({"sleep": sleep}), headers=keyed(service), timeout=60
        )
        return answer.status_code, time.monotonic() - started

    with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


def test_one_request_per_replica_the_next_waits_and_gets_503_after_the_queue_wait(
    ws: Any, model: Any, azure_emulator: AzureEmulator, tmp_path: Path
) -> None:
    service = deploy(
        ws,
        cluster(azure_emulator),
        [model],
        inference_config(tmp_path, SLOW_RUN_PY),
        autoscale_enabled=False,
        num_replicas=1,
        replica_max_concurrent_requests=1,
        max_request_wait_time=10_000,
    )
    service.wait_for_deployment()

    waited = _score_together(service, 2, sleep=1.5)
    assert [status for status, _ in waited] == [200, 200]
    assert max(seconds for _, seconds in waited) >= 2.5  # the second waited for the first

    service.update(max_request_wait_time=200)
    service.wait_for_deployment()
    refused = sorted(_score_together(service, 2, sleep=1.5))
    assert [status for status, _ in refused] == [200, 503]
    assert refused[1][1] < 1.4  # the 503 came after the queue wait, not after the first request


def test_token_auth_answers_401_without_a_token_and_200_with_get_access_token(
    ws: Any, model: Any, azure_emulator: AzureEmulator, tmp_path: Path
) -> None:
    service = deploy(
        ws,
        cluster(azure_emulator),
        [model],
        inference_config(tmp_path, ECHO_SCORE_PY),
        auth_enabled=False,
        token_auth_enabled=True,
    )
    service.wait_for_deployment()
    body = {"data": [[1.0, 2.0, 3.0]]}

    assert requests.post(service.scoring_uri, json=body, timeout=30).status_code == 401
    wrong = {"Authorization": "Bearer not-a-token"}
    assert requests.post(service.scoring_uri, json=body, headers=wrong, timeout=30).status_code == 401

    token = service.get_access_token()
    answer = requests.post(
        service.scoring_uri, json=body, headers={"Authorization": f"Bearer {token.access_token}"}, timeout=30
    )
    assert answer.status_code == 200 and answer.json()["scores"] == [2.0]
    assert token.token_type == "Bearer" and token.expiry_on > token.refresh_after


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_a_compute_with_tls_gives_an_https_scoring_uri_answered_through_the_proxy(
    ws: Any, model: Any, azure_emulator: AzureEmulator, tmp_path: Path
) -> None:
    from tests.azure_emulator.state import SslConfiguration

    compute = cluster(azure_emulator)
    fqdn = "lynxa1b.eastus.cloudapp.azure.com"
    azure_emulator.computes[compute].ssl = SslConfiguration(
        status="Auto", leaf_domain_label="lynx", fqdn=fqdn
    )
    service = deploy(ws, compute, [model], inference_config(tmp_path, ECHO_SCORE_PY))
    service.wait_for_deployment()

    assert service.scoring_uri == f"https://{fqdn}/api/v1/service/{service.name}/score"
    # HTTPS_PROXY (the emulator's env) carries it to the emulator, whose certificate names the region's
    # *.cloudapp.azure.com as Microsoft's does: the client verifies it.
    answer = requests.post(
        service.scoring_uri, json={"data": [[1.0, 3.0]]}, headers=keyed(service), timeout=30
    )
    assert answer.status_code == 200 and answer.json()["scores"] == [2.0]


# --- states ----------------------------------------------------------------------------------------------


def test_an_init_slower_than_the_deployment_timeout_ends_timed_out(
    ws: Any, model: Any, azure_emulator: AzureEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Azure's 1200 s at a thousandth of Azure's pace is 1.2 s; the floor lets a real server start meanwhile.
    monkeypatch.setattr(azure_emulator, "time_scale", 0.001)
    monkeypatch.setattr(azure_emulator, "host_start_floor_seconds", 4.0)
    service = deploy(ws, cluster(azure_emulator), [model], inference_config(tmp_path, SLOW_INIT_PY))

    message = deployment_fails(service)

    assert "DeploymentTimedOut" in message and service.state == "Failed"
    operation = azure_emulator.operations[service._operation_endpoint.rsplit("/", 1)[-1]]
    assert operation.state == "TimedOut"


def test_a_cancelled_deployment_ends_its_operation_cancelled(
    ws: Any, model: Any, azure_emulator: AzureEmulator, tmp_path: Path
) -> None:
    service = deploy(ws, cluster(azure_emulator), [model], inference_config(tmp_path, SLOW_INIT_PY))

    azure_emulator.cancel_service_operation(service.name)

    message = deployment_fails(service)
    assert "OperationCancelled" in message and service.state == "Failed"
    operation = azure_emulator.operations[service._operation_endpoint.rsplit("/", 1)[-1]]
    assert operation.state == "Cancelled"


def test_deleting_the_compute_removes_its_services(
    ws: Any, model: Any, azure_emulator: AzureEmulator, tmp_path: Path
) -> None:
    from azureml.core.compute import AksCompute
    from azureml.core.webservice import Webservice
    from azureml.exceptions import WebserviceException

    compute = cluster(azure_emulator)
    service = deploy(ws, compute, [model], inference_config(tmp_path, ECHO_SCORE_PY))
    service.wait_for_deployment()
    host = azure_emulator.services[service.name].host
    headers = keyed(service)

    AksCompute(ws, compute).delete()

    with pytest.raises(WebserviceException, match="WebserviceNotFound|No service with name"):
        Webservice(ws, service.name)
    assert requests.post(service.scoring_uri, json={}, headers=headers, timeout=30).status_code == 404
    wait_for(lambda: host.exited, timeout=20, message="the service's scoring host to stop")


# --- the emulator's own tables and the node's GPUs, without a deployment -----------------------------------


def _environment_request(
    *dependencies: Any, image: str = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04"
) -> dict:
    return {
        "python": {"condaDependencies": {"dependencies": list(dependencies)}},
        "docker": {"baseImage": image},
    }


CUDA_11_8 = "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04"
CUDA_12_4 = "mcr.microsoft.com/azureml/openmpi5.0-cuda12.4-ubuntu22.04"


@pytest.mark.parametrize(
    ("dependencies", "image", "usable"),
    [
        (["python=3.11", {"pip": ["azureml-defaults", "tensorflow==2.21.0"]}], CUDA_11_8, False),
        (["python=3.11", {"pip": ["azureml-defaults", "tensorflow[and-cuda]==2.21.0"]}], CUDA_11_8, True),
        (["python=3.11", {"pip": ["azureml-defaults", "tensorflow==2.21.0"]}], CUDA_12_4, True),
        (["python=3.10", {"pip": ["azureml-defaults", "tensorflow==2.14.0"]}], CUDA_11_8, True),
        (["python=3.10", {"pip": ["azureml-defaults", "tensorflow==2.14.0"]}], CUDA_12_4, False),
        (["python=3.11", {"pip": ["azureml-defaults", "torch==2.3.1"]}], CUDA_11_8, True),
    ],
)
def test_the_image_builds_and_says_whether_the_framework_can_use_its_cuda(
    dependencies: list[Any], image: str, usable: bool
) -> None:
    from tests.azure_emulator.build import build_image

    result = build_image(_environment_request(*dependencies, image=image))

    assert result.ok, result.log
    assert result.gpu_usable is usable, result.gpu_note


@pytest.mark.parametrize(
    ("dependencies", "words"),
    [
        (["python=3.10.18", "tensorflow-gpu=1.12", {"pip": ["azureml-defaults"]}], "ResolvePackageNotFound"),
        (
            ["python=3.9", {"pip": ["azureml-defaults", "tensorflow==2.21.0"]}],
            "No matching distribution found",
        ),
        (
            ["python=3.13", {"pip": ["azureml-defaults", "tensorflow==2.19.0"]}],
            "No matching distribution found",
        ),
        (["python=3.11", {"pip": ["tensorflow==2.21.0"]}], "No module named 'azureml_inference_server_http'"),
    ],
)
def test_an_unsolvable_environment_fails_the_build_in_the_solvers_words(
    dependencies: list[Any], words: str
) -> None:
    from tests.azure_emulator.build import build_image

    result = build_image(_environment_request(*dependencies))

    assert not result.ok and words in "\n".join(result.log)
    assert result.error is not None and result.error["code"] == "EnvironmentBuildFailed"


def test_tensorflow_gpu_1_12_builds_on_the_python_it_was_made_for() -> None:
    from tests.azure_emulator.build import build_image

    result = build_image(
        _environment_request("python=3.6", "tensorflow-gpu=1.12", {"pip": ["azureml-defaults"]})
    )

    assert result.ok, result.log


FAKE_TENSORFLOW = """\
import collections

PhysicalDevice = collections.namedtuple("PhysicalDevice", ["name", "device_type"])
_MACHINE = [PhysicalDevice("/physical_device:CPU:0", "CPU"), PhysicalDevice("/physical_device:GPU:0", "GPU")]


def list_physical_devices(device_type=None):
    return [d for d in _MACHINE if device_type is None or d.device_type == device_type]


get_visible_devices = list_physical_devices
"""

SHOW_DEVICES = """\
import json, sys
before = "tensorflow" in sys.modules
import tensorflow as tf
print(json.dumps({
    "imported_at_start": before,
    "gpu": [d.name for d in tf.config.list_physical_devices("GPU")],
    "visible": [d.name for d in tf.config.get_visible_devices("GPU")],
    "all": [d.device_type for d in tf.config.list_physical_devices()],
}))
"""


@pytest.mark.parametrize(
    ("gpus", "expected"),
    [
        ("2", ["/physical_device:GPU:0", "/physical_device:GPU:1"]),
        ("0", []),  # the framework cannot use the image's CUDA: no GPU, whatever the machine has
        (None, ["/physical_device:GPU:0"]),  # not a scoring host: TensorFlow untouched
    ],
)
def test_the_gpu_shim_shows_tensorflow_exactly_the_nodes_gpus(
    tmp_path: Path, gpus: str | None, expected: list[str]
) -> None:
    import os
    import subprocess
    import sys

    from tests.azure_emulator.hosts import GPU_SHIM

    package = tmp_path / "tensorflow"
    package.mkdir()
    (package / "__init__.py").write_text("from . import config\n")
    (package / "config.py").write_text(FAKE_TENSORFLOW)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": f"{GPU_SHIM}{os.pathsep}{tmp_path}"}
    if gpus is not None:
        env["AZURE_EMULATOR_GPUS"] = gpus

    shown = json.loads(
        subprocess.run(
            [sys.executable, "-c", SHOW_DEVICES], env=env, capture_output=True, text=True, check=True
        ).stdout
    )

    assert shown["imported_at_start"] is False  # lazy: nothing imports TensorFlow for a script that does not
    assert shown["gpu"] == shown["visible"] == expected
    assert shown["all"] == ["CPU"] + ["GPU"] * len(expected)
