"""A new user's whole journey, in a real browser: provision the local cluster, deploy the demo
model, watch it become Healthy, delete the deployment and the cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings

from deployments.models import AuditEvent
from tests.conftest import wait_for_operation

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_deploy_and_tear_down_the_demo_model_from_the_browser(
    new_page, deployer, demo_model, celery_processes, stop_local_replicas
):
    celery_processes("worker")
    celery_processes("beat")
    shots = Path(settings.VAR_DIR) / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    page = new_page("dana", "pw-dana")
    page.on("dialog", lambda dialog: dialog.accept())

    page.click("text=New cluster")
    page.fill("input[name=name]", "local-gpu")
    page.click("button:has-text('Provision')")
    assert wait_for_operation(page) == "succeeded"
    assert "Succeeded: local-gpu is ready" in page.inner_text("#op-log")

    page.click("a:has-text('cluster local-gpu')")
    page.click("text=Deploy to local-gpu")
    page.fill("input[name=name]", "digits-demo")
    page.fill("input[name=replicas]", "1")
    page.click("button:has-text('Deploy')")
    assert wait_for_operation(page) == "succeeded", page.inner_text("#op-log")
    log = page.inner_text("#op-log")
    assert "replica-0: ready" in log and "digits-demo is Healthy" in log
    assert page.get_attribute("#op-bar", "style").replace(" ", "") == "width:100%;"
    page.screenshot(path=str(shots / "operation.png"), full_page=True)

    page.click("a:has-text('deployment digits-demo')")
    assert page.inner_text("#deployment-state") == "Healthy"
    assert "http://127.0.0.1:" in page.inner_text("main")
    page.goto("/")
    page.screenshot(path=str(shots / "overview.png"), full_page=True)
    page.click("#deployments a:has-text('digits-demo')")

    page.click("button:has-text('Delete deployment')")
    assert wait_for_operation(page) == "succeeded"
    page.goto("/")
    page.click("#clusters a:has-text('local-gpu')")
    page.click("button:has-text('Delete cluster')")
    assert wait_for_operation(page) == "succeeded"
    page.goto("/")
    assert "local-gpu" not in page.inner_text("#clusters")
    assert "digits-demo" not in page.inner_text("#deployments")

    actions = list(AuditEvent.objects.order_by("id").values_list("actor_name", "action", "resource_name"))
    for expected in [
        ("dana", "cluster.create", "local-gpu"),
        ("dana", "deployment.create", "digits-demo"),
        ("dana", "deployment.delete", "digits-demo"),
        ("dana", "cluster.delete", "local-gpu"),
    ]:
        assert expected in actions
