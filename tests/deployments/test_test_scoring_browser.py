"""The test-scoring page in a real browser: drop a photo of a digit on it, press Score, read the bar chart."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from django.conf import settings

from deployments.models import ScoringRun
from scoring.demo_model import load_split, render_digit

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_drop_an_image_score_it_and_read_the_top_classes(new_page, deployer, live_deployment):
    _, _, x_test, y_test = load_split()
    three = render_digit(x_test[y_test == 3][0], fmt="PNG", size=256, color=True)
    page = new_page("dana", "pw-dana")
    page.goto(f"/deployments/{live_deployment.pk}/#test")
    page.click("text=Score an image")
    page.wait_for_selector("#dropzone")

    # Drag and drop: a File in a DataTransfer, dropped on the zone, lands in the form's file input.
    page.evaluate(
        """([name, data]) => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type: "image/png"}));
            const zone = document.getElementById("dropzone");
            zone.dispatchEvent(
                new DragEvent("dragover", {dataTransfer: transfer, bubbles: true, cancelable: true})
            );
            zone.dispatchEvent(
                new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true})
            );
        }""",
        ["three.png", base64.b64encode(three).decode()],
    )
    assert page.evaluate("document.querySelector('input[name=image]').files[0].name") == "three.png"
    assert page.is_visible("#preview")
    page.evaluate("window.sameDocument = true")  # a full page load would forget it
    page.click("button:has-text('Score')")
    page.wait_for_selector("#scores")
    assert page.evaluate("window.sameDocument === true"), "the page reloaded instead of scoring in place"
    # The new run heads the earlier runs, in place of "No test runs yet."
    assert re.search(r"three \d+%", page.inner_text("#earlier-runs tbody tr:first-child"))
    assert page.locator("#earlier-runs tr.no-runs").count() == 0
    assert page.is_enabled("button:has-text('Score')")  # ready for the next image

    scores = page.inner_text("#scores")
    assert re.match(r"three \d{1,3}\.\d%", scores.strip()), scores
    assert page.inner_text("#status-code") == "200"
    assert re.fullmatch(r"[\d.]+ ms", page.inner_text("#latency"))
    assert page.is_visible("img.sent")
    assert ScoringRun.objects.get().top_classes[0]["label"] == "three"
    shots = Path(settings.VAR_DIR) / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "test-scoring.png"), full_page=True)

    assert not page.is_visible("#raw-json pre")  # collapsed until asked for
    page.click("#raw-json summary")
    assert '"predictions"' in page.inner_text("#raw-json pre")

    # The run is listed on the deployment's page, whose logs section refreshes itself.
    page.click("text=Back to the deployment")
    assert "three 100%" in page.inner_text("#test") or re.search(r"three \d+%", page.inner_text("#test"))
    first = page.inner_text("#logs")
    assert "replica-0" in first and "Refreshed" in first
    page.wait_for_function(
        "previous => document.querySelector('#logs').innerText !== previous", arg=first, timeout=10_000
    )
    page.screenshot(path=str(shots / "deployment.png"), full_page=True)
