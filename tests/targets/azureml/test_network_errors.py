"""Failures on the way to Azure are named in plain words with their host, and only what another try can fix is
retried.

Every failure here is real: a name under the reserved `.invalid` TLD, a port nobody listens on, a TLS server
with a self-signed certificate, a server that accepts and never answers, an HTTP server answering 429 or 5xx.
Each is reached through requests (what azureml-core's REST calls and its sign-in use) or through azure-core's
pipeline (what azure-ai-ml and azure-identity use), and the exception they raise goes through the functions
the backends use: `v1.errors._to_backend_error` and `v2.errors.to_backend_error`. The Azure emulator's
environment sends every other host through its proxy, so these clients ignore the environment.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core import PipelineClient
from azure.core.pipeline.policies import RetryPolicy
from azure.core.pipeline.transport import RequestsTransport
from azure.core.rest import HttpRequest
from azure.identity import ClientSecretCredential

from deployments.backends.base import BackendError
from deployments.services import cluster_create
from targets.azureml.services.workspaces import workspace_create
from targets.azureml.v1.errors import _to_backend_error
from targets.azureml.v2.errors import to_backend_error
from tests.azure_emulator import AzureEmulator
from tests.targets.azureml.conftest import GPU_SIZE, lines_of, run_inline, unique
from tests.targets.azureml.tls_material import certificate_pem, key_pem, new_key

ACTION = "Reading cluster 'gpu-a'"
UNRESOLVABLE = "management.lynx-test.invalid"  # RFC 6761: never resolves, anywhere


def through_requests(url: str, **kwargs: Any) -> BaseException:
    """What requests raises for `url`, as azureml-core gets it; the v1 translation of it."""
    session = requests.Session()
    session.trust_env = False
    with pytest.raises(requests.RequestException) as raised:
        session.get(url, **kwargs).raise_for_status()
    return raised.value


def through_azure_core(url: str, *, timeout: float = 5.0) -> BaseException:
    """What azure-core's pipeline raises for `url`, as azure-ai-ml gets it (its own retries off)."""
    client: PipelineClient[HttpRequest, Any] = PipelineClient(
        url, transport=RequestsTransport(use_env_settings=False), policies=[RetryPolicy(retry_total=0)]
    )
    with pytest.raises(Exception) as raised:
        client.send_request(
            HttpRequest("GET", url), connection_timeout=timeout, read_timeout=timeout
        ).raise_for_status()
    return raised.value


def v1(url: str, **kwargs: Any) -> BackendError:
    return _to_backend_error(through_requests(url, **kwargs), ACTION)


def v2(url: str, *, timeout: float = 5.0) -> BackendError:
    return to_backend_error(through_azure_core(url, timeout=timeout), ACTION)


TRANSLATIONS: dict[str, Callable[[str], BackendError]] = {"azureml-core": v1, "azure-ai-ml": v2}


def nxdomain(host: str) -> str:
    """`host`, once the resolver has said it does not exist (NXDOMAIN) rather than that it could not ask."""
    try:
        socket.getaddrinfo(host, 443)
    except socket.gaierror as exc:
        if exc.errno == socket.EAI_AGAIN:
            pytest.skip("no DNS server answers on this machine: a name cannot be shown not to exist")
        return host
    pytest.fail(f"{host} resolved, but .invalid names never do")


@pytest.fixture
def unresolvable() -> str:
    return nxdomain(UNRESOLVABLE)


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that nobody listens on (bound, then let go)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A server that accepts connections (the kernel completes them) and never says a word."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


