"""The Azure emulator serves Azure ML v2 for managed online endpoints (issue 14, item 4).

The real azure-ai-ml MLClient, unpatched, reaches the emulator through its own custom-cloud options
(`emulator.credential_kwargs()` / `mlclient_kwargs()`). Microsoft's sample runs with only that connection
adapted; each failure mode Azure has for a managed deployment is reproduced, and the data plane routes by the
endpoint's traffic split, over TLS, with key auth.
"""

from __future__ import annotations

import collections
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.azure_emulator import AzureEmulator, catalog
from tests.targets.azureml import v2_samples as samples

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

DS3 = "Standard_DS3_v2"  # the sample's instance type: 4 cores, standardDSv2Family
T4 = "Standard_NC4as_T4_v3"  # 1 × NVIDIA T4


def unique(prefix: str = "ep") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def ml(azure_emulator_session: AzureEmulator) -> Any:
    """An MLClient as a user makes one; only its connection names the emulator."""
    from azure.ai.ml import MLClient
    from azure.identity import ClientSecretCredential

    emu = azure_emulator_session
    return MLClient(ClientSecretCredential(**emu.credential_kwargs()), **emu.mlclient_kwargs())


def create_endpoint(ml: Any, name: str | None = None, **kwargs: Any) -> Any:
    from azure.ai.ml.entities import ManagedOnlineEndpoint

    endpoint = ManagedOnlineEndpoint(name=name or unique(), auth_mode="key", **kwargs)
    return ml.online_endpoints.begin_create_or_update(endpoint).result()


def deployment(
    endpoint: str,
    root: Path,
    *,
    name: str = "blue",
    script: str = samples.WHOAMI_SCORE_PY,
    conda: str = samples.SERVER_ONLY_CONDA,
    image: str = samples.CPU_IMAGE,
    instance_type: str = DS3,
    instance_count: int = 1,
    **kwargs: Any,
) -> Any:
    from azure.ai.ml.entities import CodeConfiguration, Environment, ManagedOnlineDeployment, Model

    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    conda_file = folder / "conda.yaml"
    conda_file.write_text(conda)
    return ManagedOnlineDeployment(
        name=name,
        endpoint_name=endpoint,
        model=Model(path=samples.tiny_model_dir(folder)),
        environment=Environment(image=image, conda_file=str(conda_file)),
        code_configuration=CodeConfiguration(
            code=str(samples.code_dir(folder, script)), scoring_script="score.py"
        ),
        instance_type=instance_type,
        instance_count=instance_count,
        **kwargs,
    )


def failure_of(call: Any) -> str:
    from azure.core.exceptions import HttpResponseError

    with pytest.raises(HttpResponseError) as caught:
        call()
    return str(caught.value)


def set_traffic(ml: Any, name: str, traffic: dict[str, int]) -> Any:
    endpoint = ml.online_endpoints.get(name)
    endpoint.traffic = traffic
    return ml.online_endpoints.begin_create_or_update(endpoint).result()


def score(
    ml: Any, name: str, *, pin: str = "", key: str | None = None, body: Any = None
) -> requests.Response:
    """POST to the endpoint's scoring URI as any HTTP client would (HTTPS_PROXY reaches the emulator)."""
    endpoint = ml.online_endpoints.get(name)
    key = key if key is not None else ml.online_endpoints.get_keys(name).primary_key
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    if pin:
        headers["azureml-model-deployment"] = pin
    return requests.post(endpoint.scoring_uri, json=body or {"data": [1]}, headers=headers, timeout=30)


# --- Microsoft's sample ------------------------------------------------------------------------------------


