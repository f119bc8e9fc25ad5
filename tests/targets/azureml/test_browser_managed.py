"""Issue 14's journey in a real browser, against the Azure emulator with a real Celery worker and the real
azure-ai-ml SDK: a deployer picks a GPU instance type for managed online endpoints, deploys the demo model
with Lynx's default score.py, scores a JPEG through the endpoint's URI with its key from the test page,
updates it blue/green with a 10 % canary, completes it, and deletes it, leaving nothing running on Azure."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings

from deployments.models import Cluster, Deployment, Operation, ScoringRun
from tests.conftest import wait_for_operation
from tests.targets.azureml.conftest import GPU_SIZE, unique

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
]


def test_a_deployer_deploys_to_a_gpu_managed_endpoint_scores_a_jpeg_runs_a_canary_and_deletes_it(
    new_page, deployer, workspace, demo_model_files, azure_emulator, celery_processes
):
    pytest.importorskip("tensorflow")
    from scoring.demo_model import load_split, render_digit
    from tests.targets.azureml.emulated_models import digits_model

    celery_processes("worker")
    model = digits_model(demo_model_files)
    page = new_page("dana", "pw-dana")
    page.on("dialog", lambda dialog: dialog.accept())

    # An instance type, offered first for Azure and checked with Azure; nothing is created there.
    page.goto("/clusters/new/")
    page.click("text=managed online endpoints (Azure ML v2, recommended)")
    instance_type = unique("t4")
    page.select_option("select[name=workspace]", str(workspace.pk))
    page.fill("input[name=name]", instance_type)
    page.select_option("select[name=vm_size]", GPU_SIZE)
    page.click("button:has-text('Add instance type')")
    state = wait_for_operation(page)
    assert state == "succeeded", (page.inner_text("#op-log"), list(Operation.objects.values("kind", "error")))
    cluster = Cluster.objects.get(name=instance_type)
    assert (cluster.backend, cluster.gpu_kind) == ("azureml_managed", "NVIDIA T4")

    # The demo model with Lynx's default score.py, GPU on: a CUDA 12 image, one T4 instance.
    name = unique("digits")
    page.goto("/deployments/new/")
    page.fill("input[name=name]", name)
    page.select_option("select[name=cluster]", str(cluster.pk))
    page.select_option("select[name=model]", str(model.pk))
    page.check("input[name=gpu_enabled]")
    page.click("button:has-text('Deploy')")
    assert wait_for_operation(page) == "succeeded", page.inner_text("#op-log")
    deployment = Deployment.objects.get(name=name)
    assert deployment.scoring_uri == f"https://{name}.eastus.inference.ml.azure.com/score"

    # A JPEG from the test page: the endpoint's own score.py answers, through its URI, with its key.
    _, _, x_test, y_test = load_split()
    jpeg = Path(settings.VAR_DIR) / "seven.jpg"
    jpeg.write_bytes(render_digit(x_test[y_test == 7][0], fmt="JPEG", size=256, color=True))
    page.goto(f"/deployments/{deployment.pk}/test/")
    page.set_input_files("input[name=image]", str(jpeg))
    page.click("button:has-text('Score')")
    page.wait_for_selector("#scores")
    assert page.inner_text("#status-code") == "200"
    assert re.match(r"seven \d{1,3}\.\d%", page.inner_text("#scores").strip())
    assert ScoringRun.objects.get(deployment=deployment).top_classes[0]["label"] == "seven"

    # Blue/green: revision 2 with a 10 % canary, then completed from the deployment's page.
    page.goto(f"/deployments/{deployment.pk}/update/")
    page.fill("input[name=max_batch_size]", "8")
    page.fill("input[name=canary_percent]", "10")
    page.click("button:has-text('Update')")
    assert wait_for_operation(page) == "succeeded", page.inner_text("#op-log")
    page.goto(f"/deployments/{deployment.pk}/")
    assert "revision 1: 90 %" in page.inner_text("#traffic") and "revision 2: 10 %" in page.inner_text(
        "#traffic"
    )
    page.click("button:has-text('Complete: 100 % to revision 2')")
    assert wait_for_operation(page) == "succeeded", page.inner_text("#op-log")
    page.goto(f"/deployments/{deployment.pk}/")
    assert page.inner_text("#traffic").startswith("revision 2: 100 %")
    assert set(azure_emulator.v2.deployments_of(name)) == {"rev2"}
    shots = Path(settings.VAR_DIR) / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "managed-endpoint.png"), full_page=True)

    # Deleted: the endpoint and its deployments are gone from Azure; nothing bills.
    page.click("button:has-text('Delete deployment')")
    assert wait_for_operation(page) == "succeeded", page.inner_text("#op-log")
    assert name not in azure_emulator.v2.endpoints and not azure_emulator.v2.deployments_of(name)
