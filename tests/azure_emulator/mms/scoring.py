"""Scoring (served on the plain-http listener, like an AKS service without TLS) and swagger."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..http import Request, Response
from ..state import iso_now

if TYPE_CHECKING:
    from ..emulator import AzureEmulator


def score(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    svc = emu.services.get(m["name"])
    if svc is None or svc.deleting:
        return Response(404, {"message": "Not Found"})
    if svc.state != "Healthy":
        return Response(503, {"message": f"Service {svc.name} is {svc.state}"})
    if svc.payload.get("authEnabled", True) and req.bearer not in (svc.primary_key, svc.secondary_key):
        return Response(401, b"Unauthorized", content_type="text/plain")
    if req.method == "GET":
        return Response(200, b"Healthy", content_type="text/plain")
    svc.requests_served += 1
    status, body = emu.scorer(svc.name, req.body)
    svc.log_lines.append(f"{iso_now()} | POST /score {status}")
    return Response(status, body)


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