def test_microsofts_managed_endpoint_sample_runs_with_only_its_connection_adapted(
    azure_emulator, ml, tmp_path
):
    """online-endpoints-simple-deployment.ipynb, cell by cell (the local=True cells need Docker and are left
    out); `ml_client` is the only line that differs from the notebook."""
    import datetime

    import joblib
    import numpy
    from azure.ai.ml.entities import (
        CodeConfiguration,
        Environment,
        ManagedOnlineDeployment,
        ManagedOnlineEndpoint,
        Model,
    )

    ml_client = ml
    model_dir = samples.sample_model_dir(tmp_path)

    endpoint_name = "endpt-" + datetime.datetime.now().strftime("%m%d%H%M%f")
    endpoint = ManagedOnlineEndpoint(
        name=endpoint_name,
        description="this is a sample online endpoint",
        auth_mode="key",
        tags={"foo": "bar"},
    )
    model = Model(path=str(model_dir / "sklearn_regression_model.pkl"))
    env = Environment(conda_file=str(samples.SAMPLE_CONDA_FILE), image=samples.SAMPLE_IMAGE)
    blue_deployment = ManagedOnlineDeployment(
        name="blue",
        endpoint_name=endpoint_name,
        model=model,
        environment=env,
        code_configuration=CodeConfiguration(code=str(samples.SAMPLE_SCORING_DIR), scoring_script="score.py"),
        instance_type="Standard_DS3_v2",
        instance_count=1,
    )
    ml_client.online_endpoints.begin_create_or_update(endpoint).result()
    ml_client.online_deployments.begin_create_or_update(blue_deployment).result()
    endpoint.traffic = {"blue": 100}
    ml_client.online_endpoints.begin_create_or_update(endpoint).result()
    answer = ml_client.online_endpoints.invoke(
        endpoint_name=endpoint_name, deployment_name="blue", request_file=str(samples.SAMPLE_REQUEST)
    )
    endpoint = ml_client.online_endpoints.get(name=endpoint_name)
    logs = ml_client.online_deployments.get_logs(name="blue", endpoint_name=endpoint_name, lines=50)

    # The deployed score.py answered with the model's own predictions.
    rows = json.loads(samples.SAMPLE_REQUEST.read_text())["data"]
    expected = joblib.load(model_dir / "sklearn_regression_model.pkl").predict(numpy.array(rows)).tolist()
    assert json.loads(answer) == pytest.approx(expected)
    assert endpoint.traffic == {"blue": 100}
    assert endpoint.scoring_uri == f"https://{endpoint_name}.eastus.inference.ml.azure.com/score"
    assert endpoint.tags == {"foo": "bar"} and endpoint.provisioning_state == "Succeeded"
    assert "Users's init has completed successfully" in logs and "POST /score 200" in logs
    storage_logs = ml_client.online_deployments.get_logs(
        name="blue", endpoint_name=endpoint_name, lines=50, container_type="storage-initializer"
    )
    assert "sklearn_regression_model.pkl" not in storage_logs or "Downloaded model" in storage_logs

    # Keys: the scoring URI takes either key; a regenerated key replaces the old one.
    keys = ml_client.online_endpoints.get_keys(endpoint_name)
    assert score(
        ml, endpoint_name, key=keys.secondary_key, body=json.loads(samples.SAMPLE_REQUEST.read_text())
    ).ok
    ml_client.online_endpoints.begin_regenerate_keys(endpoint_name, key_type="primary").result()
    new_keys = ml_client.online_endpoints.get_keys(endpoint_name)
    assert new_keys.primary_key != keys.primary_key and new_keys.secondary_key == keys.secondary_key
    assert score(ml, endpoint_name, key=keys.primary_key).status_code == 401
    assert score(ml, endpoint_name, key=new_keys.primary_key, body={"data": rows}).json() == pytest.approx(
        expected
    )

    # Deleting the endpoint deletes its deployment; its container stops.
    host = azure_emulator.v2.deployments[(endpoint_name, "blue")].host
    ml_client.online_endpoints.begin_delete(name=endpoint_name).result()
    assert endpoint_name not in [e.name for e in ml_client.online_endpoints.list()]
    assert (endpoint_name, "blue") not in azure_emulator.v2.deployments
    assert host.process.wait(timeout=10) is not None


# --- traffic ---------------------------------------------------------------------------------------------


@pytest.fixture
def blue_green(azure_emulator, ml, tmp_path):
    """An endpoint with blue (CPU) at 100 % and green (a T4 GPU instance) just deployed, at 0 %."""
    emu, root = azure_emulator, tmp_path
    name = create_endpoint(ml).name
    ml.online_deployments.begin_create_or_update(deployment(name, root, name="blue")).result()
    set_traffic(ml, name, {"blue": 100})
    ml.online_deployments.begin_create_or_update(
        deployment(name, root, name="green", instance_type=T4, image=samples.GPU_IMAGE)
    ).result()
    yield name
    ml.online_endpoints.begin_delete(name=name).result()
    assert not emu.v2.deployments_of(name)


