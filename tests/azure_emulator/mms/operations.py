"""The long-running operations that service create, update, delete and key regeneration return."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ..http import Request, Response
from ..state import mms_error

if TYPE_CHECKING:
    from ..emulator import AzureEmulator


def operation_get(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    op = emu.operations.get(m["id"])
    if op is None:
        return mms_error(404, "NotFound", f"Operation {m['id']} not found.")
    body: dict[str, Any] = {
        "id": op.id,
        "operationType": op.operation_type,
        "state": op.state,
        "createdTime": op.created_time,
        "resourceLocation": f"/services/{op.target}",
    }
    if op.error:
        body["error"] = op.error
    if op.kind == "service":
        # wait_for_deployment names the build log (operationLog) for a build, get_logs() for a deployment.
        body["operationDetails"] = {"subOperationType": op.sub_operation or "DeployService"}
    if op.log_uri:
        body["operationLog"] = op.log_uri
    return Response(200, body)
