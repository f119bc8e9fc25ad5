"""The front proxy: one loopback port in front of the replicas, checking keys like AKS's azureml-fe does.

`GET /` is the open liveness probe; every other request needs `Authorization: Bearer <key>` and is forwarded
round-robin to a ready replica over pooled keep-alive connections, at most `spec.max_in_flight` at once per
replica (the others wait here, so a replica always has a thread free for its health probe).

An answer's `X-Lynx-Batch-Size` (the size of the model call that produced it, set by entry scripts that batch)
is averaged into the stats: `avg_batch_size` is per model call, not per request.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from .keys import KeyStore
from .replicas import average_batch_size

if TYPE_CHECKING:
    from .replicas import Replica

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 100 * 1024 * 1024
# Connection-level headers (RFC 9110 7.6.1) stay on their hop; the key stays at the front door, so user code
# in a replica never sees it.
_REQUEST_DROP = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Transfer-Encoding", "Upgrade",
        "Content-Length", "Authorization", "Proxy-Authorization",
    )
)  # fmt: skip
_RESPONSE_DROP = frozenset(
    h.lower()
    for h in ("Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Transfer-Encoding", "Upgrade")
) | {"content-length"}
BATCH_SIZE_HEADER = "X-Lynx-Batch-Size"
_RETRYABLE = (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


def _json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=json.dumps({"message": message}).encode(), content_type="application/json",
        headers=headers,
    )  # fmt: skip


class ProxyStats:
    def __init__(self) -> None:
        self.requests = 0
        self.in_flight = 0
        self.responses: Counter[str] = Counter()
        self.unauthorized = 0
        self.no_replica = 0
        self.upstream_errors = 0
        self.retries = 0
        self.latencies_ms: deque[float] = deque(maxlen=2048)
        self.batched_requests = 0  # answers that carried X-Lynx-Batch-Size
        self.model_calls = 0.0  # the sum of 1/size over those answers: each call counted once
        self.last_request_at: float | None = None  # epoch seconds of the last authorised request (idle rule)

    def count_batch(self, replica: Replica, header: str | None) -> None:
        try:
            size = int(header) if header else 0
        except ValueError:
            return
        if size >= 1:
            for counts in (self, replica):
                counts.batched_requests += 1
                counts.model_calls += 1.0 / size

    def snapshot(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_ms)

        def percentile(q: float) -> float | None:
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3) if ordered else None

        return {
            "requests": self.requests,
            "in_flight": self.in_flight,
            "responses": dict(self.responses),
            "unauthorized": self.unauthorized,
            "no_replica": self.no_replica,
            "upstream_errors": self.upstream_errors,
            "retries": self.retries,
            "batched_requests": self.batched_requests,
            "model_calls": round(self.model_calls),
            "avg_batch_size": average_batch_size(self.batched_requests, self.model_calls),
            "last_request_at": self.last_request_at,
            "latency_ms": {
                "window": len(ordered),
                "p50": percentile(0.50),
                "p95": percentile(0.95),
                "p99": percentile(0.99),
            },
        }


class FrontProxy:
    """Serves on host:port; `ready_replicas()` says where traffic may go right now."""

    def __init__(self, *, keys: KeyStore, ready_replicas: Callable[[], Sequence[Replica]]) -> None:
        self.keys = keys
        self.ready_replicas = ready_replicas
        self.stats = ProxyStats()
        self._turn = itertools.count()
        self._slots: weakref.WeakKeyDictionary[Replica, asyncio.Semaphore] = weakref.WeakKeyDictionary()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.ServerRunner | None = None

    async def start(self, host: str, port: int) -> None:
        """Bind and serve; raises OSError when the port is taken."""
        connector = aiohttp.TCPConnector(limit=512, keepalive_timeout=30, ttl_dns_cache=None)
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,  # pass bodies through byte for byte, with their Content-Encoding
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=600),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

        def make_request(message, payload, protocol, writer, task) -> web.BaseRequest:
            return web.BaseRequest(
                message,
                payload,
                protocol,
                writer,
                task,
                asyncio.get_running_loop(),
                client_max_size=MAX_BODY_BYTES,
            )

        server = web.Server(self._handle, request_factory=make_request, access_log=None)
        self._runner = web.ServerRunner(server, shutdown_timeout=5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=1024)
        try:
            await site.start()
        except OSError:
            await self.close()
            raise

    async def close(self) -> None:
        if self._runner:
            await self._runner.cleanup()
            self._runner = None
        if self._session:
            await self._session.close()
            self._session = None

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        stats = self.stats
        stats.requests += 1
        stats.in_flight += 1
        try:
            response = await self._route(request)
        finally:
            stats.in_flight -= 1
        stats.responses[f"{response.status // 100}xx"] += 1
        if request.path != "/" and response.status != 401:  # scoring latency: not health checks or bad keys
            stats.latencies_ms.append((time.perf_counter() - started) * 1000)
        return response

    async def _route(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.path == "/" and request.method in ("GET", "HEAD"):
            if self.ready_replicas():
                return web.Response(text="Healthy")
            return _json_error(503, "No replica is ready.")
        if not self.keys.accepts_authorization(request.headers.get("Authorization")):
            self.stats.unauthorized += 1
            return _json_error(
                401, "Missing or invalid key: send the header 'Authorization: Bearer <key>'.",
                {"WWW-Authenticate": "Bearer"},
            )  # fmt: skip
        self.stats.last_request_at = time.time()
        body = await request.read()
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _REQUEST_DROP)
        if request.remote:
            headers["X-Forwarded-For"] = request.remote
        tried: Replica | None = None
        for _attempt in range(2):
            ready = self.ready_replicas()
            candidates = [r for r in ready if r is not tried] or list(ready)
            if not candidates:
                self.stats.no_replica += 1
                return _json_error(503, "No replica is ready to serve the request.")
            replica = candidates[next(self._turn) % len(candidates)]
            try:
                return await self._forward(replica, request, headers, body)
            except _RETRYABLE as error:
                # Refused or dropped before an answer (the replica died or is restarting). Scoring
                # requests are pure functions of their body, so one retry on another replica is safe.
                logger.warning("%s: %s, retrying once", replica.name, error.__class__.__name__)
                self.stats.retries += 1
                tried = replica
            except (TimeoutError, aiohttp.ClientError) as error:
                logger.warning("%s: %s", replica.name, error.__class__.__name__)
                break
        self.stats.upstream_errors += 1
        return _json_error(502, "The replica failed to answer the request.")

    async def _forward(
        self, replica: Replica, request: web.BaseRequest, headers: CIMultiDict, body: bytes
    ) -> web.Response:
        slots = self._slots.get(replica)
        if slots is None:
            slots = self._slots[replica] = asyncio.Semaphore(replica.spec.max_in_flight)
        replica.in_flight += 1  # counted while it waits for a slot too: a draining replica waits for it
        replica.requests += 1
        try:
            async with slots:
                url = URL(f"http://127.0.0.1:{replica.port}{request.raw_path}", encoded=True)
                async with self._session.request(
                    request.method, url, headers=headers, data=body, allow_redirects=False
                ) as upstream:
                    payload = await upstream.read()
                    self.stats.count_batch(replica, upstream.headers.get(BATCH_SIZE_HEADER))
                    out_headers = CIMultiDict(
                        (k, v) for k, v in upstream.headers.items() if k.lower() not in _RESPONSE_DROP
                    )
                    return web.Response(
                        status=upstream.status, reason=upstream.reason, headers=out_headers, body=payload
                    )
        finally:
            replica.in_flight -= 1