def test_a_new_deployment_gets_no_traffic_until_it_is_set_and_the_header_reaches_it(
    azure_emulator, ml, blue_green
):
    assert ml.online_endpoints.get(blue_green).traffic == {"blue": 100, "green": 0}
    served = collections.Counter(score(ml, blue_green).headers["azureml-model-deployment"] for _ in range(20))
    assert served == {"blue": 20}
    pinned = score(ml, blue_green, pin="green")
    assert pinned.ok and pinned.headers["azureml-model-deployment"] == "green"
    # The GPU instance's container was given its GPU (as the device plugin does); the CPU one none.
    assert pinned.json()["nvidia_visible_devices"] != ""
    assert score(ml, blue_green, pin="blue").json()["nvidia_visible_devices"] == ""


def test_a_canary_split_routes_about_its_share_and_the_header_pins_a_deployment(
    azure_emulator, ml, blue_green
):
    set_traffic(ml, blue_green, {"blue": 90, "green": 10})
    try:
        key = ml.online_endpoints.get_keys(blue_green).primary_key
        uri = ml.online_endpoints.get(blue_green).scoring_uri
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {key}"
            served = collections.Counter(
                session.post(uri, json={"data": [i]}, timeout=30).headers["azureml-model-deployment"]
                for i in range(200)
            )
            pinned = {
                session.post(uri, json={}, headers={"azureml-model-deployment": "blue"}, timeout=30).headers[
                    "azureml-model-deployment"
                ]
                for _ in range(10)
            }
        assert served["blue"] + served["green"] == 200
        assert 6 <= served["green"] <= 40, served  # 10 % of 200 = 20; a binomial spread of ±3σ ≈ ±13
        assert pinned == {"blue"}
    finally:
        set_traffic(ml, blue_green, {"blue": 100})


def test_no_traffic_anywhere_answers_azures_no_deployments_error(azure_emulator, ml, blue_green):
    set_traffic(ml, blue_green, {"blue": 0, "green": 0})
    try:
        answer = score(ml, blue_green)
        assert answer.status_code == 404
        assert answer.text.startswith("No valid deployments to route to.")
        assert score(ml, blue_green, pin="blue").ok  # a header still reaches a deployment at 0 %
    finally:
        set_traffic(ml, blue_green, {"blue": 100})


def test_traffic_to_a_deployment_that_does_not_exist_is_refused(azure_emulator, ml, blue_green):
    assert "don't exist: purple" in failure_of(
        lambda: set_traffic(ml, blue_green, {"blue": 50, "purple": 50})
    )


# --- what Azure refuses up front -------------------------------------------------------------------------


def test_a_retired_instance_type_is_refused(azure_emulator, ml, tmp_path):
    name = create_endpoint(ml).name
    message = failure_of(
        lambda: ml.online_deployments.begin_create_or_update(
            deployment(name, tmp_path, instance_type="Standard_NC6s_v3")
        )
    )
    assert "Standard_NC6s_v3 was retired on 2025-09-30" in message


def test_an_instance_type_managed_endpoints_do_not_offer_is_refused(azure_emulator, ml, tmp_path):
    name = create_endpoint(ml).name
    message = failure_of(
        lambda: ml.online_deployments.begin_create_or_update(
            deployment(name, tmp_path, instance_type="Standard_D4s_v5")
        )
    )
    assert "Not supported VmSize Standard_D4s_v5" in message and "Standard_NC4as_T4_v3" in message


def test_cores_beyond_the_family_quota_with_the_upgrade_reservation_are_out_of_quota(
    azure_emulator, ml, tmp_path, monkeypatch
):
    used = azure_emulator.v2.cores_in_use("standardDSv2Family")  # what earlier tests' deployments hold
    monkeypatch.setitem(azure_emulator.v2.quota, "standardDSv2Family", used + 20)
    name = create_endpoint(ml).name
    # 5 × 4 cores = 20 would fit, but Azure reserves 20 % for upgrades: ceil(5 × 1.2) = 6 × 4 = 24 cores.
    message = failure_of(
        lambda: ml.online_deployments.begin_create_or_update(deployment(name, tmp_path, instance_count=5))
    )
    assert (
        f"Not enough quota available for {DS3} in SubscriptionId {azure_emulator.subscription_id}. "
        f"Current usage/limit: {used}/{used + 20}. Additional needed: 24" in message
    )
    assert "InferencingClientCreateDeploymentFailed" in message
    a100 = catalog.managed_sku("Standard_NC24ads_A100_v4")
    assert a100 is not None and catalog.managed_cores_needed(a100, 2) == 48  # "Skip 20% Reservation"


def test_an_endpoint_name_another_workspace_holds_in_the_region_is_refused(azure_emulator, ml):
    name = unique()
    azure_emulator.take_endpoint_name(name)
    assert "must be unique within an Azure region" in failure_of(lambda: create_endpoint(ml, name))


