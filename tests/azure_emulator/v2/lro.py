"""ARM long-running operations as Azure ML's v2 API runs them.

A PUT, PATCH, DELETE or POST that starts work answers 200/201/202 with `Azure-AsyncOperation`
(`…/locations/{loc}/mfeOperationsStatus/{id}`) and `Location` (`…/mfeOperationResults/{id}`). The status URL
answers `{"status": "InProgress" | "Succeeded" | "Failed" | "Canceled", "error": …}`; the result URL answers
202 while the operation runs and 200 (empty) when it has ended, which is what azure-core's ARM poller reads
for DELETE and POST. `Retry-After` (the generated client reads it) is Azure's pace scaled like every step.
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any

from ..http import Request, Response
from .resources import ArmOperation

if TYPE_CHECKING:
    from ..emulator import AzureEmulator

API_VERSION = "2023-04-01-preview"
# azure-core polls again after Retry-After; ARM's own hint is usually 10-60 s (unverified for Azure ML).
AZURE_POLL_SECONDS = 10.0
MIN_POLL_SECONDS = 0.05  # azure-core ignores a zero Retry-After and falls back to the SDK's 5 s


def _operations_base(emu: AzureEmulator) -> str:
    return (
        f"{emu.base_url}/subscriptions/{emu.subscription_id}/providers/Microsoft.MachineLearningServices"
        f"/locations/{emu.location}"
    )


def lro_headers(emu: AzureEmulator, op: ArmOperation) -> dict[str, str]:
    base = _operations_base(emu)
    return {
        "Azure-AsyncOperation": f"{base}/mfeOperationsStatus/{op.id}?api-version={API_VERSION}",
        "Location": f"{base}/mfeOperationResults/{op.id}?api-version={API_VERSION}",
        **retry_after(emu),
        "x-ms-async-operation-timeout": "PT1H",
    }


def retry_after(emu: AzureEmulator) -> dict[str, str]:
    """Azure's `Retry-After` is whole seconds (the generated client reads it as an int); below a second, at
    a fast time scale, azure-core's own `retry-after-ms` says the same (a deviation only tests see)."""
    seconds = poll_seconds(emu)
    if seconds >= 1:
        return {"Retry-After": str(int(seconds))}
    return {"retry-after-ms": str(int(seconds * 1000))}


def poll_seconds(emu: AzureEmulator) -> float:
    return max(emu.pace(AZURE_POLL_SECONDS), MIN_POLL_SECONDS)


def start(
    emu: AzureEmulator, kind: str, endpoint: str, deployment: str = "", action: str = ""
) -> ArmOperation:
    op = ArmOperation(
        id=str(uuid.uuid4()), kind=kind, endpoint=endpoint, deployment=deployment, action=action
    )
    emu.v2.operations[op.id] = op
    return op


def accepted(emu: AzureEmulator, op: ArmOperation, status: int, body: Any = None) -> Response:
    return Response(status, body, headers=lro_headers(emu, op))


def operation_status(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    op = emu.v2.operations.get(m["id"])
    if op is None:
        return Response(404, {"error": {"code": "NotFound", "message": f"Operation {m['id']} not found."}})
    body: dict[str, Any] = {"id": m["id"], "name": m["id"], "status": op.status, "startTime": op.started}
    if op.ended:
        body["endTime"] = op.ended
    if op.error is not None:
        body["error"] = op.error
    headers = retry_after(emu) if op.status == "InProgress" else {}
    return Response(200, body, headers=headers)


def operation_result(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    op = emu.v2.operations.get(m["id"])
    if op is None:
        return Response(404, {"error": {"code": "NotFound", "message": f"Operation {m['id']} not found."}})
    if op.status == "InProgress":
        return Response(202, None, headers=lro_headers(emu, op))
    return Response(200, None)
