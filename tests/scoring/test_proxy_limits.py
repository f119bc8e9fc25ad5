"""The front proxy against hostile or broken clients, in this process and without replicas: connections that
never finish their headers, too many connections, bodies declared too large, undecodable keys, and bugs in
the handler. Each test starts a real proxy on a loopback port and talks raw HTTP to it."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Awaitable, Callable
from typing import Any

from scoring import proxy as proxy_module
from scoring.keys import Keys, KeyStore
from scoring.netutil import free_port
from scoring.proxy import FrontProxy
from tests.conftest import run_in_new_loop

KEY = "the-key"


def _run(scenario: Callable[[FrontProxy, int], Awaitable[Any]], **proxy_options: Any) -> Any:
    """Run `scenario` against a proxy on a free port; fail if anything reached the loop's exception handler
    (an exception no one retrieved: it would be a traceback in supervisor.log)."""
    unhandled: list[dict[str, Any]] = []

    async def main() -> Any:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: unhandled.append(context))
        port = free_port()
        options = {"keys": KeyStore(keys=Keys(KEY)), "ready_replicas": lambda: [], **proxy_options}
        front = FrontProxy(**options)
        await front.start("127.0.0.1", port)
        try:
            return await asyncio.wait_for(scenario(front, port), timeout=60)
        finally:
            await front.close()
            gc.collect()  # a task that failed unseen reports it when collected

    result = run_in_new_loop(main)
    assert not unhandled, [context.get("message") for context in unhandled]
    return result


async def _exchange(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `data` on a new connection; the status, headers and body of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in header_lines if line)
        body = await reader.readexactly(int(headers.get("Content-Length", "0")))
        return int(status_line.split()[1]), headers, body
    finally:
        writer.close()


async def _closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1024), within) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


def _request(headers: str = "", body: bytes = b"") -> bytes:
    return f"POST /score HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode() + body


def test_connections_that_never_finish_their_headers_are_dropped_and_others_still_get_answers(monkeypatch):
    monkeypatch.setattr(proxy_module, "HEADER_TIMEOUT_S", 1.0, raising=False)

    async def scenario(front: FrontProxy, port: int) -> None:
        half_open = []
        for _ in range(200):  # a slowloris: a request line and one header, then nothing
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /score HTTP/1.1\r\nHost: x\r\n")
            half_open.append((reader, writer))
        # While they hang, a complete request on a new connection is answered.
        status, _, _ = await _exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 503  # no replica in this test: the proxy itself answers
        dropped = await asyncio.gather(*(_closed_by_server(reader, within=10) for reader, _ in half_open))
        for _, writer in half_open:
            writer.close()
        assert all(dropped), f"{dropped.count(False)} of 200 half-open connections are still open"

    _run(scenario)


def test_the_header_timeout_is_a_few_seconds():
    assert 1 <= proxy_module.HEADER_TIMEOUT_S <= 15


def test_connections_over_the_cap_are_closed_at_once_and_the_proxy_serves_again_after(monkeypatch):
    monkeypatch.setattr(proxy_module, "MAX_CONNECTIONS", 50, raising=False)
    monkeypatch.setattr(proxy_module, "HEADER_TIMEOUT_S", 1.0, raising=False)

    async def scenario(front: FrontProxy, port: int) -> None:
        held = []
        for _ in range(60):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /score HTTP/1.1\r\n")
            held.append((reader, writer))
        closed = await asyncio.gather(*(_closed_by_server(reader, within=0.5) for reader, _ in held))
        assert closed.count(True) == 10  # the 10 over the cap; the 50 others wait for their header timeout
        assert front.stats.refused_connections == 10
        await asyncio.gather(*(_closed_by_server(reader, within=10) for reader, _ in held))
        for _, writer in held:
            writer.close()
        status, _, _ = await _exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 503

    _run(scenario)


def test_a_non_utf8_authorization_header_gets_a_401_with_a_json_reason():
    async def scenario(front: FrontProxy, port: int) -> None:
        head = b"POST /score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\x80\r\n"
        status, headers, body = await _exchange(port, head + b"Content-Length: 2\r\n\r\n{}")
        assert status == 401
        assert headers["Content-Type"].startswith("application/json")
        assert "key" in json.loads(body)["message"]
        assert front.stats.unauthorized == 1

    _run(scenario)


def test_a_body_declared_over_the_limit_gets_a_413_before_any_of_it_is_sent():
    async def scenario(front: FrontProxy, port: int) -> None:
        declared = 99 * 2**20
        assert declared > proxy_module.MAX_BODY_BYTES
        # Only the headers: an answer that waited for the body would never come.
        headers = f"Authorization: Bearer {KEY}\r\nContent-Length: {declared}\r\nExpect: 100-continue\r\n"
        status, response_headers, body = await _exchange(port, _request(headers))
        assert status == 413
        assert response_headers["Content-Type"].startswith("application/json")
        assert "MiB" in json.loads(body)["message"]
        assert front.stats.too_large == 1

    _run(scenario, ready_replicas=lambda: [object()])  # a replica "ready": the size check comes first


def test_an_unauthorised_body_is_refused_before_it_is_sent():
    async def scenario(front: FrontProxy, port: int) -> None:
        status, _, _ = await _exchange(port, _request("Content-Length: 1000000\r\n"))
        assert status == 401

    _run(scenario)


def test_an_unexpected_error_in_the_handler_becomes_a_500_json_answer_and_the_proxy_lives_on():
    calls = []

    def broken_replicas() -> list:
        calls.append(1)
        if len(calls) > 1:  # the liveness probe first, then a scoring request: a bug there
            raise RuntimeError("a bug in the proxy")
        return []

    async def scenario(front: FrontProxy, port: int) -> None:
        assert (await _exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))[0] == 503
        status, headers, body = await _exchange(
            port, _request(f"Authorization: Bearer {KEY}\r\nContent-Length: 0\r\n")
        )
        assert status == 500
        assert headers["Content-Type"].startswith("application/json")
        assert json.loads(body) == {
            "message": "The scoring proxy failed on this request; see supervisor.log."
        }
        assert front.stats.responses["5xx"] == 2 and front.stats.internal_errors == 1
        calls.clear()
        assert (await _exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))[0] == 503

    _run(scenario, ready_replicas=broken_replicas)


def test_the_body_limit_fits_a_photo_in_base64_json_but_not_a_hundred_mib():
    assert 16 * 2**20 <= proxy_module.MAX_BODY_BYTES < 99 * 2**20
