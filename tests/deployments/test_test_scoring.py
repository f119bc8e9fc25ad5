"""The test-scoring page: the image is checked before anything is sent, then POSTed raw with the Bearer key
as the how-to's client does; every way the endpoint can fail reads as a sentence, and each run is kept."""

from __future__ import annotations

import io
import re
import struct
import zlib

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from PIL import Image

from deployments.crypto import decrypt
from deployments.models import AuditEvent, ScoringRun
from deployments.services.scoring_runs import top_classes
from deployments.services.transitions import deployment_transition
from deployments.states import ServiceState
from tests.conftest import digit_images
from tests.deployments.conftest import login, png

pytestmark = pytest.mark.django_db

DEFAULT_SCRIPT_ANSWER = {
    "predictions": [
        {"class": 3, "label": "three", "probability": 0.971234},
        {"class": 8, "label": "eight", "probability": 0.020001},
        {"class": 5, "label": "five", "probability": 0.005},
    ],
    "model": {"name": "digits", "version": "1"},
}


def _score(client, deployment, content: bytes, name: str = "digit.png"):
    return client.post(f"/deployments/{deployment.pk}/test/", {"image": SimpleUploadedFile(name, content)})


def _scores_text(html: str) -> str:
    block = re.search(r'<div id="scores".*?</div>\s*</div>\s*(?:<details|</div>)', html, re.S)
    assert block, "no #scores on the page"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", block.group(0)))


def test_the_page_offers_drag_and_drop_a_file_input_and_a_score_button(deployer, healthy_deployment):
    page = login(deployer).get(f"/deployments/{healthy_deployment.pk}/test/").content.decode()
    assert 'id="dropzone"' in page and 'type="file" name="image"' in page
    assert re.search(r"<button[^>]*>Score</button>", page)


def test_an_image_is_posted_raw_with_the_bearer_key_and_its_top_classes_are_shown(
    deployer, healthy_deployment, fake_endpoint
):
    fake_endpoint.answer(200, DEFAULT_SCRIPT_ANSWER)
    image = digit_images(3, count=1)[0]
    response = _score(login(deployer), healthy_deployment, image)
    assert response.status_code == 200
    sent = fake_endpoint.requests[0]
    assert sent["body"] == image  # the raw bytes, not base64 or JSON
    assert sent["headers"]["Authorization"] == f"Bearer {decrypt(healthy_deployment.primary_key_encrypted)}"
    assert sent["headers"]["Content-Type"] == "image/png"
    html = response.content.decode()
    scores = _scores_text(html)
    assert "three 97.1%" in scores and "eight 2.0%" in scores and "five 0.5%" in scores
    assert '<dd id="status-code">200</dd>' in html and re.search(r'<dd id="latency">[\d.]+ ms</dd>', html)
    assert '<details id="raw-json">' in html and "&quot;model&quot;" in html

    run = ScoringRun.objects.get()
    assert (
        run.user == deployer and run.status_code == 200 and run.latency_ms > 0 and run.image_format == "PNG"
    )
    assert run.top_classes[0] == {"label": "three", "probability": 0.971234, "class": 3}
    thumbnail = Image.open(io.BytesIO(bytes(run.thumbnail)))
    assert thumbnail.format == "PNG" and max(thumbnail.size) <= 192
    thumb = login(deployer).get(f"/deployments/{healthy_deployment.pk}/thumbnail.png?run={run.pk}")
    assert thumb.status_code == 200 and thumb["Content-Type"] == "image/png"
    assert AuditEvent.objects.filter(
        action="deployment.test_score", actor_name="dana", after__status_code=200
    ).exists()
    detail = login(deployer).get(f"/deployments/{healthy_deployment.pk}/").content.decode()
    assert "three 97%" in detail and "dana" in detail  # the run is listed on the deployment's page


def _score_in_place(client, deployment, content: bytes, name: str = "digit.png"):
    """What the page's script sends: the same form, posted with fetch and the X-Lynx-Partial header."""
    return client.post(
        f"/deployments/{deployment.pk}/test/",
        {"image": SimpleUploadedFile(name, content)},
        headers={"X-Lynx-Partial": "test-outcome"},
    )


def test_the_pages_script_gets_only_the_result_and_the_new_runs_row(
    deployer, healthy_deployment, fake_endpoint
):
    fake_endpoint.answer(200, DEFAULT_SCRIPT_ANSWER)
    client = login(deployer)
    _score(client, healthy_deployment, digit_images(8, count=1)[0], "earlier.png")
    response = _score_in_place(client, healthy_deployment, digit_images(3, count=1)[0], "three.png")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" not in html and 'id="score-form"' not in html  # a fragment, not the page
    assert "three 97.1%" in _scores_text(html) and '<dd id="status-code">200</dd>' in html
    new_run = re.search(r'<tbody id="new-run">(.*?)</tbody>', html, re.S)
    assert new_run and new_run.group(1).count("<tr>") == 1  # only the new run's row, for the script to insert
    assert "three.png" in new_run.group(1) and "earlier.png" not in html
    assert ScoringRun.objects.count() == 2
    assert AuditEvent.objects.filter(action="deployment.test_score").count() == 2


