"""Settings that matter only while their switch is on (autoscale's range and target, the GPU count) are
disabled while it is off, on the deploy and update forms; the browser then leaves them out of the submission,
and the form keeps their defaults (the deployment's own values on the update form)."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.urls import reverse

from bench.htmlform import form_data
from deployments.forms import SWITCHED_FIELDS, DeploymentForm, DeploymentUpdateForm
from deployments.models import Deployment, RegisteredModel
from tests.deployments.factories import deploy_form_data, ready_cluster, start_deployment


@pytest.fixture
def model(db) -> RegisteredModel:
    """A registered model's row: nothing here runs it."""
    return RegisteredModel.objects.create(name="digits", version=1, path="digits/1/digits", labels="a\nb")


AUTOSCALE = ["autoscale_min_replicas", "autoscale_max_replicas", "autoscale_target_utilization"]


class _Disabled(HTMLParser):
    """The names of the disabled inputs on a page."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in ("input", "select", "textarea") and "disabled" in a and a.get("name"):
            self.names.add(str(a["name"]))


def disabled_names(html: str) -> set[str]:
    parser = _Disabled()
    parser.feed(html)
    return parser.names


@pytest.mark.django_db
def test_the_deploy_form_sends_no_switched_off_setting_and_deploys_with_the_defaults(client, deployer, model):
    cluster = ready_cluster(deployer)
    client.force_login(deployer)
    page = client.get(reverse("deployment_new")).content.decode()
    disabled = disabled_names(page)
    assert disabled == set(SWITCHED_FIELDS)
    # What a browser sends: every field but the disabled ones.
    sent = {k: v for k, v in form_data(page, must_have="entry_script").items() if k not in disabled}
    sent.update(name="digits-switched", cluster=str(cluster.pk), model=str(model.pk))
    response = client.post(reverse("deployment_new"), sent)
    assert response.status_code == 302, response.content.decode()[:2000]
    deployment = Deployment.objects.get(name="digits-switched")
    assert (deployment.gpu_enabled, deployment.gpu_cores) == (False, 0)
    assert (deployment.autoscale_enabled, deployment.autoscale_min_replicas) == (False, 1)
    assert (deployment.autoscale_max_replicas, deployment.autoscale_target_utilization) == (1, 70)


@pytest.mark.django_db
def test_the_update_form_keeps_the_deployments_autoscale_range_while_autoscale_is_off(deployer, model):
    cluster = ready_cluster(deployer)
    deployment = start_deployment(
        deployer, cluster, model, autoscale_min_replicas=2, autoscale_max_replicas=4
    ).deployment
    unbound = DeploymentUpdateForm(deployment=deployment)
    assert all(unbound.fields[field].widget.attrs.get("disabled") for field in SWITCHED_FIELDS)
    data = {field: value for field, value in unbound.initial.items() if field not in SWITCHED_FIELDS}
    data.update(idempotency_key="u", replicas=3)
    form = DeploymentUpdateForm(data, deployment=deployment)
    assert form.is_valid(), form.errors
    kept = form.config()
    assert (kept["replicas"], kept["autoscale_min_replicas"], kept["autoscale_max_replicas"]) == (3, 2, 4)


@pytest.mark.django_db
def test_a_switch_that_is_on_renders_its_settings_enabled(deployer, model):
    cluster = ready_cluster(deployer, gpu_count=1)
    form = DeploymentForm(deploy_form_data(cluster, model, gpu_enabled="on"))
    rendered = str(form["gpu_cores"])
    assert "disabled" not in rendered and 'data-switched-by="gpu_enabled"' in rendered
    assert all(form.fields[field].widget.attrs.get("disabled") for field in AUTOSCALE)
    deployment = start_deployment(deployer, cluster, model, gpu_enabled=True, gpu_cores=1).deployment
    assert not DeploymentUpdateForm(deployment=deployment).fields["gpu_cores"].widget.attrs.get("disabled")


@pytest.mark.django_db
def test_the_gpu_switched_on_without_a_count_asks_for_one_gpu(deployer, model):
    cluster = ready_cluster(deployer, gpu_count=1)
    data = deploy_form_data(cluster, model, gpu_enabled="on")
    del data["gpu_cores"]  # disabled when the page was rendered, switched on without JavaScript
    form = DeploymentForm(data)
    assert form.is_valid(), form.errors
    assert form.config()["gpu_cores"] == 1


@pytest.mark.django_db
def test_a_setting_sent_blank_is_still_refused(deployer, model):
    cluster = ready_cluster(deployer)
    form = DeploymentForm(deploy_form_data(cluster, model, autoscale_min_replicas=""))
    assert not form.is_valid()
    assert "required" in str(form.errors["autoscale_min_replicas"])


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_switching_autoscale_and_the_gpu_on_and_off_enables_and_disables_their_settings(
    new_page, deployer, model
):
    cluster = ready_cluster(deployer)
    page = new_page("dana", "pw-dana")
    page.goto(f"/deployments/new/?cluster={cluster.pk}")
    page.keyboard.press("Tab")  # the skip link comes first
    assert page.evaluate("document.activeElement.getAttribute('href')") == "#main"
    for field in AUTOSCALE:
        assert page.is_disabled(f"input[name={field}]")
    assert page.is_disabled("input[name=gpu_cores]")
    page.check("input[name=autoscale_enabled]")
    for field in AUTOSCALE:
        assert page.is_enabled(f"input[name={field}]")
    page.check("input[name=gpu_enabled]")
    assert page.is_enabled("input[name=gpu_cores]")
    page.uncheck("input[name=autoscale_enabled]")
    assert page.is_disabled("input[name=autoscale_min_replicas]")
    assert page.is_enabled("input[name=gpu_cores]")