# --- what fails while deploying ---------------------------------------------------------------------------


def test_an_environment_that_cannot_build_fails_with_image_build_failure_and_its_log(
    azure_emulator, ml, tmp_path
):
    name = create_endpoint(ml).name
    message = failure_of(
        lambda: ml.online_deployments.begin_create_or_update(
            deployment(name, tmp_path, conda=samples.TF1_ON_PY310_CONDA)
        ).result()
    )
    assert "(ImageBuildFailure)" in message
    log_uri = message.split("Build log may be available at ")[1].split()[0]
    log = requests.get(log_uri, timeout=10).text  # the build log, from the workspace's storage
    assert "No matching distribution found for tensorflow-gpu==1.15.5" in log
    assert ml.online_deployments.get("blue", name).provisioning_state == "Failed"


def test_a_score_py_whose_init_crashes_fails_resource_not_ready_with_its_traceback(
    azure_emulator, ml, tmp_path
):
    name = create_endpoint(ml).name
    message = failure_of(
        lambda: ml.online_deployments.begin_create_or_update(
            deployment(name, tmp_path, script=samples.CRASHING_INIT_PY)
        ).result()
    )
    assert "(ResourceNotReady) User container has crashed or terminated" in message
    logs = ml.online_deployments.get_logs("blue", name, lines=100)
    assert "ValueError: the model files are not where init() looks for them" in logs


def test_a_container_that_fails_its_liveness_probe_fails_resource_not_ready(azure_emulator, ml, tmp_path):
    from azure.ai.ml.entities import ProbeSettings

    name = create_endpoint(ml).name
    probe = ProbeSettings(initial_delay=1, period=1, failure_threshold=2, timeout=1)
    started = time.monotonic()
    message = failure_of(
        lambda: ml.online_deployments.begin_create_or_update(
            deployment(name, tmp_path, script=samples.SLOW_INIT_PY, liveness_probe=probe)
        ).result()
    )
    assert "(ResourceNotReady)" in message and "Liveness probe failed" in message
    assert time.monotonic() - started < 30  # the probe gave up, not the deployment timeout


def test_a_deployment_not_ready_within_the_deployment_timeout_fails(azure_emulator, ml, tmp_path):
    azure_emulator.host_start_floor_seconds = 2.0  # the paced timeout's floor; default probe: 310 s
    name = create_endpoint(ml).name
    message = failure_of(
        lambda: ml.online_deployments.begin_create_or_update(
            deployment(name, tmp_path, script=samples.SLOW_INIT_PY)
        ).result()
    )
    assert "(DeploymentTimeout)" in message


# --- operations in progress ---------------------------------------------------------------------------------


def test_a_second_operation_on_a_busy_deployment_or_endpoint_is_a_409(azure_emulator, ml, tmp_path):
    azure_emulator.time_scale = 0.01  # provisioning takes 1.8 s: long enough to collide with
    name = create_endpoint(ml).name
    poller = ml.online_deployments.begin_create_or_update(deployment(name, tmp_path))
    assert ml.online_deployments.get("blue", name).provisioning_state == "Creating"
    again = failure_of(lambda: ml.online_deployments.begin_create_or_update(deployment(name, tmp_path)))
    assert "(Conflict)" in again and "operation in progress" in again
    poller.result()
    endpoint = ml.online_endpoints.get(name)
    endpoint.traffic = {"blue": 100}
    ml.online_endpoints.begin_create_or_update(endpoint)
    assert "(Conflict)" in failure_of(lambda: ml.online_endpoints.begin_create_or_update(endpoint))


def test_a_canceled_deployment_ends_canceled(azure_emulator, ml, tmp_path):
    azure_emulator.time_scale = 0.01
    name = create_endpoint(ml).name
    poller = ml.online_deployments.begin_create_or_update(deployment(name, tmp_path))
    azure_emulator.cancel_online_deployment(name, "blue")
    assert "canceled" in failure_of(poller.result).lower()
    assert ml.online_deployments.get("blue", name).provisioning_state == "Canceled"


# --- sizes and usage ------------------------------------------------------------------------------------


def test_list_sizes_marks_gpu_sizes_and_leaves_out_retired_ones(azure_emulator, ml):
    sizes = {size.name: size for size in ml.compute.list_sizes(location="eastus")}
    assert sizes[T4].gpus == 1 and sizes[DS3].gpus == 0
    assert "Standard_NC6s_v3" not in sizes