def test_the_pages_script_gets_a_refusal_as_a_message_and_nothing_is_kept(
    deployer, healthy_deployment, fake_endpoint
):
    response = _score_in_place(login(deployer), healthy_deployment, _gif(), "red.gif")
    assert response.status_code == 400
    html = response.content.decode()
    assert re.search(r'<p class="flash error refused" role="alert">The file is a GIF image', html)
    assert "new-run" not in html and "<html" not in html
    assert fake_endpoint.requests == [] and not ScoringRun.objects.exists()


def test_a_jpeg_is_sent_as_a_jpeg(deployer, healthy_deployment, fake_endpoint):
    fake_endpoint.answer(200, DEFAULT_SCRIPT_ANSWER)
    _score(login(deployer), healthy_deployment, digit_images(5, count=1, fmt="JPEG")[0], "five.jpg")
    assert fake_endpoint.requests[0]["headers"]["Content-Type"] == "image/jpeg"


def _png_declaring(width: int, height: int) -> bytes:
    """A small PNG whose header claims a huge size: what a decompression bomb looks like before decoding."""
    raw = bytearray(png((8, 8)))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    raw[16:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(raw)


def _gif() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (10, 10), "red").save(out, format="GIF")
    return out.getvalue()


BAD_IMAGES = {
    "not an image": (b"%PDF-1.4 this is a document", "not an image Pillow can read"),
    "empty file": (b"", "The submitted file is empty"),
    "a GIF": (_gif(), "The file is a GIF image; the test page sends JPEG or PNG"),
    "a decompression bomb": (_png_declaring(8_000, 7_000), "8000 x 7000 pixels, over the 50 megapixel limit"),
    "a bomb Pillow warns about": (_png_declaring(10_000, 10_000), "more pixels than Lynx will decode"),
    "a bomb Pillow refuses": (_png_declaring(30_000, 30_000), "more pixels than Lynx will decode"),
    "a truncated PNG": (png((64, 64))[:-30], "file is damaged"),
    "a truncated JPEG": (digit_images(1, count=1, fmt="JPEG")[0][:300], "file is damaged"),
}


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_a_bad_image_is_refused_and_nothing_is_sent_or_kept(
    case, deployer, healthy_deployment, fake_endpoint
):
    content, message = BAD_IMAGES[case]
    response = _score(login(deployer), healthy_deployment, content)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert fake_endpoint.requests == [] and not ScoringRun.objects.exists()


def test_an_image_over_10_mb_is_cut_off_and_refused(deployer, healthy_deployment, fake_endpoint):
    big = png((16, 16)) + b"\0" * (10 * 1024 * 1024)
    response = _score(login(deployer), healthy_deployment, big)
    assert (
        response.status_code == 400
        and "The image is over 10 MB; nothing was sent." in response.content.decode()
    )
    assert fake_endpoint.requests == [] and not ScoringRun.objects.exists()


