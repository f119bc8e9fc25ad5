"""Scoring URIs as azureml-fe serves them: auth, admission, then the request proxied unchanged to the
service's scoring host (the deployed score.py in Microsoft's inference server). Swagger as MMS serves it.

Served on the plain-http listener (an AKS compute without TLS) and, for a compute with TLS, on the TLS
listener under the compute's certified name (through the CONNECT proxy).
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from .. import lifecycle
from ..hosts import FrontEnd, ScoringHost
from ..http import Request, Response
from ..state import Service
from .services import key_auth_enabled

if TYPE_CHECKING:
    from ..emulator import AzureEmulator

DEFAULT_MAX_QUEUE_WAIT_MS = 500
DEFAULT_SCORING_TIMEOUT_MS = 60_000


def _authorized(svc: Service, req: Request) -> bool:
    if svc.payload.get("aadAuthEnabled"):
        expiry = svc.tokens.get(req.bearer)
        return expiry is not None and expiry > time.time()
    if key_auth_enabled(svc.payload):
        return req.bearer in (svc.primary_key, svc.secondary_key)
    return True


def score(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    svc = emu.services.get(m["name"])
    if svc is None or svc.deleting:
        return Response(404, {"message": "Not Found"})
    if not _authorized(svc, req):
        return Response(401, b"Unauthorized", content_type="text/plain")
    host: ScoringHost | None = svc.host
    if host is None or host.exited or not host.ready:
        return Response(503, {"message": f"Service {svc.name} is {svc.state}: no replica is ready."})
    svc.requests_served += 1
    payload = svc.payload
    wait = float(payload.get("maxQueueWaitMs") or DEFAULT_MAX_QUEUE_WAIT_MS) / 1000
    timeout = float(payload.get("scoringTimeoutMs") or DEFAULT_SCORING_TIMEOUT_MS) / 1000
    front_end: FrontEnd = svc.front_end
    path = "/score" + (f"?{urlencode(req.query)}" if req.query else "")
    capacity = lifecycle.capacity(payload)

    def proxied() -> Response:
        # Runs after the emulator's lock is released: only this request waits for the host.
        if not front_end.admit(capacity, wait):
            return Response(
                503,
                b"Service Unavailable: the request waited longer than maxQueueWaitMs "
                + f"({int(wait * 1000)} ms) for a replica.".encode(),
                content_type="text/plain",
            )
        try:
            status, headers, body = host.forward(req.method, path, req.headers, req.body, timeout)
        except TimeoutError:  # socket.timeout is TimeoutError
            return Response(
                504,
                b"Gateway Timeout: scoring took longer than scoringTimeoutMs "
                + f"({int(timeout * 1000)} ms).".encode(),
                content_type="text/plain",
            )
        except OSError as exc:
            return Response(502, f"Bad Gateway: the replica closed the connection ({exc}).".encode())
        finally:
            front_end.release()
        content_type = headers.pop("Content-Type", None) or headers.pop("content-type", None) or ""
        return Response(
            status, body, headers=headers, content_type=content_type or "application/octet-stream"
        )

    return Response(202, deferred=proxied)


def swagger(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    if m["name"] not in emu.services:
        return Response(404, {"message": "Not Found"})
    return Response(
        200,
        {
            "swagger": "2.0",
            "info": {"title": m["name"], "version": "1.0"},
            "paths": {"/score": {"post": {"responses": {"200": {"description": "scores"}}}}},
        },
    )
