"""The deployment page's Consume section: the scoring URI, the key (copied through the audited reveal),
samples that send an image as the test page does, and the endpoint's swagger.json, read by Lynx and shown
as API docs."""

from __future__ import annotations

import ast
import html
import json
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.roles import can_deploy
from deployments.crypto import decrypt
from deployments.models import AuditEvent, Cluster, Deployment, RegisteredModel
from deployments.services.operations import operation_transition
from deployments.templatetags.consume import KEY_VARIABLE, consume_info, consume_samples
from deployments.views import consume
from tests.conftest import digit_images
from tests.deployments.conftest import login, make_healthy
from tests.deployments.factories import ready_cluster, start_deployment

SWAGGER = {
    "swagger": "2.0",
    "info": {"title": "digits-consume", "version": "1.0"},
    "schemes": ["https"],
    "paths": {
        "/score": {"post": {"operationId": "RunMLService", "responses": {"200": {"description": "ok"}}}}
    },
}


@dataclass
class SwaggerServer:
    """A swagger URI on a real socket: `answer` writes the response; every request's path and headers are
    kept, to show what Lynx asked for and with which key."""

    answer: Callable[[BaseHTTPRequestHandler], None]
    requests: list[dict] = field(default_factory=list)
    port: int = 0

    @property
    def scoring_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/score"


