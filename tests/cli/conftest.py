"""A small real HTTP server that answers API-shaped JSON, and the `lynx` command run against it."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from cli import operations
from cli.main import main

BASE_DIR = Path(__file__).resolve().parents[2]


@dataclass
class Seen:
    """One request as the server received it; its body was spooled to disk a block at a time."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body_file: Path

    @property
    def body(self) -> bytes:
        return self.body_file.read_bytes()

    def json(self) -> Any:
        return json.loads(self.body)

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON-able, or bytes sent as is
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Seen], Reply]


class FakeLynx:
    """Routes `(method, path)` to replies: a Reply, Replies in turn (the last one repeats), or a function."""

    def __init__(self, spool: Path) -> None:
        self.spool = spool
        self.routes: dict[tuple[str, str], Handler] = {}
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def on(self, method: str, path: str, *replies: Reply | Handler) -> None:
        if len(replies) == 1 and callable(replies[0]):
            self.routes[(method, path)] = replies[0]
            return
        queue = [r for r in replies if isinstance(r, Reply)]

        def serve(seen: Seen) -> Reply:
            return queue.pop(0) if len(queue) > 1 else queue[0]

        self.routes[(method, path)] = serve

    def requests_to(self, method: str, path: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method and s.path == path]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        lynx = self

        class Handle(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                spooled = Path(tempfile.mkstemp(dir=lynx.spool, suffix=".body")[1])
                remaining = int(self.headers.get("Content-Length") or 0)
                with spooled.open("wb") as out:
                    while remaining > 0:
                        block = self.rfile.read(min(remaining, 64 * 1024))
                        if not block:
                            break
                        out.write(block)
                        remaining -= len(block)
                seen = Seen(self.command, parts.path, parse_qs(parts.query), dict(self.headers), spooled)
                with lynx._lock:
                    lynx.seen.append(seen)
                route = lynx.routes.get((self.command, parts.path))
                reply = route(seen) if route else Reply(404, {"detail": f"No route {parts.path}."})
                body = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                headers = {"Content-Type": "application/json", **reply.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = do_DELETE = _serve

        return Handle


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty XDG_CONFIG_HOME and no LYNX_* variables: nothing from the machine's own setup leaks in."""
    home = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LYNX_URL", raising=False)
    monkeypatch.delenv("LYNX_TOKEN", raising=False)
    return home


@pytest.fixture
def lynx(config_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLynx]:
    """The fake server, named by LYNX_URL with a token in LYNX_TOKEN; operations are polled fast."""
    spool = Path(tempfile.mkdtemp(prefix="lynx-cli-"))
    server = FakeLynx(spool)
    monkeypatch.setenv("LYNX_URL", server.url)
    monkeypatch.setenv("LYNX_TOKEN", "lynx_test-token")
    monkeypatch.setattr(operations, "POLL_SECONDS", 0.02)
    yield server
    server.stop()
    shutil.rmtree(spool, ignore_errors=True)


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """`run("clusters", "list")`: the command in this process, its exit code and what it printed."""

    def invoke(*argv: str) -> Result:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke


def operation(op_id: int = 7, state: str = "queued", **fields: Any) -> dict[str, Any]:
    """An operation as the API gives it."""
    return {
        "id": op_id,
        "url": f"/api/v1/operations/{op_id}",
        "kind": "deployment.create",
        "state": state,
        "phase": "submit",
        "progress": 0,
        "finished": state in ("succeeded", "failed"),
        "error": "",
        "resource_type": "deployment",
        "resource_name": "digits-ci",
        "requested_by": "dana",
        "created_at": "2025-01-01T00:00:00Z",
        "started_at": None,
        "finished_at": None,
        **fields,
    }


def started(op_id: int = 7, warnings: list[str] | None = None) -> Reply:
    return Reply(
        202,
        {"operation": operation(op_id), "warnings": warnings or []},
        {"Location": f"/api/v1/operations/{op_id}"},
    )
