"""The operation page follows its operation with JavaScript off too: a meta refresh while it runs, none once
it finished, and none that a browser running lynx.js would obey (it follows the operation live instead)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from deployments.models import Operation
from deployments.services import cluster_create
from deployments.services.operations import operation_transition

REFRESH = '<noscript><meta http-equiv="refresh" content="3"></noscript>'


def _running(user) -> Operation:
    """A cluster's provisioning, as a worker leaves it mid-way (no worker runs here)."""
    operation = cluster_create(user=user, name="refresh-1")
    return operation_transition(operation=operation, to="running")


@pytest.mark.django_db
def test_a_running_operations_page_refreshes_itself_and_a_finished_ones_does_not(client, deployer):
    operation = _running(deployer)
    client.force_login(deployer)
    url = reverse("operation_detail", args=[operation.pk])
    assert REFRESH in client.get(url).content.decode()
    operation_transition(operation=operation, to="failed", error="stopped by the test")
    assert "http-equiv" not in client.get(url).content.decode()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_page_follows_the_operation_to_its_end_by_reloading_without_javascript_and_live_with_it(
    no_js_page, new_page, deployer
):
    operation = _running(deployer)
    url = reverse("operation_detail", args=[operation.pk])
    plain = no_js_page("dana", "pw-dana")
    plain.goto(url)
    live = new_page("dana", "pw-dana")
    live.goto(url)
    # With scripts on, the noscript's meta is text, never a refresh; a reload would drop this marker.
    assert live.evaluate("document.querySelectorAll('meta[http-equiv=refresh]').length") == 0
    live.evaluate("window.lynxNotReloaded = true")
    assert plain.inner_text("#op-state") == "running"

    operation_transition(operation=operation, to="succeeded")

    plain.wait_for_selector("#op-state:text-is('succeeded')", timeout=10_000)
    live.wait_for_selector("#operation[data-finished=true]", timeout=10_000)
    assert live.inner_text("#op-state") == "succeeded"
    assert live.evaluate("window.lynxNotReloaded") is True