def send(handler: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict | None = None) -> None:
    handler.send_response(status)
    for name, value in (headers or {"Content-Type": "application/json"}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture
def swagger_server() -> Iterator[SwaggerServer]:
    server = SwaggerServer(answer=lambda h: send(h, 200, json.dumps(SWAGGER).encode()))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            server.requests.append({"path": self.path, "headers": dict(self.headers)})
            try:
                server.answer(self)
            except (BrokenPipeError, ConnectionResetError):
                pass  # Lynx gave up on it (the size and time limits)

        def log_message(self, *args) -> None:
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    http.daemon_threads = True
    server.port = http.server_address[1]
    threading.Thread(target=http.serve_forever, daemon=True).start()
    yield server
    http.shutdown()
    http.server_close()


def _deployment(deployer, scoring_uri: str = "") -> Deployment:
    model = RegisteredModel.objects.create(name="digits", version=1, path="digits/1/digits", labels="zero")
    operation = start_deployment(deployer, ready_cluster(deployer), model, name="digits-consume")
    if not scoring_uri:
        return operation.deployment
    operation_transition(operation=operation, to="running")
    operation_transition(operation=operation, to="succeeded")
    return make_healthy(operation.deployment, scoring_uri)


@pytest.fixture
def healthy(deployer, swagger_server) -> Deployment:
    """A local deployment, Healthy at the swagger server (no replicas run)."""
    return _deployment(deployer, swagger_server.scoring_uri)


def section(page: str) -> str:
    found = re.search(r'<section class="card" id="consume">.*?</section>', page, re.S)
    assert found, "the deployment page has no Consume section"
    return found.group(0)


def sample(page: str, slug: str) -> str:
    found = re.search(rf'<pre class="sample" id="consume-sample-{slug}">(.*?)</pre>', page, re.S)
    assert found, f"no {slug} sample"
    return html.unescape(found.group(1))


def page_of(client, deployment: Deployment) -> str:
    response = client.get(reverse("deployment_detail", args=[deployment.pk]))
    assert response.status_code == 200
    return response.content.decode()


# --- the section, per role ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_viewer_sees_the_uri_and_samples_but_no_key_and_no_way_to_reveal_it(viewer, healthy):
    client = login(viewer)
    page = page_of(client, healthy)
    part = section(page)
    primary = decrypt(healthy.primary_key_encrypted)
    assert healthy.scoring_uri in part and "consume-sample-python" in part
    assert "Your role is viewer" in part
    assert primary[:4] not in part  # not even the masked key
    assert reverse("deployment_key_reveal", args=[healthy.pk]) not in part
    assert reverse("deployment_key_copy", args=[healthy.pk]) not in part
    assert primary not in page

    refused = client.post(reverse("deployment_key_copy", args=[healthy.pk]), {"key": "Primary"})
    assert refused.status_code == 403
    assert not AuditEvent.objects.filter(action="deployment.key_reveal").exists()


@pytest.mark.django_db
def test_a_deployers_copy_button_reads_the_full_key_through_the_audited_reveal(deployer, healthy):
    client = login(deployer)
    page = page_of(client, healthy)
    part = section(page)
    primary = decrypt(healthy.primary_key_encrypted)
    copy_url = reverse("deployment_key_copy", args=[healthy.pk])
    # Without JavaScript the button opens the reveal page; with it, copy.js asks the copy URL instead.
    form = re.search(r'<form method="post" action="([^"]+)"[^>]*data-copy-key-url="([^"]+)"', part)
    assert form and form.groups() == (reverse("deployment_key_reveal", args=[healthy.pk]), copy_url)
    assert f"{primary[:4]}…{primary[-2:]}" in part and primary not in page

    copied = client.post(copy_url, {"key": "Primary"})
    assert copied.status_code == 200
    assert copied.json() == {"key": primary}
    assert copied["Cache-Control"] == "no-store"
    event = AuditEvent.objects.get(action="deployment.key_reveal", resource_id=healthy.pk)
    assert event.actor == deployer and event.after == {"key": "Primary"}

    wrong = client.post(copy_url, {"key": "Tertiary"})
    assert wrong.status_code == 400 and wrong.json()["message"].startswith("Choose the Primary")
    assert AuditEvent.objects.filter(action="deployment.key_reveal").count() == 1


@pytest.mark.django_db
def test_a_deleted_deployments_key_is_not_copied(deployer, healthy):
    Deployment.objects.filter(pk=healthy.pk).update(state="Deleted")
    copied = login(deployer).post(reverse("deployment_key_copy", args=[healthy.pk]), {"key": "Primary"})
    assert copied.status_code == 409 and "deleted" in copied.json()["message"]
    assert not AuditEvent.objects.filter(action="deployment.key_reveal").exists()


@pytest.mark.django_db
def test_the_samples_post_an_image_to_the_real_scoring_uri_and_hold_no_key(deployer, healthy):
    page = page_of(login(deployer), healthy)
    keys = [decrypt(healthy.primary_key_encrypted), decrypt(healthy.secondary_key_encrypted)]
    curl, python, javascript = (sample(page, slug) for slug in ("curl", "python", "javascript"))
    for code in (curl, python, javascript):
        assert healthy.scoring_uri in code
        assert KEY_VARIABLE in code and "Bearer" in code and "image/jpeg" in code
        assert not any(key in code for key in keys)
    argv = shlex.split(curl.replace("\\\n", " "))
    assert argv[:4] == ["curl", "--fail-with-body", "-X", "POST"] and argv[4] == healthy.scoring_uri
    assert f"Authorization: Bearer ${KEY_VARIABLE}" in argv and "--data-binary" in argv
    assert "requests.post(\n    SCORING_URI,\n    data=image," in python
    assert "await fetch(scoringUri" in javascript and "body: image" in javascript


def test_a_scoring_uri_with_quotes_stays_one_string_in_every_sample():
    uri = "https://x.example/score?a='1'&b=\"2\"`$(id)`"
    curl, python, javascript = (s.code for s in consume_samples(uri))
    assert shlex.split(curl.replace("\\\n", " "))[4] == uri
    module = ast.parse(python)
    assigned = {node.targets[0].id: node.value for node in module.body if isinstance(node, ast.Assign)}
    assert ast.literal_eval(assigned["SCORING_URI"]) == uri
    literal = re.search(r"const scoringUri = (.*);", javascript)
    assert literal and json.loads(literal.group(1)) == uri


@pytest.mark.django_db
def test_a_token_auth_deployment_says_how_to_get_a_token_and_offers_no_key(deployer):
    model = RegisteredModel.objects.create(name="digits", version=1, path="digits/1/digits")
    cluster = Cluster.objects.create(
        name="aks-gpu", backend="azureml", vm_size="Standard_NC4as_T4_v3", provisioning_state="Succeeded"
    )
    deployment = Deployment.objects.create(
        name="digits-token",
        cluster=cluster,
        model=model,
        entry_script="",
        environment_yaml="",
        state="Healthy",
        token_auth_enabled=True,
        scoring_uri="https://aks.example/api/v1/service/digits-token/score",
    )
    part = section(page_of(login(deployer), deployment))
    assert "Token authentication" in part and "get_access_token()" in part and "get-credentials" in part
    assert "digits-token" in part and deployment.scoring_uri in part
    assert reverse("deployment_key_copy", args=[deployment.pk]) not in part


@pytest.mark.django_db
def test_a_deployment_that_is_not_serving_yet_shows_no_samples(deployer):
    deployment = _deployment(deployer)
    part = section(page_of(login(deployer), deployment))
    assert "appear here once the deployment is Healthy" in part
    assert "consume-sample" not in part and "API docs" not in part


@pytest.mark.django_db
def test_the_section_runs_no_query_of_its_own(deployer, healthy):
    deployment = Deployment.objects.select_related("cluster").get(pk=healthy.pk)
    can_deploy(deployer)  # the page's context processor has read the role before the section renders
    with CaptureQueriesContext(connection) as queries:
        info = consume_info({"user": deployer}, deployment)
    assert [q["sql"] for q in queries.captured_queries] == []
    assert info.may_copy_key and info.has_api_docs and len(info.samples) == 3


# --- swagger.json, read by Lynx -----------------------------------------------------------------------------


def swagger(client, deployment: Deployment):
    return client.get(reverse("deployment_swagger", args=[deployment.pk]))


@pytest.mark.django_db
def test_swagger_json_is_read_from_the_swagger_uri_with_the_key_and_names_the_endpoints_address(
    viewer, healthy, swagger_server
):
    response = swagger(login(viewer), healthy)
    assert response.status_code == 200
    spec = response.json()
    assert spec["paths"] == SWAGGER["paths"]
    assert spec["host"] == f"127.0.0.1:{swagger_server.port}" and spec["schemes"] == ["http"]
    assert [r["path"] for r in swagger_server.requests] == ["/swagger.json"]
    sent = swagger_server.requests[0]["headers"]
    assert sent["Authorization"] == f"Bearer {decrypt(healthy.primary_key_encrypted)}"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("answer", "status", "message"),
    [
        (
            lambda h: send(h, 200, b"<html>It works!</html>", {"Content-Type": "text/html"}),
            502,
            "answered with something that is not JSON, so not a swagger document",
        ),
        (
            lambda h: send(h, 200, b'{"predictions": []}'),
            502,
            "answered with JSON that is not a Swagger or OpenAPI document",
        ),
        (
            lambda h: send(h, 200, b'{"swagger": "2.0", "x": "' + b"a" * (3 * 2**20) + b'"}'),
            502,
            "is over 2 MiB; Lynx shows API descriptions up to that size",
        ),
        (
            lambda h: send(h, 401, b'{"message": "no"}'),
            502,
            "answered 401 Unauthorized, not the swagger document",
        ),
        (
            lambda h: send(h, 302, b"", {"Location": "http://127.0.0.1:9/elsewhere"}),
            502,
            "answered with a redirect (302); Lynx does not follow it",
        ),
    ],
    ids=["html", "json-not-swagger", "huge", "refused", "redirect"],
)
def test_swagger_json_refuses_what_is_not_a_swagger_document_with_a_clear_message(
    viewer, healthy, swagger_server, answer, status, message
):
    swagger_server.answer = answer
    response = swagger(login(viewer), healthy)
    assert response.status_code == status
    assert message in response.json()["message"]
    assert response.json()["message"].startswith(
        ("The swagger document at http://127.0.0.1:", "http://127.0.0.1:")
    )
    assert [r["path"] for r in swagger_server.requests] == ["/swagger.json"]  # nothing else is fetched


