"""Test scoring through the API: the image is the raw request body, checked as the test page checks an upload,
sent to the deployment's scoring URI, and kept as a scoring run with its audit event."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image

from deployments.models import AuditEvent, Deployment, Operation, RegisteredModel, ScoringRun
from deployments.services.operations import operation_transition
from deployments.services.scoring_runs import MAX_IMAGE_BYTES
from deployments.states import ServiceState
from tests.api.conftest import bearer
from tests.conftest import digit_images, wait_for
from tests.deployments.conftest import FakeEndpoint, make_healthy, png
from tests.deployments.conftest import fake_endpoint as fake_endpoint  # noqa: F401 - the fixture, reused
from tests.deployments.factories import ready_cluster, start_deployment

URL = "/api/v1/deployments"
ANSWER = {
    "predictions": [
        {"class": 1, "label": "one", "probability": 0.9},
        {"class": 0, "label": "zero", "probability": 0.1},
    ]
}


@pytest.fixture
def deployment(deployer, fake_endpoint: FakeEndpoint) -> Deployment:  # noqa: F811 - the fixture above
    """A local deployment, Healthy at the fake endpoint (no replicas run)."""
    model = RegisteredModel.objects.create(
        name="digits", version=1, path="digits/1/digits", labels="zero\none"
    )
    operation = start_deployment(deployer, ready_cluster(deployer), model, name="digits-fake")
    operation_transition(operation=operation, to="running")
    operation_transition(operation=operation, to="succeeded")
    fake_endpoint.answer(200, ANSWER)
    return make_healthy(operation.deployment, fake_endpoint.uri)


def score(client, secret: str, body: bytes, content_type: str = "image/png", query: str = ""):
    # CONTENT_TYPE as well: the test client leaves it out of a request with an empty body; clients do not.
    url = f"{URL}/digits-fake/score{query}"
    return client.post(url, body, content_type=content_type, CONTENT_TYPE=content_type, **bearer(secret))


def noise_png(side: int) -> bytes:
    """A PNG that does not compress: about 3 × side² bytes."""
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.django_db
def test_scoring_sends_the_image_and_answers_the_run_kept_and_audited(
    client, deployer, deployment, fake_endpoint, token_for
):
    image = png()
    response = score(client, token_for(deployer, "ci"), image, query="?image_name=white.png")
    assert response.status_code == 200, response.json()
    body = response.json()
    run = ScoringRun.objects.get()
    assert body["id"] == run.pk and body["status"] == "ok" and body["http_status"] == 200
    assert body["top_classes"] == [{"label": "one", "score": 0.9}, {"label": "zero", "score": 0.1}]
    assert body["error"] == "" and body["latency_ms"] > 0
    assert (body["image_name"], body["image_format"]) == ("white.png", "PNG")
    sent = fake_endpoint.requests[-1]
    assert sent["body"] == image and sent["headers"]["Content-Type"] == "image/png"
    event = AuditEvent.objects.get(action="deployment.test_score", resource_id=deployment.pk)
    assert event.via == "token ci" and event.after["top"] == "one 90.0%"
    deployment.refresh_from_db()
    assert deployment.last_scored_at is not None


@pytest.mark.django_db
def test_an_image_over_the_memory_limit_of_a_django_body_but_under_the_pages_is_scored(
    client, deployer, deployment, fake_endpoint, token_for
):
    image = noise_png(1000)
    assert 2.5 * 2**20 < len(image) < MAX_IMAGE_BYTES  # over DATA_UPLOAD_MAX_MEMORY_SIZE
    response = score(client, token_for(deployer), image)
    assert response.status_code == 200, response.json()
    assert fake_endpoint.requests[-1]["body"] == image


@pytest.mark.django_db
def test_a_failing_endpoint_is_a_kept_run_with_the_reason(
    client, deployer, deployment, fake_endpoint, token_for
):
    fake_endpoint.answer(500, {"message": "boom"}, headers={"x-ms-run-function-failed": "True"})
    response = score(client, token_for(deployer), png())
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "error" and body["http_status"] == 500 and body["top_classes"] == []
    assert body["error"].startswith("500 Internal Server Error: run() raised an exception")
    assert ScoringRun.objects.get().error == body["error"]


def gif() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, format="GIF")
    return out.getvalue()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"not an image", "image/png", "The file is not an image Pillow can read: choose a JPEG or PNG."),
        (b"", "image/png", "The file is empty: choose a JPEG or PNG."),
        (gif(), "image/gif", "The file is a GIF image; the test page sends JPEG or PNG."),
        (b"\0" * (MAX_IMAGE_BYTES + 1), "image/png", "The image is over 10 MB; nothing was sent."),
        (b'{"image": "..."}', "application/json", "Send the image itself as the body, with Content-Type"),
    ],
)
def test_a_body_the_page_would_refuse_is_400_and_nothing_is_sent_or_kept(
    client, deployer, deployment, fake_endpoint, token_for, body, content_type, message
):
    secret = token_for(deployer)
    events = AuditEvent.objects.count()
    response = score(client, secret, body, content_type)
    assert response.status_code == 400
    assert response.json()["errors"]["image"][0].startswith(message), response.json()
    assert fake_endpoint.requests == [] and not ScoringRun.objects.exists()
    assert AuditEvent.objects.count() == events


@pytest.mark.django_db
def test_scoring_a_deployment_that_is_not_healthy_is_refused(
    client, deployer, deployment, fake_endpoint, token_for
):
    Deployment.objects.filter(pk=deployment.pk).update(state=ServiceState.UNHEALTHY)
    response = score(client, token_for(deployer), png())
    assert response.status_code == 409
    assert (
        response.json()["detail"] == "digits-fake is Unhealthy: only a Healthy deployment can be test-scored."
    )
    assert fake_endpoint.requests == [] and not ScoringRun.objects.exists()


@pytest.mark.django_db
def test_a_viewer_may_not_score_and_nothing_is_sent(client, viewer, deployment, fake_endpoint, token_for):
    response = score(client, token_for(viewer), png())
    assert response.status_code == 403
    assert response.json()["detail"] == "Your role is viewer: ask an admin for the deployer role."
    assert fake_endpoint.requests == [] and not ScoringRun.objects.exists()


def test_the_openapi_document_describes_the_image_body(client):
    document = client.get("/api/v1/openapi.json").json()
    operation = document["paths"]["/api/v1/deployments/{ref}/score"]["post"]
    content = operation["requestBody"]["content"]
    assert set(content) == {"image/jpeg", "image/png"}
    assert content["image/png"]["schema"] == {"type": "string", "format": "binary"}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_deploy_score_and_delete_through_the_api_with_a_real_worker_and_replica(
    client, deployer, demo_model, celery_processes, stop_local_replicas, token_for
):
    celery_processes("worker")
    ready_cluster(deployer, "local-api")
    secret = token_for(deployer, "ci")

    def finished(operation_url: str) -> dict:
        def done() -> dict | None:
            body = client.get(operation_url, **bearer(secret)).json()
            return body if body["finished"] else None

        return wait_for(done, 240, message=f"{operation_url} to finish")

    deploy = client.post(
        URL,
        {"name": "digits-api-live", "model": "digits", "cluster": "local-api", "replicas": 1},
        content_type="application/json",
        **bearer(secret),
    )
    assert deploy.status_code == 202, deploy.json()
    outcome = finished(deploy["Location"])
    assert outcome["state"] == "succeeded", outcome["error"]
    read = client.get(f"{URL}/digits-api-live", **bearer(secret)).json()
    assert read["state"] == "Healthy" and read["scoring_uri"].startswith("http://127.0.0.1:")

    tops = []
    for image in digit_images(3, count=3):
        scored = client.post(
            f"{URL}/digits-api-live/score", image, content_type="image/png", **bearer(secret)
        )
        assert scored.status_code == 200, scored.json()
        assert scored.json()["status"] == "ok", scored.json()["error"]
        tops.append(scored.json()["top_classes"][0]["label"])
    assert tops.count("three") >= 2, tops
    logs = client.get(f"{URL}/digits-api-live/logs?lines=50", **bearer(secret)).json()["replicas"]
    assert "replica-0" in logs

    delete = client.delete(f"{URL}/digits-api-live", **bearer(secret))
    assert delete.status_code == 202
    assert finished(delete["Location"])["state"] == "succeeded"
    assert client.get(f"{URL}/digits-api-live", **bearer(secret)).json()["state"] == "Deleted"
    assert Operation.objects.filter(deployment__name="digits-api-live", state="succeeded").count() == 2
    events = AuditEvent.objects.filter(resource_name="digits-api-live", actor=deployer)
    assert set(events.values_list("via", flat=True)) == {"token ci"}
