"""Test scoring reads an answer that the deployer's own code wrote: the dashboard must not obey it.

A red-team review made a replica answer 307 towards a service on the dashboard's host (the dashboard
followed, re-sent the image and showed that service's answer to the deployer), plant cookies in the
dashboard's pooled client (sent on to every other deployment on 127.0.0.1), and answer with a body far
larger than the page ever shows.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from deployments.models import ScoringRun
from deployments.services import scoring_runs as scoring_services
from tests.deployments.conftest import login, png
from tests.deployments.test_test_scoring import DEFAULT_SCRIPT_ANSWER, _score

pytestmark = pytest.mark.django_db


@pytest.fixture
def host_service() -> Iterator[list[dict]]:
    """A service on the dashboard's host that no deployment should reach through Lynx; what it was sent."""
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            seen.append({"path": self.path, "headers": dict(self.headers), "body": self.rfile.read(length)})
            body = b'{"secret": "instance-metadata"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer  # noqa: N815 - http.server's naming

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    seen.append({"port": server.server_address[1]})
    yield seen
    server.shutdown()
    server.server_close()


def test_a_redirect_from_the_endpoint_is_reported_not_followed(
    deployer, healthy_deployment, fake_endpoint, host_service
):
    port = host_service.pop(0)["port"]
    fake_endpoint.answer(307, b"", {"Location": f"http://127.0.0.1:{port}/latest/meta-data/"})
    html = _score(login(deployer), healthy_deployment, png()).content.decode()
    assert not host_service, "the dashboard followed the endpoint's redirect"
    assert "instance-metadata" not in html
    assert "307" in html and "redirect" in html.lower()
    run = ScoringRun.objects.get()
    assert run.status_code == 307 and run.error and "instance-metadata" not in run.response_excerpt


def test_cookies_an_endpoint_sets_are_never_sent_anywhere(deployer, healthy_deployment, fake_endpoint):
    client = login(deployer)
    fake_endpoint.answer(
        200,
        DEFAULT_SCRIPT_ANSWER,
        {"Content-Type": "application/json", "Set-Cookie": "sessionid=planted; Path=/"},
    )
    _score(client, healthy_deployment, png())
    _score(client, healthy_deployment, png())
    assert len(fake_endpoint.requests) == 2
    assert "Cookie" not in fake_endpoint.requests[1]["headers"]


HUGE_ANSWER_BYTES = 256 * 2**20


@pytest.fixture
def endless_endpoint() -> Iterator[dict]:
    """An endpoint whose answer goes on for 256 MiB; it records how much it got to send before the client
    hung up."""
    sent = {"bytes": 0, "done": threading.Event()}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(HUGE_ANSWER_BYTES))
            self.end_headers()
            chunk = b"x" * 2**16
            try:
                while sent["bytes"] < HUGE_ANSWER_BYTES:
                    self.wfile.write(chunk)
                    sent["bytes"] += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                sent["done"].set()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sent["uri"] = f"http://127.0.0.1:{server.server_address[1]}/score"
    yield sent
    server.shutdown()
    server.server_close()


def test_a_huge_answer_is_read_only_as_far_as_the_page_shows(deployer, healthy_deployment, endless_endpoint):
    healthy_deployment.__class__.objects.filter(pk=healthy_deployment.pk).update(
        scoring_uri=endless_endpoint["uri"]
    )
    html = _score(login(deployer), healthy_deployment, png()).content.decode()
    endless_endpoint["done"].wait(30)
    # The client hung up after what the page can show; kernel buffers let a few more MB through.
    assert endless_endpoint["bytes"] < HUGE_ANSWER_BYTES / 4
    run = ScoringRun.objects.get()
    assert len(run.response_excerpt) <= scoring_services.EXCERPT_CHARS
    assert "not JSON" in html
