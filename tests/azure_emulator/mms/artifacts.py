"""Discovery (the regional endpoints), the artifact service, and the blob storage models upload to."""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from typing import TYPE_CHECKING, Any

from ..http import Request, Response
from ..state import iso_now

if TYPE_CHECKING:
    from ..emulator import AzureEmulator


def discovery(emu: AzureEmulator, req: Request, _m: re.Match[str]) -> Response:
    base = emu.base_url
    return Response(
        200,
        {
            name: base
            for name in (
                "api",
                "catalog",
                "experimentation",
                "gallery",
                "history",
                "hyperdrive",
                "labeling",
                "modelmanagement",
                "pipelines",
                "studio",
            )
        },
    )


# --- artifacts and blob storage ------------------------------------------------------------------


def artifacts_batch_metadata(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    origin, container = m["origin"], m["container"]
    paths = [item["path"] for item in (req.json() or {}).get("paths", [])]
    artifacts: dict[str, Any] = {}
    content: dict[str, Any] = {}
    for path in paths:
        artifact_id = f"{origin}/{container}/{path}"
        artifacts[path] = {
            "artifactId": artifact_id,
            "origin": origin,
            "container": container,
            "path": path,
            "etag": str(uuid.uuid4()),
            "createdTime": iso_now(),
            "dataPath": None,
        }
        # Storage lives behind the intercepting proxy under Azure's own host name, because the
        # vendored storage client rebuilds the account URL as https://{account}.blob.{suffix}.
        blob = f"ExperimentRun/dcid.{container}/{path}"
        content[path] = {
            "contentUri": f"https://{emu.storage_account}.blob.core.windows.net/azureml/{blob}"
            f"?sv=2019-07-07&sr=b&sig={uuid.uuid4().hex}&se=2099-01-01T00%3A00%3A00Z&sp=rcw",
            "origin": origin,
            "container": container,
            "path": path,
        }
        emu.artifacts[artifact_id] = f"azureml/{blob}"
    return Response(200, {"artifacts": artifacts, "artifactContentInformation": content, "errors": {}})


def blob(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    path = req.path.lstrip("/")
    comp = req.query.get("comp")
    md5 = base64.b64encode(hashlib.md5(req.body).digest()).decode()
    headers = {
        "ETag": f'"0x{uuid.uuid4().hex[:15].upper()}"',
        "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT",
        "x-ms-request-server-encrypted": "true",
        "x-ms-version": "2019-07-07",
        "x-ms-request-id": str(uuid.uuid4()),
    }
    if req.method == "PUT" and comp == "block":
        emu.blob_blocks.setdefault(path, {})[req.query["blockid"]] = req.body
        return Response(201, None, headers={**headers, "Content-MD5": md5})
    if req.method == "PUT" and comp == "blocklist":
        ids = re.findall(rb"<(?:Latest|Committed|Uncommitted)>([^<]+)</", req.body)
        blocks = emu.blob_blocks.pop(path, {})
        emu.blobs[path] = b"".join(blocks[i.decode()] for i in ids)
        return Response(201, None, headers=headers)
    if req.method == "PUT":
        emu.blobs[path] = req.body
        return Response(201, None, headers={**headers, "Content-MD5": md5})
    if req.method in ("GET", "HEAD") and path in emu.blobs:
        return Response(200, emu.blobs[path], headers=headers, content_type="application/octet-stream")
    return Response(404, b"<Error><Code>BlobNotFound</Code></Error>", content_type="application/xml")