def _endless(handler: BaseHTTPRequestHandler) -> None:
    """A body with no Content-Length that never stops: only counting what arrives can refuse it."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.end_headers()
    handler.wfile.write(b'{"swagger": "2.0", "x": "')
    for _ in range(4 * 64):
        handler.wfile.write(b"a" * 2**14)


def _trickle(handler: BaseHTTPRequestHandler) -> None:
    """Each byte in time for the read timeout, the whole never in time for the deadline."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.end_headers()
    for byte in json.dumps(SWAGGER).encode():
        handler.wfile.write(bytes([byte]))
        handler.wfile.flush()
        time.sleep(0.05)


@pytest.mark.django_db
def test_swagger_json_stops_reading_an_endless_answer(viewer, healthy, swagger_server):
    swagger_server.answer = _endless
    response = swagger(login(viewer), healthy)
    assert response.status_code == 502 and "is over 2 MiB" in response.json()["message"]


@pytest.mark.django_db
def test_swagger_json_gives_up_at_its_deadline(viewer, healthy, swagger_server, monkeypatch):
    monkeypatch.setattr(consume, "SWAGGER_TIMEOUT_S", 0.5)
    swagger_server.answer = _trickle
    started = time.monotonic()
    response = swagger(login(viewer), healthy)
    assert time.monotonic() - started < 2
    assert response.status_code == 504
    assert response.json()["message"] == (
        f"No complete answer from {healthy.swagger_uri} within 0.5 s; try again in a moment."
    )


