"""A form's buttons do what they say, in a real browser: "Check" on the deploy and update forms only checks
(no operation, no billed deployment), and Enter in a text field never deploys or rolls out, with
JavaScript on or off."""

from __future__ import annotations

import pytest

from deployments.models import Deployment, Operation
from deployments.services.operations import operation_transition
from deployments.services.transitions import deployment_transition
from deployments.states import ServiceState
from tests.deployments.factories import ready_cluster, start_deployment

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHECKED = "p.flash[role=status]:has-text('pass the checks')"


@pytest.fixture
def cluster(deployer, demo_model):
    return ready_cluster(deployer, "local-check")


@pytest.fixture
def live(deployer, cluster, demo_model) -> Deployment:
    """A Healthy deployment, as its deploy operation would leave it (no replicas run: nothing here scores)."""
    operation = start_deployment(deployer, cluster, demo_model, name="digits-live")
    operation_transition(operation=operation, to="running")
    operation_transition(operation=operation, to="succeeded")
    return deployment_transition(
        deployment=operation.deployment,
        to=ServiceState.HEALTHY,
        scoring_uri="http://127.0.0.1:9/score",
        swagger_uri="http://127.0.0.1:9/swagger.json",
    )


def _submit(page, action) -> None:
    """Press a button or a key and wait for the page the server answers with."""
    with page.expect_navigation():
        action()


def _only_checked(page, operations_before: int) -> None:
    """Nothing was started, and the page says what the checks found."""
    started = list(Operation.objects.order_by("id").values_list("kind", "resource_name"))[operations_before:]
    assert Operation.objects.count() == operations_before, f"started {started}, now at {page.url}"
    assert page.locator(CHECKED).count() == 1, page.inner_text("main")


def test_check_on_the_deploy_form_only_checks(new_page, cluster):
    before = Operation.objects.count()
    page = new_page("dana", "pw-dana")
    page.goto(f"/deployments/new/?cluster={cluster.pk}")
    page.fill("input[name=name]", "digits-checked")
    _submit(page, lambda: page.click("button:has-text('Check')"))
    _only_checked(page, before)
    assert not Deployment.objects.filter(name="digits-checked").exists()
    # The page stays usable: after a Check the buttons are live again for the next press.
    assert page.is_enabled("button:has-text('Deploy')") and page.is_enabled("button:has-text('Check')")


def test_enter_in_the_name_field_checks_and_does_not_deploy(new_page, cluster):
    before = Operation.objects.count()
    page = new_page("dana", "pw-dana")
    page.goto(f"/deployments/new/?cluster={cluster.pk}")
    page.fill("input[name=name]", "digits-entered")
    _submit(page, lambda: page.press("input[name=name]", "Enter"))
    _only_checked(page, before)
    assert not Deployment.objects.filter(name="digits-entered").exists()


def test_check_on_the_update_form_does_not_roll_out(new_page, live):
    before = Operation.objects.count()
    page = new_page("dana", "pw-dana")
    page.goto(f"/deployments/{live.pk}/update/")
    page.fill("input[name=replicas]", "2")
    _submit(page, lambda: page.click("button:has-text('Check')"))
    _only_checked(page, before)
    live.refresh_from_db()
    assert live.replicas == 1 and live.revision == 1 and live.state == ServiceState.HEALTHY


def test_enter_in_a_number_field_of_the_update_form_does_not_roll_out(new_page, live):
    before = Operation.objects.count()
    page = new_page("dana", "pw-dana")
    page.goto(f"/deployments/{live.pk}/update/")
    page.fill("input[name=replicas]", "2")
    _submit(page, lambda: page.press("input[name=replicas]", "Enter"))
    _only_checked(page, before)


def test_deploy_still_deploys(new_page, cluster):
    before = Operation.objects.count()
    page = new_page("dana", "pw-dana")
    page.goto(f"/deployments/new/?cluster={cluster.pk}")
    assert "Check stays the first" not in page.content()  # the template's comment is not shown
    page.fill("input[name=name]", "digits-deployed")
    _submit(page, lambda: page.click("button:has-text('Deploy')"))
    assert "/operations/" in page.url
    assert list(Operation.objects.order_by("id").values_list("kind", "resource_name"))[before:] == [
        ("service_deploy", "digits-deployed")
    ]


def test_a_sent_form_cannot_be_sent_again(new_page, cluster):
    """The double-submit guard stays: once sent, the buttons are disabled and a second submit is refused."""
    page = new_page("dana", "pw-dana")
    page.goto(f"/deployments/new/?cluster={cluster.pk}")
    page.fill("input[name=name]", "digits-once")
    # Registered after lynx.js's handler, so it runs second: it counts the submits lynx.js let through and
    # keeps the page here, where the buttons can be looked at.
    page.evaluate(
        """() => {
            window.letThrough = 0;
            document.querySelector("form[data-once]").addEventListener("submit", (event) => {
                if (!event.defaultPrevented) window.letThrough += 1;
                event.preventDefault();
            });
        }"""
    )
    page.click("button:has-text('Deploy')")
    page.wait_for_function("document.querySelector('form[data-once] button.primary').disabled")
    assert page.is_disabled("button:has-text('Check')")
    page.evaluate("document.querySelector('form[data-once]').requestSubmit()")
    assert page.evaluate("window.letThrough") == 1


@pytest.mark.parametrize("form", ["deploy", "update"])
def test_check_only_checks_with_javascript_off(no_js_page, cluster, live, form):
    before = Operation.objects.count()
    page = no_js_page("dana", "pw-dana")
    if form == "deploy":
        page.goto(f"/deployments/new/?cluster={cluster.pk}")
        page.fill("input[name=name]", "digits-nojs")
    else:
        page.goto(f"/deployments/{live.pk}/update/")
        page.fill("input[name=replicas]", "2")
    _submit(page, lambda: page.click("button:has-text('Check')"))
    _only_checked(page, before)
    # Enter without JavaScript: the browser's default button is the form's first submit button.
    field = "input[name=name]" if form == "deploy" else "input[name=replicas]"
    _submit(page, lambda: page.press(field, "Enter"))
    _only_checked(page, before)
