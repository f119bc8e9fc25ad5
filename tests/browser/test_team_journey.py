"""Two people, two roles, one dashboard, in a real browser: a deployer provisions a local cluster with an
expiry, deploys the demo model and test-scores an image; a viewer sees the cluster, its cost and the
deployment but cannot delete them; the deployer tears everything down; the audit log shows each step
by name, and its CSV export has the same rows."""

from __future__ import annotations

import csv
import re
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings

from deployments.models import AuditEvent, Deployment, VmPrice
from deployments.services.prices import vm_price_set, vm_prices_seed
from deployments.states import ServiceState
from tests.conftest import digit_images, wait_for_operation

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _audit_rows(page) -> list[tuple[str, str, str, str]]:
    """(id, who, action, resource name) of every row of the audit log as filtered, all pages."""
    rows = []
    while True:
        for row in page.locator("#audit tbody tr[data-id]").all():
            rows.append(
                (
                    row.get_attribute("data-id"),
                    row.locator("td.who").inner_text().strip(),
                    row.locator("td.action").inner_text().strip(),
                    row.locator("td.resource a").inner_text().strip(),
                )
            )
        older = page.locator(".pager a:has-text('Older')")
        if not older.count():
            return rows
        older.click()


def _csv_rows(page, tmp_path: Path, name: str) -> list[tuple[str, str, str, str]]:
    with page.expect_download() as download:
        page.click("#audit-csv")
    path = tmp_path / name
    download.value.save_as(path)
    with path.open(newline="") as handle:
        return [(r["id"], r["person"], r["action"], r["resource_name"]) for r in csv.DictReader(handle)]


def test_a_deployer_and_a_viewer_share_the_dashboard(
    new_page, deployer, viewer, admin_user, demo_model, celery_processes, stop_local_replicas, tmp_path
):
    vm_prices_seed()
    vm_price_set(user=admin_user, price=VmPrice.objects.get(vm_size="local"), price_per_hour=Decimal("0.90"))
    celery_processes("worker")
    celery_processes("beat")
    shots = Path(settings.VAR_DIR) / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)

    # The deployer: a local cluster that tears itself down after 8 hours, the demo model on it.
    dana = new_page("dana", "pw-dana")
    dana.on("dialog", lambda dialog: dialog.accept())
    dana.click("text=New cluster")
    dana.fill("input[name=name]", "team-gpu")
    dana.fill("input[name=expires_in_hours]", "8")
    dana.check("input[name=auto_teardown]")
    dana.click("button:has-text('Provision')")
    assert wait_for_operation(dana) == "succeeded", dana.inner_text("#op-log")
    dana.click("a:has-text('cluster team-gpu')")
    dana.click("text=Deploy to team-gpu")
    dana.fill("input[name=name]", "digits-team")
    dana.fill("input[name=replicas]", "1")
    dana.click("button:has-text('Deploy')")
    assert wait_for_operation(dana) == "succeeded", dana.inner_text("#op-log")
    deployment = Deployment.objects.get(name="digits-team")

    # ... test-scores a handwritten three and reads the top classes.
    image = tmp_path / "three.png"
    image.write_bytes(digit_images(3, count=1)[0])
    dana.goto(f"/deployments/{deployment.pk}/test/")
    dana.set_input_files("input[type=file][name=image]", str(image))
    dana.click("button:has-text('Score')")
    dana.wait_for_selector("#scores")
    top = dana.inner_text("#scores").strip().splitlines()[0]
    assert re.fullmatch(r"three \d{1,3}\.\d%", top.strip()), dana.inner_text("#scores")

    dana.goto("/")
    cluster_row = dana.locator("#clusters tr[data-cluster=team-gpu]")
    expiry = cluster_row.locator("td.expiry").inner_text().replace("\xa0", " ")  # timeuntil's no-break spaces
    assert "in 7 hours" in expiry and "auto teardown" in expiry
    assert "ago" in dana.locator("#deployments tr[data-deployment=digits-team] td.last-scored").inner_text()
    dana.screenshot(path=str(shots / "overview.png"), full_page=True)

    # The viewer sees the cluster, its cost and the deployment...
    vera = new_page("vera", "pw-vera")
    row = vera.locator("#clusters tr[data-cluster=team-gpu]")
    assert "dana" in row.inner_text() and "local" in row.inner_text()
    assert re.fullmatch(r"\$\d+\.\d\d", row.locator("td.cost").inner_text().strip())
    assert row.locator("td.rate").inner_text().strip() == "$0.90"
    assert "digits-team" in vera.inner_text("#deployments")
    assert vera.locator("button:has-text('Delete')").count() == 0
    assert vera.locator("button:has-text('Cancel expiry')").count() == 0
    vera.click("#deployments a:has-text('digits-team')")
    assert vera.locator("button:has-text('Delete')").count() == 0
    # ... and a delete posted anyway, with a valid CSRF token, is refused for her role.
    status, body = vera.evaluate(
        """async (url) => {
             const token = document.querySelector("input[name=csrfmiddlewaretoken]").value;
             const body = new URLSearchParams({csrfmiddlewaretoken: token, idempotency_key: "vera-tries"});
             const response = await fetch(url, {method: "POST", body: body, credentials: "same-origin"});
             return [response.status, await response.text()];
           }""",
        f"/deployments/{deployment.pk}/delete/",
    )
    assert status == 403 and "CSRF" not in body, body[:500]
    deployment.refresh_from_db()
    assert deployment.state == ServiceState.HEALTHY

    # The deployer tears down: the deployment, then the cluster.
    dana.goto("/")
    dana.click("#deployments a:has-text('digits-team')")
    dana.click("button:has-text('Delete deployment')")
    assert wait_for_operation(dana) == "succeeded"
    dana.goto("/")
    dana.click("#clusters a:has-text('team-gpu')")
    dana.click("button:has-text('Delete cluster')")
    assert wait_for_operation(dana) == "succeeded"
    vera.goto("/")
    assert "team-gpu" not in vera.inner_text("#clusters") and "digits-team" not in vera.inner_text(
        "#deployments"
    )

    # The audit log has every step, by name, newest first...
    vera.goto("/audit/")
    vera.screenshot(path=str(shots / "audit.png"), full_page=True)
    rows = _audit_rows(vera)
    steps = [(who, action, name) for _, who, action, name in rows]
    expected = [
        ("dana", "cluster.delete", "team-gpu"),
        ("dana", "deployment.delete", "digits-team"),
        ("dana", "deployment.test_score", "digits-team"),
        ("dana", "deployment.create", "digits-team"),
        ("dana", "cluster.create", "team-gpu"),
        ("ada", "price.update", "local"),
    ]
    assert [s for s in steps if s in expected] == expected  # all there, in that (newest first) order
    assert ("system", "cluster.state", "team-gpu") in steps and (
        "system",
        "deployment.state",
        "digits-team",
    ) in steps
    assert {action for _, _, action, _ in rows} >= {"operation.succeeded"}
    assert [int(r[0]) for r in rows] == list(
        AuditEvent.objects.order_by("-created_at", "-id").values_list("id", flat=True)
    )
    # ... and its CSV export has the same rows, for the whole log and for a filtered view.
    assert _csv_rows(vera, tmp_path, "all.csv") == rows
    vera.fill("input[name=person]", "dana")
    vera.click("#audit-filters button:has-text('Filter')")
    dana_rows = _audit_rows(vera)
    assert dana_rows and {who for _, who, _, _ in dana_rows} == {"dana"}
    assert _csv_rows(vera, tmp_path, "dana.csv") == dana_rows