@pytest.mark.django_db
def test_swagger_json_of_a_deployment_that_has_none_says_so(viewer, deployer):
    deployment = _deployment(deployer)
    response = swagger(login(viewer), deployment)
    assert response.status_code == 404
    assert response.json()["message"] == (
        "digits-consume has no swagger URI; it appears once the deployment is Healthy."
    )


@pytest.mark.django_db
def test_the_api_docs_page_loads_swagger_ui_from_lynx_itself(viewer, healthy):
    client = login(viewer)
    page = client.get(reverse("deployment_api_docs", args=[healthy.pk])).content.decode()
    assert f'data-spec-url="{reverse("deployment_swagger", args=[healthy.pk])}"' in page
    sources = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', page)
    assert "/static/ninja/swagger-ui-bundle.js" in sources and "/static/ninja/swagger-ui.css" in sources
    assert all(source.startswith("/static/") for source in sources), sources  # no CDN
    for source in sources:
        assert client.get(source).status_code == 200, source


# --- in a browser, and against a real deployment ----------------------------------------------------------


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_copy_buttons_put_the_key_and_a_sample_on_the_clipboard_and_the_docs_render(
    new_page, deployer, swagger_server
):
    deployment = _deployment(deployer, swagger_server.scoring_uri)
    page = new_page("dana", "pw-dana")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto(f"/deployments/{deployment.pk}/#consume")

    page.click("#consume-key button:has-text('Copy key')")
    page.wait_for_selector("#consume-key button:has-text('Copied')")
    assert page.evaluate("navigator.clipboard.readText()") == decrypt(deployment.primary_key_encrypted)
    assert AuditEvent.objects.filter(action="deployment.key_reveal", resource_id=deployment.pk).count() == 1
    assert page.url.endswith("#consume")  # copied in place: the reveal page was not opened

    page.click("button[data-copy-from=consume-sample-python]")
    page.wait_for_selector("button[data-copy-from=consume-sample-python]:has-text('Copied')")
    assert page.evaluate("navigator.clipboard.readText()") == page.inner_text("#consume-sample-python")
    shots = Path(settings.VAR_DIR) / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    page.locator("#consume").screenshot(path=str(shots / "consume.png"))

    page.click("text=API docs (swagger.json)")
    page.wait_for_selector(".swagger-ui .opblock-summary-path")
    assert page.inner_text(".swagger-ui .opblock-summary-path") == "/score"
    assert page.locator(".swagger-ui .try-out").count() == 0  # nothing is sent from the docs
    assert page.is_hidden("#api-docs-error")
    page.screenshot(path=str(shots / "api-docs.png"), full_page=True)


@pytest.mark.slow
@pytest.mark.django_db
def test_the_python_sample_scores_an_image_on_a_real_deployment(deployer, live_deployment, tmp_path: Path):
    client = login(deployer)
    spec = swagger(client, live_deployment)
    assert spec.status_code == 200, spec.json()
    assert (
        "/score" in spec.json()["paths"] and spec.json()["host"] == live_deployment.scoring_uri.split("/")[2]
    )

    key = client.post(reverse("deployment_key_copy", args=[live_deployment.pk]), {"key": "Primary"}).json()[
        "key"
    ]
    page = page_of(client, live_deployment)
    (tmp_path / "image.jpg").write_bytes(digit_images(3, count=1, fmt="JPEG")[0])
    (tmp_path / "score.py").write_text(sample(page, "python"))
    env = {"PATH": "/usr/bin:/bin", KEY_VARIABLE: key}
    ran = subprocess.run(
        [sys.executable, "score.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr
    answer = ast.literal_eval(ran.stdout.strip())
    assert answer["predictions"][0]["label"] == "three", answer

    # The other two as well, where this machine has curl and Node.js.
    if shutil.which("curl"):
        curl = subprocess.run(
            ["sh", "-c", sample(page, "curl")],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert curl.returncode == 0, curl.stderr
        assert json.loads(curl.stdout)["predictions"][0]["label"] == "three"
    if shutil.which("node"):
        (tmp_path / "score.mjs").write_text(sample(page, "javascript"))
        node = subprocess.run(
            ["node", "score.mjs"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert node.returncode == 0, node.stderr
        assert "three" in node.stdout
