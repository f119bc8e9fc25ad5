"""No dead ends: a finished operation offers the next step (a deploy that succeeded, "Test it"; a cluster,
"Deploy to it"; a failure, "Try again" on its form, prefilled; a delete, back to the overview), and a model
version's page deploys that version."""

from __future__ import annotations

import re

import pytest

from deployments.models import Deployment, Operation, OperationKind
from deployments.services import cluster_create, deployment_delete
from deployments.services.operations import operation_transition
from deployments.services.transitions import cluster_transition, deployment_transition
from deployments.states import OperationState, ProvisioningState, ServiceState
from tests.deployments.conftest import login
from tests.deployments.factories import ready_cluster, start_deployment

pytestmark = pytest.mark.django_db


def next_steps(client, operation: Operation) -> dict[str, list[tuple[str, str]]]:
    """The operation page's next-step links, by the state they are for: {when: [(label, href)]}."""
    page = client.get(f"/operations/{operation.pk}/").content.decode()
    found = {}
    for when, links in re.findall(
        r'<nav class="next-steps actions" data-when="(\w+)"[^>]*>(.*?)</nav>', page, re.S
    ):
        found[when] = [
            (label, href) for href, label in re.findall(r'<a class="[^"]*" href="([^"]+)">([^<]+)</a>', links)
        ]
    return found


def finish(operation: Operation, to: str = OperationState.SUCCEEDED, error: str = "") -> Operation:
    operation = operation_transition(operation=operation, to=OperationState.RUNNING)
    return operation_transition(operation=operation, to=to, error=error)


@pytest.fixture
def cluster(deployer):
    return ready_cluster(deployer, "local-next")


@pytest.fixture
def deploy(deployer, cluster, demo_model) -> Operation:
    return start_deployment(deployer, cluster, demo_model, name="digits-next")


def test_a_deploy_that_succeeded_offers_to_test_it_and_open_it(deployer, deploy):
    finish(deploy)
    deployment_transition(deployment=deploy.deployment, to=ServiceState.HEALTHY)
    pk = deploy.deployment_id
    assert next_steps(login(deployer), deploy) == {
        "succeeded": [("Test it", f"/deployments/{pk}/test/"), ("Open the deployment", f"/deployments/{pk}/")]
    }


def test_a_failed_deploy_offers_to_try_again_from_its_own_configuration(deployer, deploy):
    finish(deploy, OperationState.FAILED, error="replica-0 exited with code 3")
    deployment_transition(deployment=deploy.deployment, to=ServiceState.FAILED)
    pk = deploy.deployment_id
    steps = next_steps(login(deployer), deploy)
    assert steps == {
        "failed": [
            ("Try again", f"/deployments/{pk}/update/"),
            ("Open the deployment", f"/deployments/{pk}/"),
        ]
    }


def test_a_failed_deploy_of_a_deleted_deployment_tries_again_on_a_prefilled_deploy_form(
    deployer, deploy, cluster, demo_model
):
    finish(deploy, OperationState.FAILED, error="no GPU")
    deployment = deployment_transition(deployment=deploy.deployment, to=ServiceState.FAILED)
    finish(deployment_delete(user=deployer, deployment=deployment))
    deployment_transition(deployment=Deployment.objects.get(pk=deployment.pk), to=ServiceState.DELETED)
    client = login(deployer)
    (label, href), _ = next_steps(client, deploy)["failed"]
    assert (label, href) == ("Try again", f"/deployments/new/?cluster={cluster.pk}&amp;model={demo_model.pk}")
    form = client.get(href.replace("&amp;", "&")).content.decode()
    assert re.search(rf'<option value="{cluster.pk}" selected>', form)
    assert re.search(rf'<option value="{demo_model.pk}" selected>', form)


def test_a_provisioned_cluster_offers_to_deploy_to_it(deployer):
    operation = cluster_create(user=deployer, name="local-new")
    finish(operation)
    cluster_transition(cluster=operation.cluster, to=ProvisioningState.SUCCEEDED)
    pk = operation.cluster_id
    assert next_steps(login(deployer), operation)["succeeded"] == [
        ("Deploy to it", f"/deployments/new/?cluster={pk}"),
        ("Open the cluster", f"/clusters/{pk}/"),
    ]


def test_a_delete_that_succeeded_goes_back_to_the_overview(deployer, deploy):
    finish(deploy)
    deployment = deployment_transition(deployment=deploy.deployment, to=ServiceState.HEALTHY)
    delete = finish(deployment_delete(user=deployer, deployment=deployment))
    assert next_steps(login(deployer), delete) == {"succeeded": [("Back to the overview", "/")]}


def test_a_running_operation_carries_both_endings_for_the_page_to_show_the_one_it_reaches(deployer, deploy):
    steps = next_steps(login(deployer), deploy)
    assert [label for label, _ in steps["succeeded"]] == ["Test it", "Open the deployment"]
    assert [label for label, _ in steps["failed"]] == ["Try again", "Open the deployment"]


def test_a_model_version_is_deployed_from_its_page_with_the_form_preselecting_it(deployer, demo_model):
    from deployments.services.registered_models import model_register

    newer = model_register(user=None, name="digits", source_dir=demo_model.files_dir, labels="")
    client = login(deployer)
    page = client.get(f"/models/{demo_model.pk}/").content.decode()
    assert f'href="/deployments/new/?model={demo_model.pk}">Deploy this version</a>' in page
    form = client.get(f"/deployments/new/?model={demo_model.pk}").content.decode()
    # Not the newest version, which the form starts from otherwise.
    assert re.search(rf'<option value="{demo_model.pk}" selected>', form)
    assert not re.search(rf'<option value="{newer.pk}" selected>', form)
    assert re.search(
        rf'<option value="{newer.pk}" selected>', client.get("/deployments/new/?model=x").content.decode()
    )


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_with_javascript_the_next_step_appears_when_the_operation_finishes(new_page, deployer, demo_model):
    cluster = ready_cluster(deployer, "local-live-next")
    operation = start_deployment(deployer, cluster, demo_model, name="digits-watch")
    operation = operation_transition(operation=operation, to=OperationState.RUNNING)
    page = new_page("dana", "pw-dana")
    page.goto(f"/operations/{operation.pk}/")
    assert (
        page.locator("a:has-text('Test it')").is_hidden()
        and page.locator("a:has-text('Try again')").is_hidden()
    )
    deployment_transition(deployment=operation.deployment, to=ServiceState.HEALTHY)
    operation_transition(operation=operation, to=OperationState.SUCCEEDED)
    page.wait_for_selector("a:has-text('Test it')", state="visible", timeout=10_000)
    assert page.locator("a:has-text('Try again')").is_hidden()
    assert Operation.objects.get(pk=operation.pk).kind == OperationKind.SERVICE_DEPLOY
