"""HTTP plumbing for the emulator: a TLS listener, a plain listener and a tiny intercepting proxy.

* The TLS listener serves everything the SDK reaches through its configuration (AAD, ARM, the
  regional data plane). MSAL refuses non-https authorities, hence TLS.
* The plain listener serves the cloud metadata document (the SDK fetches it with urllib's default
  SSL context, which ignores REQUESTS_CA_BUNDLE), the scoring endpoints (AKS without SSL serves
  plain http) and the emulator's control API. It also answers HTTP CONNECT, so that it can act as
  HTTPS_PROXY for the one call nothing can redirect: MSAL's instance discovery, which always goes
  to https://login.microsoftonline.com for an authority host it does not know.
"""

from __future__ import annotations

import json
import logging
import socketserver
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

logger = logging.getLogger("azure_emulator")


@dataclass
class Request:
    method: str
    host: str  # the Host header (or the CONNECT target), lower-case, without port
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    scheme: str

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    @property
    def bearer(self) -> str:
        value = self.headers.get("authorization", "")
        return value[7:] if value.lower().startswith("bearer ") else ""


@dataclass
class Response:
    status: int = 200
    body: Any = None  # dict/list → JSON; bytes/str → as is
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    # Set: the real response is made by calling it after the emulator's lock is released (scoring waits on a
    # scoring host, and must not hold up every other request meanwhile).
    deferred: Callable[[], Response] | None = None

    def encoded(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


Dispatch = Callable[[Request], Response]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    tunnel_host = ""  # set after a CONNECT: the host the client believes it talks to

    def setup(self) -> None:
        # The listening socket does not handshake on accept (that would run on the accept thread,
        # where one stalled client would block every other); do it here, per connection.
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        logger.debug("%s %s", self.address_string(), format % args)

    def _read_request(self) -> Request:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = self._read_chunked()
        host = self.tunnel_host or (self.headers.get("Host") or "").rsplit(":", 1)[0]
        return Request(
            method=self.command,
            host=host.lower(),
            path=parts.path,
            query={k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()},
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            scheme="https" if isinstance(self.connection, ssl.SSLSocket) else "http",
        )

    def _read_chunked(self) -> bytes:
        chunks = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.rfile.readline()
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    def _serve(self) -> None:
        request = self._read_request()
        try:
            response = self.server.dispatch(request)
            if response.deferred is not None:
                response = response.deferred()
        except Exception as exc:  # an emulator bug must show, not hang the SDK
            logger.exception("emulator crashed on %s %s", request.method, request.path)
            response = Response(500, {"error": {"code": "EmulatorBug", "message": repr(exc)}})
        payload = self._encode(response)
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    @staticmethod
    def _encode(response: Response) -> bytes:
        return response.encoded()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

    def do_CONNECT(self) -> None:
        context = self.server.tunnel_context
        if context is None:
            self.send_error(405)
            return
        target_host = self.path.rsplit(":", 1)[0].lower()
        logger.info("proxy tunnel to %s (intercepted)", target_host)
        self.send_response(200, "Connection Established")
        self.end_headers()
        self.wfile.flush()
        # From here on the client speaks TLS to "target_host"; we terminate it ourselves.
        tls = context.wrap_socket(self.connection, server_side=True)
        self.connection = tls
        self.rfile = tls.makefile("rb", self.rbufsize)
        self.wfile = socketserver._SocketWriter(tls)  # type: ignore[attr-defined]
        self.tunnel_host = target_host
        self.close_connection = False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], dispatch: Dispatch, tunnel_context: ssl.SSLContext | None):
        super().__init__(address, _Handler)
        self.dispatch = dispatch
        self.tunnel_context = tunnel_context


class Listener:
    """One ThreadingHTTPServer on a background thread."""

    def __init__(
        self,
        dispatch: Dispatch,
        *,
        port: int = 0,
        tls: ssl.SSLContext | None = None,
        tunnel_tls: ssl.SSLContext | None = None,
    ) -> None:
        self._server = _Server(("127.0.0.1", port), dispatch, tunnel_tls)
        if tls is not None:
            self._server.socket = tls.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"azure-emulator-{self.port}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def server_tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context
