"""The Azure pages in a real browser, against the Azure emulator with a real Celery worker and the real SDK:
an admin connects a workspace (its secret is never shown again), a deployer is told why a FastProd cluster of
one small node cannot be, provisions a DevTest GPU cluster instead, and follows it to Succeeded."""

from __future__ import annotations

import pytest

from deployments.crypto import decrypt
from deployments.models import AuditEvent, Cluster, Workspace
from tests.conftest import wait_for_operation
from tests.targets.azureml.conftest import GPU_SIZE, unique

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
]


def test_an_admin_connects_a_workspace_and_a_deployer_provisions_a_gpu_cluster(
    new_page, admin_user, deployer, azure_emulator, celery_processes
):
    celery_processes("worker")
    emu = azure_emulator
    emu.cluster_create_seconds = 1.0

    # The admin connects the workspace; saving starts the connection test, which the page follows.
    admin = new_page("ada", "pw-ada")
    admin.click("nav >> text=Azure")
    admin.click("text=Connect a workspace")
    name = unique("team")
    for field, value in {
        "name": name,
        **emu.workspace_fields(),
    }.items():
        admin.fill(f"input[name={field}]", value)
    admin.click("button:has-text('Save and test the connection')")
    assert wait_for_operation(admin) == "succeeded"
    workspace = Workspace.objects.get(name=name)
    assert decrypt(workspace.client_secret_encrypted) == emu.client_secret  # kept, encrypted
    admin.goto(f"/workspaces/{workspace.pk}/")
    assert "connected" in admin.inner_text("h1")
    assert emu.client_secret not in admin.content()  # never shown again

    # A deployer asks to create a FastProd cluster of one 4-vCPU node: refused, with Azure's rule (12 vCPUs
    # and 3 nodes), nothing started.
    page = new_page("dana", "pw-dana")
    page.goto("/clusters/new/azure/")
    assert page.is_checked("input[name=mode][value=attach]")  # attach is offered first, as recommended
    page.check("input[name=mode][value=create]")
    cluster_name = unique("gpu")
    page.select_option("select[name=workspace]", str(workspace.pk))
    page.fill("input[name=name]", cluster_name)
    page.select_option("select[name=vm_size]", GPU_SIZE)
    page.fill("input[name=node_count]", "1")
    page.select_option("select[name=cluster_purpose]", "FastProd")
    page.click("button:has-text('Provision or attach')")
    page.wait_for_selector(".errorlist")
    assert "12" in page.inner_text(".errorlist") and "vCPU" in page.inner_text(".errorlist")
    assert not Cluster.objects.filter(name=cluster_name).exists()

    # DevTest runs on one node: provisioned by the worker through the SDK, followed live to Succeeded.
    page.select_option("select[name=cluster_purpose]", "DevTest")
    page.click("button:has-text('Provision or attach')")
    assert wait_for_operation(page) == "succeeded"
    assert "Creating" in page.inner_text("#op-log")
    cluster = Cluster.objects.get(name=cluster_name)
    assert (cluster.provisioning_state, cluster.vm_size, cluster.gpu_kind) == (
        "Succeeded",
        GPU_SIZE,
        "NVIDIA T4",
    )
    assert cluster_name in emu.computes
    page.goto("/")
    row = page.locator(f"tr:has-text('{cluster_name}')").first
    assert "Succeeded" in row.inner_text()
    assert AuditEvent.objects.filter(actor_name="dana", resource_name=cluster_name).exists()