@pytest.fixture
def self_signed_tls(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A TLS server for `localhost` with a self-signed certificate: (its port, the certificate)."""
    key = new_key()
    certificate = tmp_path / "localhost.pem"
    certificate.write_text(certificate_pem(key, names=("localhost",), common_name="localhost"))
    (tmp_path / "key.pem").write_text(key_pem(key))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, tmp_path / "key.pem")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            with connection:
                try:
                    context.wrap_socket(connection, server_side=True).close()
                except (ssl.SSLError, OSError):
                    pass  # the client refused our certificate: what the tests are about

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], certificate
    stop.set()
    thread.join(timeout=2)
    server.close()


@pytest.fixture
def answering() -> Iterator[Callable[[int, dict[str, str]], str]]:
    """An HTTP server that answers every request with the status and headers a test sets; returns its URL."""
    answer: dict[str, Any] = {"status": 200, "headers": {}}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = HTTPStatus(answer["status"])
            code = status.phrase.replace(" ", "")
            body = f'{{"error": {{"code": "{code}", "message": "Answered {status.value}."}}}}'.encode()
            self.send_response(status)
            for name, value in answer["headers"].items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()

    def answer_with(status: int, headers: dict[str, str]) -> str:
        answer.update(status=status, headers=headers)
        return f"http://127.0.0.1:{server.server_port}/subscriptions/s/resourceGroups/r"

    yield answer_with
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("sdk", TRANSLATIONS)
def test_an_unresolvable_host_is_named_and_not_retried(sdk: str, unresolvable: str) -> None:
    error = TRANSLATIONS[sdk](f"https://{unresolvable}/subscriptions")

    assert error.message == (
        f"{ACTION}: Cannot resolve {unresolvable}: check the machine's DNS or the workspace's cloud."
    )
    assert not error.transient


def test_a_sign_in_that_cannot_resolve_azure_ad_is_not_blamed_on_the_service_principal(
    unresolvable: str,
) -> None:
    # azure-identity raises ClientAuthenticationError for it, the type it uses for a refused secret too.
    credential = ClientSecretCredential(
        "tenant",
        "client",
        "secret",
        authority=unresolvable,
        disable_instance_discovery=True,
        retry_total=0,
        transport=RequestsTransport(use_env_settings=False),
    )
    with pytest.raises(Exception) as raised:
        credential.get_token("https://management.azure.com/.default")

    error = to_backend_error(raised.value, "Signing in to workspace 'ws'")

    assert type(raised.value).__name__ == "ClientAuthenticationError"
    assert error.message.startswith(f"Signing in to workspace 'ws': Cannot resolve {unresolvable}: ")
    assert "refused the service principal" not in error.message and not error.transient


def test_a_dns_server_that_does_not_answer_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    # The one thing not real here: the resolver's answer. urllib3 and requests wrap it as they would.
    def no_dns_server(*args: object, **kwargs: object) -> list[object]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns_server)

    error = v1("https://management.azure.com/subscriptions")

    assert error.message == (
        f"{ACTION}: Cannot resolve management.azure.com right now: no DNS server answered; check the "
        "machine's DNS."
    )
    assert error.transient


@pytest.mark.parametrize("sdk", TRANSLATIONS)
def test_a_refused_connection_names_host_and_port_and_is_retried(sdk: str, closed_port: int) -> None:
    error = TRANSLATIONS[sdk](f"https://127.0.0.1:{closed_port}/subscriptions")

    assert error.message == f"{ACTION}: 127.0.0.1:{closed_port} refused the connection."
    assert error.transient


def test_a_proxy_that_refuses_is_named_as_the_proxy(closed_port: int) -> None:
    error = v1(
        "https://management.azure.com/subscriptions", proxies={"https": f"http://127.0.0.1:{closed_port}"}
    )

    assert error.message == (
        f"{ACTION}: The HTTPS proxy 127.0.0.1:{closed_port} refused the connection: check HTTPS_PROXY."
    )
    assert error.transient


@pytest.mark.parametrize("sdk", TRANSLATIONS)
def test_an_untrusted_certificate_says_why_and_is_not_retried(
    sdk: str, self_signed_tls: tuple[int, Path]
) -> None:
    port, _ = self_signed_tls

    error = TRANSLATIONS[sdk](f"https://localhost:{port}/subscriptions")

    assert error.message.startswith(
        f"{ACTION}: The TLS certificate of localhost is not trusted: self-signed certificate. "
    )
    assert "REQUESTS_CA_BUNDLE" in error.message
    assert not error.transient


def test_a_certificate_for_another_name_says_so_and_is_not_retried(self_signed_tls: tuple[int, Path]) -> None:
    port, certificate = self_signed_tls  # trusted this time, but made out to localhost, not 127.0.0.1

    error = v1(f"https://127.0.0.1:{port}/subscriptions", verify=str(certificate))

    assert error.message.startswith(
        f"{ACTION}: The TLS certificate of 127.0.0.1 is not trusted: IP address mismatch, certificate is not "
        "valid for '127.0.0.1'. If a proxy"
    )
    assert not error.transient


def test_tls_spoken_to_a_plain_http_port_is_named_and_not_retried(
    answering: Callable[[int, dict[str, str]], str],
) -> None:
    plain = answering(200, {})

    error = v1(plain.replace("http://", "https://"))

    port = plain.split(":")[2].split("/")[0]
    assert error.message == (
        f"{ACTION}: 127.0.0.1:{port} does not speak TLS (WRONG_VERSION_NUMBER): check HTTPS_PROXY and the "
        "cloud's endpoints."
    )
    assert not error.transient


def test_a_server_that_hangs_up_without_answering_is_retried() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        hang_up = threading.Thread(target=lambda: server.accept()[0].close(), daemon=True)
        hang_up.start()

        error = v1(f"http://127.0.0.1:{server.getsockname()[1]}/subscriptions", timeout=5)
        hang_up.join(timeout=5)

    assert error.message.startswith(f"{ACTION}: 127.0.0.1 closed the connection before answering (")
    assert error.transient


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("sdk", TRANSLATIONS)
def test_a_server_that_never_answers_times_out_after_the_clients_limit_and_is_retried(
    sdk: str, scheme: str, silent_port: int
) -> None:
    url = f"{scheme}://127.0.0.1:{silent_port}/subscriptions"
    started = time.monotonic()

    error = v1(url, timeout=0.3) if sdk == "azureml-core" else v2(url, timeout=0.3)

    assert error.message == f"{ACTION}: 127.0.0.1 did not answer: timed out after 0.3 s."
    assert error.transient and time.monotonic() - started < 5


@pytest.mark.parametrize("sdk", TRANSLATIONS)
def test_throttling_says_so_with_how_long_azure_asked_to_wait_and_is_retried(
    sdk: str, answering: Callable[[int, dict[str, str]], str]
) -> None:
    error = TRANSLATIONS[sdk](answering(429, {"Retry-After": "7"}))

    assert error.message.startswith(
        f"{ACTION}: Azure is throttling requests (HTTP 429; Azure asked to wait 7 s)."
    )
    assert error.transient


@pytest.mark.parametrize(
    ("status", "headers", "suffix", "transient"),
    [
        (503, {"Retry-After": "12"}, "(HTTP 503; Azure asked to wait 12 s)", True),
        (502, {}, "(HTTP 502)", True),
        (500, {}, "(HTTP 500)", True),
        (501, {}, "(HTTP 501)", False),
        (400, {}, "(HTTP 400)", False),
        (404, {}, "(HTTP 404)", False),
    ],
)
def test_server_errors_are_retried_and_client_errors_are_not(
    answering: Callable[[int, dict[str, str]], str],
    status: int,
    headers: dict[str, str],
    suffix: str,
    transient: bool,
) -> None:
    error = v2(answering(status, headers))

    assert (
        error.message
        == f"{ACTION}: ({HTTPStatus(status).phrase.replace(' ', '')}) Answered {status}. {suffix}"
    )
    assert error.transient is transient


@pytest.mark.django_db
def test_a_connection_test_behind_an_unresolvable_proxy_fails_at_once_and_says_so(
    admin_user, azure_emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real SDK, signing in through a proxy whose name does not exist: azureml-core's requests read it.
    proxy = nxdomain("proxy.lynx-test.invalid")
    for name in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(name, f"http://{proxy}:3128")
    operation = workspace_create(user=admin_user, name=unique("ws"), **azure_emulator.workspace_fields())

    operation = run_inline(operation.pk)

    assert operation.state == "failed" and operation.attempts == 0  # failed at the first step, no retries
    assert (
        f"Cannot resolve the HTTPS proxy {proxy}: check HTTPS_PROXY and the machine's DNS." in operation.error
    )
    assert "busy" not in operation.error and "retried" not in operation.error
    workspace = operation.workspace
    workspace.refresh_from_db()
    assert workspace.last_check_ok is False and workspace.last_check_result == operation.error


@pytest.mark.django_db
def test_a_throttled_provision_is_retried_and_the_log_says_azure_throttled(
    deployer, workspace, azure_emulator: AzureEmulator
) -> None:
    name = unique("slow")
    # More than the SDK's own three retries (each after the Retry-After), so the last 429 reaches the engine.
    compute = rf"/rp/workspaces/.*/computes/{name}$"
    azure_emulator.inject("GET", compute, 429, times=4, headers={"Retry-After": "1"})
    operation = cluster_create(
        user=deployer, name=name, backend="azureml", workspace=workspace, vm_size=GPU_SIZE
    )

    operation = run_inline(operation.pk)

    assert operation.state == "succeeded", operation.error
    throttled = [line for line in lines_of(operation) if "Azure is throttling requests" in line]
    assert len(throttled) == 1
    assert "(HTTP 429; Azure asked to wait 1 s)" in throttled[0]
    assert throttled[0].endswith("(transient; retrying in 2 s)")
    assert operation.attempts == 1