def test_pillows_own_bomb_guard_is_caught_too(deployer, healthy_deployment, fake_endpoint, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow refuses at twice this, warns above it
    response = _score(login(deployer), healthy_deployment, png((40, 40)))
    assert response.status_code == 400 and "decompression bomb" in response.content.decode()
    assert fake_endpoint.requests == []


ENDPOINT_FAILURES = {
    "401": (401, b"Unauthorized", {}, "401 Unauthorized: the scoring endpoint refused the key"),
    "404": (404, b"Not Found", {}, "404 Not Found at the scoring URI"),
    "400 with the script's message": (
        400,
        {"message": "The body is not an image that can be decoded"},
        None,
        "400 Bad Request: the entry script refused the request. It said: &quot;The body is not an image",
    ),
    "415": (
        415,
        {"message": "Expects Content-Type to be application/json"},
        None,
        "415 Unsupported Media Type",
    ),
    "500 from run()": (
        500,
        {"message": "ZeroDivisionError"},
        {"Content-Type": "application/json", "x-ms-run-function-failed": "True"},
        "500 Internal Server Error: run() raised an exception; the replica&#x27;s log",
    ),
    "503": (
        503,
        b"no replica ready",
        {"Content-Type": "text/plain"},
        "503 Service Unavailable: no replica could answer",
    ),
    "200 but not JSON": (
        200,
        b"<html>hello</html>",
        {"Content-Type": "text/html"},
        "answered 200 with a body that is not JSON",
    ),
    "200 empty": (200, b"", {}, "answered 200 with an empty body"),
    "JSON without scores": (200, {"hello": "world"}, None, "holds no scores Lynx recognises"),
}


@pytest.mark.parametrize("case", sorted(ENDPOINT_FAILURES))
def test_an_endpoint_failure_reads_as_an_explanation_and_the_run_is_kept(
    case, deployer, healthy_deployment, fake_endpoint
):
    status, body, headers, message = ENDPOINT_FAILURES[case]
    fake_endpoint.answer(status, body, headers)
    response = _score(login(deployer), healthy_deployment, png())
    assert response.status_code == 200  # the page works; the endpoint did not
    html = response.content.decode()
    assert message in html, html[html.find('id="result"') :][:1500]
    assert f'<dd id="status-code">{status}</dd>' in html
    run = ScoringRun.objects.get()
    assert run.status_code == status and run.error and run.top_classes == []


@override_settings(LYNX_TEST_SCORING_TIMEOUT_SECONDS=0.5)
def test_an_endpoint_that_does_not_answer_in_time_is_explained(deployer, healthy_deployment, fake_endpoint):
    fake_endpoint.answer(200, DEFAULT_SCRIPT_ANSWER, delay_s=3)
    response = _score(login(deployer), healthy_deployment, png())
    assert response.status_code == 200 and "No answer within 0.5 s" in response.content.decode()
    run = ScoringRun.objects.get()
    assert run.status_code is None and run.latency_ms >= 500


def test_an_endpoint_nobody_listens_on_is_explained(deployer, healthy_deployment):
    from scoring.netutil import free_port

    healthy_deployment.__class__.objects.filter(pk=healthy_deployment.pk).update(
        scoring_uri=f"http://127.0.0.1:{free_port()}/score"
    )
    response = _score(login(deployer), healthy_deployment, png())
    assert response.status_code == 200
    assert "nothing is listening there (are the replicas down?)" in response.content.decode()


def test_only_a_healthy_deployment_can_be_scored(deployer, healthy_deployment, fake_endpoint):
    deployment_transition(deployment=healthy_deployment, to=ServiceState.UNHEALTHY, message="a replica died")
    client = login(deployer)
    page = client.get(f"/deployments/{healthy_deployment.pk}/test/").content.decode()
    assert "only a Healthy deployment can be test-scored" in page
    response = _score(client, healthy_deployment, png())
    assert (
        response.status_code == 400
        and "is Unhealthy: only a Healthy deployment can be test-scored" in response.content.decode()
    )
    assert fake_endpoint.requests == [] and not ScoringRun.objects.exists()


def test_a_viewer_reads_the_page_but_cannot_score(viewer, healthy_deployment, fake_endpoint):
    client = login(viewer)
    page = client.get(f"/deployments/{healthy_deployment.pk}/test/")
    assert page.status_code == 200 and "Your role is viewer" in page.content.decode()
    assert _score(client, healthy_deployment, png()).status_code == 403
    assert fake_endpoint.requests == []


@pytest.mark.parametrize(
    "payload, labels, expected",
    [
        (DEFAULT_SCRIPT_ANSWER, [], [("three", 0.971234), ("eight", 0.020001), ("five", 0.005)]),
        ([0.1, 0.7, 0.2], ["a", "b", "c"], [("b", 0.7), ("c", 0.2), ("a", 0.1)]),
        ([[0.1, 0.7, 0.2]], [], [("1", 0.7), ("2", 0.2), ("0", 0.1)]),
        ({"cat": 0.2, "lynx": 0.8}, [], [("lynx", 0.8), ("cat", 0.2)]),
        ({"probabilities": [0.9, 0.1]}, ["yes", "no"], [("yes", 0.9), ("no", 0.1)]),
        ({"predictions": [{"class": 1, "score": 0.6}]}, ["x", "y"], [("y", 0.6)]),
        ({"message": "hello"}, [], []),
        ("just a string", [], []),
    ],
)
def test_top_classes_are_read_from_common_answer_shapes(payload, labels, expected):
    assert [(c["label"], c["probability"]) for c in top_classes(payload, labels)] == expected


@pytest.mark.slow
def test_a_real_replica_scores_a_handwritten_three(deployer, live_deployment):
    response = _score(login(deployer), live_deployment, digit_images(3, count=1)[0], "three.png")
    assert response.status_code == 200
    scores = _scores_text(response.content.decode())
    assert re.match(r"\s*three \d{1,3}\.\d%", scores), scores
    run = ScoringRun.objects.get()
    assert run.status_code == 200 and run.top_classes[0]["label"] == "three" and run.error == ""
