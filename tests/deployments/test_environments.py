"""The conda environment: generated like the how-to's (with tensorflow for the removed tensorflow-gpu),
editable, validated, stored with the deployment, and compared with the local scoring runtime."""

from __future__ import annotations

from importlib import metadata

import pytest
import yaml

from deployments.environments import check_environment, default_environment_yaml, runtime_version
from deployments.models import Deployment
from tests.deployments.conftest import login
from tests.deployments.factories import deploy_form_data, ready_cluster

HOW_TO_ENVIRONMENT = """\
name: project_environment
channels:
  - conda-forge
dependencies:
  - python=3.11
  - pip:
    - azureml-defaults
    - tensorflow-gpu==2.2.0
    - numpy
    - azureml-contrib-services
"""


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def test_the_default_environment_is_the_how_tos_with_tensorflow_instead_of_tensorflow_gpu():
    spec = yaml.safe_load(default_environment_yaml())
    assert spec["name"] and spec["channels"] == ["conda-forge"]
    pip = next(item["pip"] for item in spec["dependencies"] if isinstance(item, dict))
    assert f"tensorflow=={runtime_version('tensorflow')}" in pip
    assert {"azureml-defaults", "numpy", "ujson", "Pillow"} <= set(pip)
    assert not any("tensorflow-gpu" in p for p in pip)


def test_the_default_environment_passes_and_warns_only_about_packages_the_runtime_lacks():
    check = check_environment(default_environment_yaml())
    assert check.ok
    lacking = [
        name for name in ("ujson", "Pillow", "numpy", "azureml-contrib-services") if not _installed(name)
    ]
    if lacking:
        assert len(check.warnings) == 1 and all(name in check.warnings[0] for name in lacking)
    else:
        assert check.warnings == []


def test_a_pinned_tensorflow_gpu_gets_a_warning_that_says_it_is_an_empty_stub():
    check = check_environment(HOW_TO_ENVIRONMENT)
    assert check.ok
    warning = next(w for w in check.warnings if "tensorflow-gpu" in w)
    assert (
        "tensorflow-gpu==2.2.0 is an empty stub now" in warning and "ask for `tensorflow` instead" in warning
    )


def test_a_missing_inference_server_package_gets_a_warning_that_says_why():
    check = check_environment("name: x\ndependencies:\n  - python=3.11\n  - pip:\n    - numpy\n")
    assert check.ok
    assert any(
        "Neither azureml-defaults nor azureml-inference-server-http is listed" in w
        and "inference server" in w
        for w in check.warnings
    )
    assert not any(
        "Neither" in w
        for w in check_environment(
            "name: x\ndependencies:\n  - pip:\n    - azureml-inference-server-http\n"
        ).warnings
    )


def test_packages_the_local_runtime_lacks_or_has_at_another_version_are_named():
    check = check_environment(
        "name: x\ndependencies:\n  - python=3.8\n  - pip:\n    - azureml-defaults\n"
        "    - surely-not-installed-pkg==1.0\n    - numpy==1.19.5\n"
    )
    assert check.ok
    text = " ".join(check.warnings)
    assert "The local runtime lacks surely-not-installed-pkg==1.0" in text
    assert f"TensorFlow {runtime_version('tensorflow')}" in text
    assert f"numpy==1.19.5 (runtime: {runtime_version('numpy')})" in text
    assert "python=3.8 (runtime: Python 3.11" in text


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: [oops\n", "The environment is not valid YAML (line 2"),
        ("- just\n- a list\n", "must be a YAML mapping"),
        ("channels: [conda-forge]\ndependencies: [numpy]\n", "needs a `name`"),
        ("name: x\nchannels: [conda-forge]\n", "needs `dependencies`"),
        ("name: x\ndependencies: [numpy, {conda: [y]}]\n", "Unexpected entry in dependencies"),
        ("name: x\ndependencies: [{pip: [numpy, 3]}]\n", "A pip requirement must be a string"),
        ("name: x\nchannels: conda-forge\ndependencies: [numpy]\n", "`channels` must be a list"),
    ],
)
def test_an_environment_conda_would_refuse_gets_an_error(text, message):
    check = check_environment(text)
    assert not check.ok and any(message in error for error in check.errors), check.errors


@pytest.mark.django_db
def test_a_bad_environment_deploys_nothing(deployer, demo_model):
    cluster = ready_cluster(deployer)
    response = login(deployer).post(
        "/deployments/new/", deploy_form_data(cluster, demo_model, environment_yaml="dependencies: [numpy]\n")
    )
    assert response.status_code == 400 and "needs a `name`" in response.content.decode()
    assert not Deployment.objects.exists()


@pytest.mark.django_db
def test_check_shows_the_warnings_without_deploying(deployer, demo_model):
    cluster = ready_cluster(deployer)
    data = deploy_form_data(cluster, demo_model, environment_yaml=HOW_TO_ENVIRONMENT, check="1")
    response = login(deployer).post("/deployments/new/", data)
    page = response.content.decode()
    assert response.status_code == 200 and "pass the checks" in page and "is an empty stub now" in page
    assert not Deployment.objects.exists()


@pytest.mark.django_db
def test_an_edited_environment_is_stored_with_the_deployment_and_its_warnings_shown(deployer, demo_model):
    cluster = ready_cluster(deployer)
    client = login(deployer)
    response = client.post(
        "/deployments/new/", deploy_form_data(cluster, demo_model, environment_yaml=HOW_TO_ENVIRONMENT)
    )
    assert response.status_code == 302
    deployment = Deployment.objects.get()
    assert deployment.environment_yaml == HOW_TO_ENVIRONMENT
    assert deployment.revisions.get().environment_yaml == HOW_TO_ENVIRONMENT
    assert (
        "is an empty stub now" in client.get(response["Location"]).content.decode()
    )  # flashed on the next page
    page = client.get(f"/deployments/{deployment.pk}/").content.decode()
    assert f"TensorFlow {runtime_version('tensorflow')}" in page and "is an empty stub now" in page
