"""score.py is checked before it is deployed: it parses, defines init() and run(...) with a signature the
inference server accepts, and every error names its line."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from deployments.entry_scripts import check_entry_script
from deployments.environments import default_entry_script
from deployments.forms import DeploymentForm
from deployments.models import Deployment
from tests.deployments.conftest import login
from tests.deployments.factories import MINIMAL_SCRIPT, deploy_form_data, ready_cluster
from tests.scoring.test_seed_style_entry_script import SEED_STYLE_SCORE_PY

GOOD = MINIMAL_SCRIPT


def test_the_default_tensorflow_2_template_passes():
    check = check_entry_script(default_entry_script())
    assert check.ok and not check.warnings


def test_the_how_to_style_script_passes():
    check = check_entry_script(SEED_STYLE_SCORE_PY)
    assert check.ok, check.errors


@pytest.mark.parametrize(
    "source, message",
    [
        ("def init(:\n    pass\n", "score.py line 1: syntax error"),
        ("def init():\n    pass\n\n\ndef run(data):\n  return (\n", "score.py line 6: syntax error"),
        ("def run(data):\n    return data\n", "score.py: defines no init()"),
        ("def init():\n    pass\n", "score.py: defines no run()"),
        (
            "def init(model_dir):\n    pass\n\ndef run(data):\n    pass\n",
            "score.py line 1: init() must work without arguments",
        ),
        ("async def init():\n    pass\n\ndef run(data):\n    pass\n", "score.py line 1: init is async def"),
        (
            GOOD + "\ndef run(*args):\n    pass\n",
            "score.py line 8: run() takes *args: the inference server refuses",
        ),
        (
            "def init():\n    pass\n\ndef run(data, **kwargs):\n    pass\n",
            "score.py line 4: run() takes **kwargs",
        ),
        (
            "def init():\n    pass\n\ndef run(data, /):\n    pass\n",
            "line 4: run() has positional-only parameters",
        ),
        ("def init():\n    pass\n\ndef run():\n    pass\n", "line 4: run() takes no input parameter"),
        (
            "def init():\n    pass\n\ndef run(request_headers):\n    pass\n",
            "line 4: run() takes no input parameter",
        ),
        (
            "def init():\n    pass\n\ndef run(data, scale):\n    pass\n",
            "line 4: run() requires scale besides data",
        ),
        (
            "def init():\n    pass\n\n@rawhttp\ndef run(request):\n    pass\n",
            "line 5: @rawhttp is used but never imported",
        ),
        (
            "from azureml.contrib.services.aml_request import rawhttp\n"
            "from inference_schema.schema_decorators import input_schema\n"
            "def init():\n    pass\n\n"
            "@rawhttp\n@input_schema('data', None)\ndef run(data):\n    pass\n",
            "line 8: run() cannot be decorated with both @rawhttp and @input_schema",
        ),
        ("init = 3\n\ndef run(data):\n    pass\n", "line 1: init is not a function"),
    ],
)
def test_a_script_the_server_would_refuse_gets_an_error_with_its_line(source, message):
    check = check_entry_script(source)
    assert not check.ok
    assert any(str(problem).startswith(message) or message in str(problem) for problem in check.errors), (
        check.errors
    )


@pytest.mark.parametrize(
    "source",
    [
        GOOD,
        "def init():\n    pass\n\ndef run(data, request_headers):\n    return data\n",
        "def init(path=None):\n    pass\n\ndef run(data, scale=2):\n    return data\n",
        "try:\n    import ujson as json\nexcept ImportError:\n    import json\n\n"
        "if True:\n    def init():\n        pass\n"
        "    def run(data):\n        return data\n",
    ],
)
def test_signatures_the_server_accepts_pass(source):
    check = check_entry_script(source)
    assert check.ok, check.errors


@pytest.mark.django_db
def test_the_deploy_form_shows_each_script_error_with_its_line(deployer, demo_model):
    cluster = ready_cluster(deployer)
    form = DeploymentForm(
        deploy_form_data(
            cluster, demo_model, entry_script="def init():\n    pass\n\ndef run(*a):\n    pass\n"
        )
    )
    assert not form.is_valid()
    assert "score.py line 4: run() takes *a" in str(form.errors["entry_script"])


@pytest.mark.django_db
def test_an_uploaded_score_py_replaces_the_text_and_is_checked(deployer, demo_model):
    cluster = ready_cluster(deployer)
    bad = SimpleUploadedFile("score.py", b"def init():\n    pass\n")
    form = DeploymentForm(deploy_form_data(cluster, demo_model), {"entry_script_file": bad})
    assert not form.is_valid() and "defines no run()" in str(form.errors["entry_script"])
    good = SimpleUploadedFile("score.py", SEED_STYLE_SCORE_PY.encode())
    form = DeploymentForm(deploy_form_data(cluster, demo_model, entry_script=""), {"entry_script_file": good})
    assert form.is_valid(), form.errors
    assert form.cleaned_data["entry_script"] == SEED_STYLE_SCORE_PY


@pytest.mark.django_db
def test_a_refused_script_deploys_nothing(deployer, demo_model):
    cluster = ready_cluster(deployer)
    response = login(deployer).post(
        "/deployments/new/", deploy_form_data(cluster, demo_model, entry_script="def run(x):\n  pass\n")
    )
    assert response.status_code == 400
    assert "defines no init()" in response.content.decode()
    assert not Deployment.objects.exists()


@pytest.mark.django_db
def test_an_edited_script_is_deployed_as_written(deployer, demo_model):
    cluster = ready_cluster(deployer)
    edited = default_entry_script().replace("TOP_K = 5", "TOP_K = 3")
    response = login(deployer).post(
        "/deployments/new/", deploy_form_data(cluster, demo_model, entry_script=edited)
    )
    assert response.status_code == 302
    assert Deployment.objects.get().entry_script == edited
    assert Deployment.objects.get().revisions.get().entry_script == edited
