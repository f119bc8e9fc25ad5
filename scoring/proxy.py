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
import resource
import time
import weakref
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Sequence
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

# 32 MiB: a 12-megapixel photo is 3-8 MB as JPEG and up to ~25 MB as PNG, and a third more in base64 JSON; the
# dashboard's own test images are at most 10 MiB. A bigger body is refused with 413 before it is read (its
# Content-Length says so) or as soon as the stream passes the limit. One constant for now, not per deployment.
MAX_BODY_BYTES = 32 * 2**20
# A connection must finish a request's headers within this many seconds of opening (or of its previous
# answer), then it is closed: half-open connections and header tricklers (slowloris) hold no socket for long.
# HTTP clients send their headers in one write; this is also how long an idle keep-alive connection stays.
HEADER_TIMEOUT_S = 5.0
# Client connections at once; more are closed as soon as accepted, so a flood cannot take every file
# descriptor (the replicas' connections, logs and the status file need some too).
MAX_CONNECTIONS = 1000
# A body that stops arriving for this long is answered 408: while it streams, a replica's thread waits for it.
BODY_IDLE_TIMEOUT_S = 30.0
# A replica's answer is read whole before it is sent on (so that a failed replica can still be answered 502):
# one bigger than this is answered 502 instead, told by its Content-Length or once the read passes it. A
# scoring answer is JSON, far smaller; a replica that sends gigabytes must not take the supervisor's memory.
MAX_ANSWER_BYTES = 64 * 2**20
# Bodies up to this size are kept while forwarded, so a request to a replica that died can be sent again to
# another one; a bigger body is streamed once and not retried.
REPLAY_MAX_BYTES = 2**20
# Connection-level headers (RFC 9110 7.6.1) stay on their hop; the key stays at the front door, so user code
# in a replica never sees it.
_REQUEST_DROP = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Transfer-Encoding", "Upgrade",
        "Expect", "Authorization", "Proxy-Authorization",
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


def _too_large() -> web.Response:
    return _json_error(413, f"The request body is over the limit of {MAX_BODY_BYTES // 2**20} MiB.")


class _BodyRefused(Exception):
    """Raised inside the upstream request's body: the client's body, not the replica, ended the request."""


class _RequestBody:
    """The client's body, read only as fast as a replica takes it, so the proxy never holds it whole."""

    def __init__(self, request: web.BaseRequest, stats: ProxyStats) -> None:
        self._content = request.content
        self._stats = stats
        self.received = 0
        self._kept: list[bytes] | None = []  # what was read so far while small enough to send again
        self.refusal: web.Response | None = None

    @property
    def replayable(self) -> bool:
        return self._kept is not None

    async def chunks(self) -> AsyncIterator[bytes]:
        for chunk in list(self._kept or ()):  # a retry: first what the replica that failed was sent
            yield chunk
        while True:
            try:
                async with asyncio.timeout(BODY_IDLE_TIMEOUT_S):
                    chunk = await self._content.readany()
            except TimeoutError:
                self._refuse(408, f"No byte of the request body came for {BODY_IDLE_TIMEOUT_S:g} s.")
            except Exception:  # the client went away or broke its chunked encoding: nobody to answer
                self._refuse(400, "The request body was cut short.")
            if not chunk:
                return
            self.received += len(chunk)
            if self.received > MAX_BODY_BYTES:
                self.refusal = _too_large()
                self._stats.too_large += 1
                raise _BodyRefused
            if self._kept is not None:
                self._kept = self._kept + [chunk] if self.received <= REPLAY_MAX_BYTES else None
            yield chunk

    def _refuse(self, status: int, message: str) -> None:
        self.refusal = _json_error(status, message)
        self._stats.bad_bodies += 1
        raise _BodyRefused


