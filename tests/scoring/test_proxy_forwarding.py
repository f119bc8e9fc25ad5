"""The front proxy's streamed forwarding, against small aiohttp servers on Unix sockets standing in for
replicas: retries after a replica dies, bodies that stall, and scoring calls longer than the header timeout.
(Real inference-server replicas: test_proxy_streaming.)"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from aiohttp import web

from scoring import proxy as proxy_module
from scoring.keys import Keys, KeyStore
from scoring.netutil import free_port
from scoring.proxy import FrontProxy
from tests.conftest import run_in_new_loop

KEY = "the-key"
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class FakeReplica:
    """What the proxy reads of a scoring.replicas.Replica."""

    def __init__(self, name: str, socket_path: Path) -> None:
        self.name, self.socket_path = name, socket_path
        self.spec = SimpleNamespace(max_in_flight=4)
        self.in_flight = self.requests = self.batched_requests = 0
        self.model_calls = 0.0
        self.bodies: list[bytes] = []


async def _read(request: web.BaseRequest) -> bytes:  # read() stops at aiohttp's 1 MiB default
    return b"".join([chunk async for chunk in request.content.iter_any()])


async def digest(request: web.BaseRequest, replica: FakeReplica) -> web.Response:
    body = await _read(request)
    replica.bodies.append(body)
    return web.json_response({"replica": replica.name, "sha256": hashlib.sha256(body).hexdigest()})


async def dies_after_reading(request: web.BaseRequest, replica: FakeReplica) -> web.Response:
    replica.bodies.append(await _read(request))
    request.transport.abort()  # the process died: no answer, the connection drops
    await asyncio.sleep(3600)
    raise AssertionError("unreachable")


def _run(tmp_path: Path, handlers: list[Callable[..., Awaitable[web.StreamResponse]]], scenario) -> Any:
    async def main() -> Any:
        replicas, runners = [], []
        for index, handler in enumerate(handlers):
            replica = FakeReplica(f"replica-{index}", tmp_path / f"r{index}.sock")

            async def handle(request: web.BaseRequest, handler=handler, replica=replica):
                return await handler(request, replica)

            runner = web.ServerRunner(web.Server(handle), shutdown_timeout=0.1)
            await runner.setup()
            await web.UnixSite(runner, str(replica.socket_path)).start()
            replicas.append(replica)
            runners.append(runner)
        port = free_port()
        front = FrontProxy(keys=KeyStore(keys=Keys(KEY)), ready_replicas=lambda: replicas)
        await front.start("127.0.0.1", port)
        try:
            return await asyncio.wait_for(scenario(front, port, replicas), timeout=60)
        finally:
            await front.close()
            for runner in runners:
                await runner.cleanup()

    return run_in_new_loop(main)


async def _post(port: int, body: bytes, *, pause_after: int | None = None) -> tuple[int, dict[str, Any]]:
    """POST `body` with its Content-Length, in 64 KiB writes; with pause_after, stop sending after that many
    bytes and wait for the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = f"POST /score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        writer.write(head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode())
        sent = body if pause_after is None else body[:pause_after]
        for start in range(0, len(sent), 65536):
            writer.write(sent[start : start + 65536])
            await writer.drain()
        status_line = await reader.readline()
        headers = {}
        while (line := await reader.readline()) != b"\r\n":
            name, _, value = line.decode().partition(":")
            headers[name.lower()] = value.strip()
        payload = await reader.readexactly(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), json.loads(payload) if payload else {"headers": headers}
    finally:
        writer.close()


def test_a_replica_that_dies_mid_request_is_retried_on_another_with_the_whole_body(tmp_path):
    body = bytes(range(256)) * 1200  # 300 KiB: small enough to be kept for a retry

    async def scenario(front: FrontProxy, port: int, replicas: list[FakeReplica]) -> None:
        status, answer = await _post(port, body)
        assert status == 200, answer
        assert answer == {"replica": "replica-1", "sha256": hashlib.sha256(body).hexdigest()}
        assert replicas[0].bodies == [body] and replicas[1].bodies == [body]
        assert front.stats.retries == 1

    _run(tmp_path, [dies_after_reading, digest], scenario)  # round-robin from a fresh proxy: replica-0 first


def test_a_body_too_big_to_keep_is_not_sent_twice_and_the_answer_is_502(tmp_path):
    body = b"x" * (proxy_module.REPLAY_MAX_BYTES + 2**20)

    async def scenario(front: FrontProxy, port: int, replicas: list[FakeReplica]) -> None:
        status, answer = await _post(port, body)
        assert status == 502, answer
        assert answer == {"message": "The replica failed to answer the request."}
        assert len(replicas[0].bodies) == 1 and replicas[1].bodies == []
        assert front.stats.retries == 0

    _run(tmp_path, [dies_after_reading, digest], scenario)


def test_a_body_that_stops_arriving_gets_a_408(tmp_path, monkeypatch):
    monkeypatch.setattr(proxy_module, "BODY_IDLE_TIMEOUT_S", 0.5)

    async def scenario(front: FrontProxy, port: int, replicas: list[FakeReplica]) -> None:
        status, answer = await _post(port, b"x" * 1000, pause_after=10)
        assert status == 408
        assert answer == {"message": "No byte of the request body came for 0.5 s."}
        assert front.stats.bad_bodies == 1 and front.stats.upstream_errors == 0

    _run(tmp_path, [digest], scenario)


def test_a_scoring_call_longer_than_the_header_timeout_is_answered(tmp_path, monkeypatch):
    monkeypatch.setattr(proxy_module, "HEADER_TIMEOUT_S", 0.3)

    async def slow(request: web.BaseRequest, replica: FakeReplica) -> web.Response:
        await asyncio.sleep(1.5)  # five header timeouts: the timer must not cut a request being served
        return await digest(request, replica)

    async def scenario(front: FrontProxy, port: int, replicas: list[FakeReplica]) -> None:
        status, answer = await _post(port, b"slow model")
        assert status == 200 and answer["sha256"] == hashlib.sha256(b"slow model").hexdigest()

    _run(tmp_path, [slow], scenario)
