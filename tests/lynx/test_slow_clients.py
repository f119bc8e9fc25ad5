"""Clients that send their request head slowly (slowloris) do not take the dashboard down: `make run`'s
gunicorn, started here with the launcher's own arguments, still answers /healthz while they hang on, and cuts
them off once their head is overdue."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from lynx.process_args import gunicorn_argv

ROOT = Path(__file__).resolve().parents[2]
HEAD_TIMEOUT = 3  # seconds, short for the test (the default is 10)
SLOW_CLIENTS = 40  # more than the threads of both workers together


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def web_server(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    env = dict(
        os.environ, DJANGO_SETTINGS_MODULE="lynx.settings", LYNX_HEAD_TIMEOUT_SECONDS=str(HEAD_TIMEOUT)
    )
    log = (tmp_path / "gunicorn.log").open("w")
    proc = subprocess.Popen(
        gunicorn_argv(f"127.0.0.1:{port}"), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                requests.get(f"{url}/healthz", timeout=5)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, (tmp_path / "gunicorn.log").read_text()[-3000:]
                time.sleep(0.2)
        for _ in range(4):  # every worker has loaded Django and opened its database connection
            requests.get(f"{url}/healthz", timeout=10)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


class SlowClients:
    """Connections that send a request head one header line at a time, each every half second, for at most
    `seconds`; `cut_off_after` records, per connection, when the server closed it."""

    def __init__(self, port: int, count: int, seconds: float) -> None:
        self.port, self.count, self.seconds = port, count, seconds
        self.cut_off_after: list[float] = []
        self._threads = [threading.Thread(target=self._trickle, daemon=True) for _ in range(count)]

    def _trickle(self) -> None:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.settimeout(0.05)  # a glance for the server's close between two lines, not a wait
            try:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                line = 0
                while time.monotonic() - started < self.seconds:
                    sock.sendall(f"X-Slow-{line}: 1\r\n".encode())
                    line += 1
                    try:
                        if sock.recv(1024) == b"":
                            break  # closed by the server
                    except TimeoutError:
                        pass  # nothing yet: still waiting, as a slow client does
                    time.sleep(0.5)
                else:
                    return
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.cut_off_after.append(time.monotonic() - started)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()
            time.sleep(0.01)

    def join(self) -> None:
        for thread in self._threads:
            thread.join(self.seconds + 10)


def _timed_healthz(url: str) -> float:
    started = time.monotonic()
    response = requests.get(f"{url}/healthz", timeout=HEAD_TIMEOUT + 5)
    assert response.status_code in (200, 503)  # 503: no Celery worker here, but the web answered
    return time.monotonic() - started


def test_healthz_answers_while_slow_clients_hold_connections(web_server):
    port = int(web_server.rsplit(":", 1)[1])
    # /healthz waits up to a second for Celery workers to answer a ping: measure what it takes unhindered.
    baseline = max(_timed_healthz(web_server) for _ in range(2))
    slow = SlowClients(port, SLOW_CLIENTS, seconds=HEAD_TIMEOUT + 6)
    slow.start()
    try:
        time.sleep(1)  # every slow client is connected and mid-head
        for _ in range(3):
            elapsed = _timed_healthz(web_server)
            assert elapsed < baseline + 1.5, f"/healthz waited behind the slow clients ({elapsed:.1f} s)"
    finally:
        slow.join()


def test_a_request_head_that_takes_too_long_is_cut_off(web_server):
    port = int(web_server.rsplit(":", 1)[1])
    slow = SlowClients(port, 3, seconds=HEAD_TIMEOUT + 8)
    slow.start()
    slow.join()
    assert len(slow.cut_off_after) == 3, "the server let a slow request head run on"
    assert all(HEAD_TIMEOUT - 0.5 <= after <= HEAD_TIMEOUT + 3 for after in slow.cut_off_after), (
        slow.cut_off_after
    )


def test_ordinary_requests_and_kept_alive_connections_still_work(web_server):
    with requests.Session() as session:
        for _ in range(3):  # one connection, kept alive between requests
            assert session.get(f"{web_server}/healthz", timeout=10).status_code in (200, 503)
        login = session.get(f"{web_server}/login/", timeout=10)
        assert login.status_code == 200 and 'name="password"' in login.text
        # A head sent in pieces and a 2 MB body: Django answers (403: no CSRF token), nothing hangs.
        response = session.post(f"{web_server}/login/", data={"blob": "x" * 2_000_000}, timeout=20)
        assert response.status_code == 403
    port = int(web_server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for piece in (b"GET /healthz HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n", b"Connection: close\r\n\r\n"):
            sock.sendall(piece)
            time.sleep(0.3)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200") or answer.startswith(b"HTTP/1.1 503"), answer[:200]