class _Refused(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class _CappedServer(web.Server):
    """aiohttp's low-level server, closing the connections over a cap as soon as they are accepted."""

    def __init__(self, handler, *, max_connections: int, stats: ProxyStats, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._max_connections = max_connections
        self._stats = stats
        # Handlers made but not yet connected: asyncio makes the protocols of a burst of accepts first.
        self._unconnected: set[Any] = set()

    # The protocol factory: one call per accepted connection. Narrower in aiohttp's annotation than in use:
    # loop.create_server takes any asyncio.Protocol, and a refused connection gets a plain one.
    def __call__(self) -> asyncio.Protocol:  # type: ignore[override]
        if len(self._connections) + len(self._unconnected) >= self._max_connections:
            # Refused here, before aiohttp makes a request handler (closing one half-made logs a traceback).
            self._stats.refused_connections += 1
            return _Refused()
        handler = super().__call__()
        self._unconnected.add(handler)
        # Connected a few loop turns later, or never if the accept failed: then it must not count for ever.
        self._loop.call_later(1.0, self._unconnected.discard, handler)
        return handler

    def connection_made(self, handler, transport) -> None:
        self._unconnected.discard(handler)
        super().connection_made(handler, transport)


def _raise_open_files_limit(wanted: int) -> int:
    """Raise this process's soft limit on open files towards `wanted` (unprivileged up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return wanted
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


class ProxyStats:
    def __init__(self) -> None:
        self.requests = 0
        self.in_flight = 0
        self.responses: Counter[str] = Counter()
        self.unauthorized = 0
        self.no_replica = 0
        self.upstream_errors = 0
        self.too_large_answers = 0  # answers over MAX_ANSWER_BYTES, answered 502
        self.retries = 0
        self.too_large = 0  # 413s
        self.bad_bodies = 0  # bodies that stalled or were cut short
        self.refused_connections = 0  # closed at once: over MAX_CONNECTIONS
        self.internal_errors = 0  # bugs in the proxy, answered 500
        self.latencies_ms: deque[float] = deque(maxlen=2048)
        self.batched_requests = 0  # answers that carried X-Lynx-Batch-Size
        self.model_calls = 0.0  # the sum of 1/size over those answers: each call counted once
        self.last_request_at: float | None = None  # epoch seconds of the last authorised request (idle rule)

    def count_batch(self, replica: Replica, header: str | None) -> None:
        """Count an answer's batch size, as its replica said it, but never over the largest batch it may make
        (spec.max_batch_size): a script that says a million cannot push the average past what is possible."""
        try:
            size = int(header) if header else 0
        except ValueError:
            return
        if size >= 1:
            size = min(size, replica.spec.max_batch_size)
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
            "too_large_answers": self.too_large_answers,
            "retries": self.retries,
            "too_large": self.too_large,
            "bad_bodies": self.bad_bodies,
            "refused_connections": self.refused_connections,
            "internal_errors": self.internal_errors,
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
        self._sessions: dict[str, aiohttp.ClientSession] = {}  # a keep-alive pool per replica socket
        self._runner: web.ServerRunner | None = None

    async def start(self, host: str, port: int) -> None:
        """Bind and serve; raises OSError when the port is taken."""

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

        # The upstream pool (up to 512) and the supervisor's own files need descriptors besides the clients'.
        open_files = _raise_open_files_limit(2 * MAX_CONNECTIONS)
        server = _CappedServer(
            self._handle,
            max_connections=min(MAX_CONNECTIONS, open_files // 2),
            stats=self.stats,
            request_factory=make_request,
            access_log=None,
            # aiohttp arms this timer when a connection opens and after each answer, and closes the connection
            # if no complete request head has arrived when it fires: the header timeout.
            keepalive_timeout=HEADER_TIMEOUT_S,
        )
        self._runner = web.ServerRunner(server, shutdown_timeout=5)
        await self._runner.setup()
        # SO_REUSEADDR (asyncio's default on Unix, stated here because the deployment's scoring URI depends on
        # it): a restart binds the same port while connections of the previous run linger in TIME_WAIT.
        site = web.TCPSite(self._runner, host, port, backlog=1024, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await self.close()
            raise

    async def close(self) -> None:
        if self._runner:
            await self._runner.cleanup()
            self._runner = None
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()

    def _session_for(self, replica: Replica) -> aiohttp.ClientSession:
        """The pool to a replica: each listens on a Unix socket of its own (scoring.replicas), not a port."""
        path = str(replica.socket_path)
        session = self._sessions.get(path)
        if session is None or session.closed:
            session = self._sessions[path] = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=path, limit=512, keepalive_timeout=30),
                auto_decompress=False,  # pass bodies through byte for byte, with their Content-Encoding
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=600),
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return session

    async def forget(self, replica: Replica) -> None:
        """Close the pool to a replica that exited: a restart on the same socket starts afresh."""
        session = self._sessions.pop(str(replica.socket_path), None)
        if session is not None:
            await session.close()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        stats = self.stats
        stats.requests += 1
        stats.in_flight += 1
        try:
            response = await self._route(request)
        except Exception:  # a bug here must cost one request a 500, never the supervisor or the connection
            stats.internal_errors += 1
            logger.exception("proxy error on %s %s", request.method, request.path)
            response = _json_error(500, "The scoring proxy failed on this request; see supervisor.log.")
        finally:
            stats.in_flight -= 1
        stats.responses[f"{response.status // 100}xx"] += 1
        # Scoring latency: not health checks, nor what the proxy refused by itself (bad keys, big bodies).
        if request.path != "/" and response.status not in (401, 408, 413):
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
        if (request.content_length or 0) > MAX_BODY_BYTES:
            self.stats.too_large += 1
            return _too_large()  # before a byte of it is read
        if request.version >= (1, 1) and request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # what aiohttp's router does
            request.writer.output_size = 0
        body = _RequestBody(request, self.stats) if request.body_exists else None
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
            except (TimeoutError, aiohttp.ClientError) as error:
                if body is not None and body.refusal is not None:
                    return body.refusal
                if not isinstance(error, _RETRYABLE) or (body is not None and not body.replayable):
                    logger.warning("%s: %s", replica.name, error.__class__.__name__)
                    break
                # Refused or dropped before an answer (the replica died or is restarting). Scoring
                # requests are pure functions of their body, so one retry on another replica is safe.
                logger.warning("%s: %s, retrying once", replica.name, error.__class__.__name__)
                self.stats.retries += 1
                tried = replica
        self.stats.upstream_errors += 1
        return _json_error(502, "The replica failed to answer the request.")

    async def _forward(
        self, replica: Replica, request: web.BaseRequest, headers: CIMultiDict, body: _RequestBody | None
    ) -> web.Response:
        slots = self._slots.get(replica)
        if slots is None:
            slots = self._slots[replica] = asyncio.Semaphore(replica.spec.max_in_flight)
        replica.in_flight += 1  # counted while it waits for a slot too: a draining replica waits for it
        replica.requests += 1
        try:
            async with slots:
                url = URL(f"http://{replica.name}{request.raw_path}", encoded=True)
                async with self._session_for(replica).request(
                    request.method, url, headers=headers, data=body and body.chunks(), allow_redirects=False
                ) as upstream:
                    payload = await self._read_answer(upstream)
                    if payload is None:
                        self.stats.too_large_answers += 1
                        logger.warning(
                            "%s: an answer over %s bytes, answered 502", replica.name, MAX_ANSWER_BYTES
                        )
                        return _json_error(
                            502, f"The replica's answer is over the limit of {MAX_ANSWER_BYTES // 2**20} MiB."
                        )
                    self.stats.count_batch(replica, upstream.headers.get(BATCH_SIZE_HEADER))
                    out_headers = CIMultiDict(
                        (k, v) for k, v in upstream.headers.items() if k.lower() not in _RESPONSE_DROP
                    )
                    return web.Response(
                        status=upstream.status, reason=upstream.reason, headers=out_headers, body=payload
                    )
        finally:
            replica.in_flight -= 1

    @staticmethod
    async def _read_answer(upstream: aiohttp.ClientResponse) -> bytes | None:
        """The answer's body, or None when it is over MAX_ANSWER_BYTES (then not read further)."""
        if (upstream.content_length or 0) > MAX_ANSWER_BYTES:
            return None
        chunks: list[bytes] = []
        size = 0
        async for chunk in upstream.content.iter_chunked(2**16):
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                return None
            chunks.append(chunk)
        return b"".join(chunks)
