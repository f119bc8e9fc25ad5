"""Fixtures for the model, entry-script, environment, test-scoring, key and update tests."""

from __future__ import annotations

import io
import json
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from deployments.models import Deployment
from deployments.services.specs import service_files_write, service_spec
from deployments.services.transitions import deployment_transition
from deployments.states import ServiceState
from targets.local.backend import LocalBackend
from tests.conftest import wait_for
from tests.deployments.factories import ready_cluster, start_deployment
from tests.deployments.savedmodels import build_tf1_savedmodels


@pytest.fixture(scope="session")
def tf1_models() -> Path:
    """The folder holding the tiny TF1-exported SavedModels (see tests/deployments/savedmodels.py)."""
    return build_tf1_savedmodels(settings.VAR_DIR / "cache" / "tf1-models")


def pack(source: Path, archive: Path, root: str = "model") -> Path:
    """Pack a folder as .zip or .tar.gz (by the archive's name), under `root/` inside the archive."""
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
            for path in sorted(source.rglob("*")):
                out.write(path, f"{root}/{path.relative_to(source)}")
    else:
        with tarfile.open(archive, "w:gz") as out:
            out.add(source, arcname=root)
    return archive


@pytest.fixture
def upload_dirs(settings, tmp_path) -> Callable[[], set[str]]:
    """Models, unpacking and Django's temporary upload files each in a known place; returns a function
    listing every file and folder in them, to show that a refused upload leaves nothing behind."""
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "django-uploads")
    roots = [settings.LYNX_MODELS_DIR, settings.LYNX_UPLOADS_DIR, Path(settings.FILE_UPLOAD_TEMP_DIR)]
    for root in roots:
        root.mkdir(parents=True, exist_ok=True)
    (settings.LYNX_MODELS_DIR / ".staging").mkdir(exist_ok=True)

    def snapshot() -> set[str]:
        return {str(p) for root in roots for p in root.rglob("*")}

    return snapshot


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@dataclass
class FakeEndpoint:
    """A scoring endpoint on a real socket whose answer a test sets; it records what it was sent."""

    status: int = 200
    body: bytes = b"{}"
    headers: dict = field(default_factory=lambda: {"Content-Type": "application/json"})
    delay_s: float = 0.0
    requests: list[dict] = field(default_factory=list)
    port: int = 0

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/score"

    def answer(self, status: int, body, headers: dict | None = None, delay_s: float = 0.0) -> None:
        self.status = status
        self.body = json.dumps(body).encode() if isinstance(body, dict | list) else body
        self.headers = headers if headers is not None else {"Content-Type": "application/json"}
        self.delay_s = delay_s


@pytest.fixture
def fake_endpoint() -> Iterator[FakeEndpoint]:
    endpoint = FakeEndpoint()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            endpoint.requests.append({"headers": dict(self.headers), "body": self.rfile.read(length)})
            if endpoint.delay_s:
                time.sleep(endpoint.delay_s)
            try:
                self.send_response(endpoint.status)
                for name, value in endpoint.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(endpoint.body)))
                self.end_headers()
                self.wfile.write(endpoint.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    endpoint.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield endpoint
    server.shutdown()
    server.server_close()


def make_healthy(deployment: Deployment, scoring_uri: str) -> Deployment:
    """Move a deployment to Healthy as its deploy operation would, without running one."""
    return deployment_transition(
        deployment=deployment,
        to=ServiceState.HEALTHY,
        scoring_uri=scoring_uri,
        swagger_uri=scoring_uri.replace("/score", "/swagger.json"),
    )


@pytest.fixture
def healthy_deployment(deployer, demo_model, fake_endpoint) -> Deployment:
    """A local deployment of the demo model, Healthy at the fake endpoint (no replicas run)."""
    cluster = ready_cluster(deployer)
    operation = start_deployment(deployer, cluster, demo_model, name="digits-fake")
    from deployments.services.operations import operation_transition

    operation_transition(operation=operation, to="running")
    operation_transition(operation=operation, to="succeeded")
    return make_healthy(operation.deployment, fake_endpoint.uri)


def deploy_for_real(deployment: Deployment, timeout: float = 120) -> Deployment:
    """Start real replicas for a deployment through the local backend (no worker) and mark it Healthy."""
    backend = LocalBackend(settings.LYNX_LOCAL_DIR)
    spec = service_spec(deployment)
    backend.delete_service(spec)  # logs and keys an earlier test run left under the same name
    service_files_write(deployment)
    backend.deploy_service(spec)

    def healthy():
        observed = backend.observe_service(spec)
        assert observed.state not in ("Unhealthy", "Failed", "Missing"), observed.error
        return observed if observed.state == "Healthy" else None

    observed = wait_for(healthy, timeout, message=f"{deployment.name}'s replicas to be ready")
    return make_healthy(deployment, observed.scoring_uri)


@pytest.fixture
def live_deployment(deployer, demo_model, stop_local_replicas) -> Deployment:
    """The demo model on one real replica (Microsoft's inference server behind the key-checking proxy)."""
    cluster = ready_cluster(deployer, "local-live")
    operation = start_deployment(deployer, cluster, demo_model, name="digits-live", replicas=1)
    from deployments.services.operations import operation_transition

    operation_transition(operation=operation, to="running")
    operation_transition(operation=operation, to="succeeded")
    return deploy_for_real(operation.deployment)


def png(size: tuple[int, int] = (32, 32), color: str = "white") -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()
