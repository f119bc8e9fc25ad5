"""The assets azure-ai-ml registers for a deployment, and the storage it uploads them to.

* `datastores` (the workspace's default blob datastore, `workspaceblobstore`) and `listSecrets`: where
  `Model(path=local)` uploads (`LocalUpload/<hash>/…`);
* `codes/{name}/versions/{v}/startPendingUpload`: a temporary blob reference with a SAS for a code folder;
* `models|codes|environments/{name}/versions[/{v}]`: PUT, GET, list (`hash` for codes, `$orderBy`/`$top`);
* blob storage, beyond what v1 needs (mms/artifacts.blob does the block and plain uploads): container
  listings and blob metadata, which the SDK reads to find an upload it already made.

`model_files` / `code_files` / `environment_version` resolve a deployment's references to the bytes the SDK
uploaded, for the storage initializer (rollout.py).
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

from .. import arm, mms
from ..http import Request, Response
from ..state import iso_now
from . import errors
from .resources import system_data

if TYPE_CHECKING:
    from ..emulator import AzureEmulator

DATASTORE = "workspaceblobstore"
CONTAINER_SAS = "sv=2021-08-06&sr=c&sp=rcwl&se=2099-01-01T00%3A00%3A00Z&sig=emulator"
KINDS = ("models", "codes", "environments")


class MissingBlob(Exception):
    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.uri = uri


def container(emu: AzureEmulator) -> str:
    return f"azureml-blobstore-{emu.workspace_id}"


def safe_join(root: Path, relative: str) -> Path:
    target = (root / PurePosixPath(relative.lstrip("/"))).resolve()
    if root.resolve() not in target.parents and target != root.resolve():
        raise ValueError(f"path {relative!r} leaves {root}")
    return target


# --- datastores ------------------------------------------------------------------------------------------


def _datastore_json(emu: AzureEmulator) -> dict[str, Any]:
    return {
        "id": f"{emu.workspace_scope}/datastores/{DATASTORE}",
        "name": DATASTORE,
        "type": "Microsoft.MachineLearningServices/workspaces/datastores",
        "properties": {
            "datastoreType": "AzureBlob",
            "accountName": emu.storage_account,
            "containerName": container(emu),
            "endpoint": "core.windows.net",
            "protocol": "https",
            "serviceDataAccessAuthIdentity": "WorkspaceSystemAssignedIdentity",
            "credentials": {"credentialsType": "AccountKey"},
            "isDefault": True,
            "description": None,
            "properties": {},
            "tags": {},
        },
        "systemData": system_data(emu.created, emu.created, emu.client_id),
    }


def datastore_list(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    if (problem := arm._check_scope(emu, m)) is not None:
        return problem
    return Response(200, {"value": [_datastore_json(emu)]})


def datastore_get(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    if (problem := arm._check_scope(emu, m)) is not None:
        return problem
    if m["name"] != DATASTORE:
        return errors.not_found("Datastore", m["name"])
    return Response(200, _datastore_json(emu))


def datastore_secrets(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    if (problem := arm._check_scope(emu, m)) is not None:
        return problem
    # Any well-formed key: the emulated storage does not check SharedKey signatures.
    return Response(200, {"secretsType": "AccountKey", "key": "bHlueC1lbXVsYXRvci1zdG9yYWdlLWtleQ=="})


# --- versioned assets ------------------------------------------------------------------------------------


def _asset_json(
    emu: AzureEmulator, kind: str, name: str, version: str, body: dict[str, Any]
) -> dict[str, Any]:
    props = dict(body.get("properties") or {})
    props.setdefault("provisioningState", "Succeeded")
    fields = ("properties", "tags", "flavors") if kind == "models" else ("properties", "tags")
    for field in fields:  # the SDK iterates them; Azure answers {} for none
        props[field] = props.get(field) or {}
    return {
        "id": f"{emu.workspace_scope}/{kind}/{name}/versions/{version}",
        "name": version,
        "type": f"Microsoft.MachineLearningServices/workspaces/{kind}/versions",
        "properties": props,
        "systemData": system_data(
            body.get("_created", emu.created), body.get("_created", emu.created), emu.client_id
        ),
    }


def version_put(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    if (problem := arm._check_scope(emu, m)) is not None:
        return problem
    key = (m["kind"].lower(), m["name"], m["version"])
    existing = emu.v2.assets.get(key)
    body = req.json() or {}
    if existing is not None and m["kind"].lower() == "environments":
        return Response(200, _asset_json(emu, key[0], key[1], key[2], existing))  # versions are immutable
    body["_created"] = iso_now()
    emu.v2.assets[key] = body
    return Response(201 if existing is None else 200, _asset_json(emu, *key, body))


def version_get(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    if (problem := arm._check_scope(emu, m)) is not None:
        return problem
    key = (m["kind"].lower(), m["name"], m["version"])
    body = emu.v2.assets.get(key)
    if body is None:
        return errors.not_found(m["kind"][:-1].capitalize() + "Version", f"{m['name']}:{m['version']}")
    return Response(200, _asset_json(emu, *key, body))


def version_list(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    if (problem := arm._check_scope(emu, m)) is not None:
        return problem
    kind = m["kind"].lower()
    found = [
        (version, body)
        for (k, name, version), body in emu.v2.assets.items()
        if k == kind and name == m["name"]
    ]
    wanted_hash = req.query.get("hash")
    if wanted_hash:
        found = [
            (v, b)
            for v, b in found
            if wanted_hash in ((b.get("properties") or {}).get("properties") or {}).values()
        ]
    found.sort(
        key=lambda item: item[1].get("_created", ""), reverse="desc" in req.query.get("$orderBy", "desc")
    )
    if req.query.get("$top"):
        found = found[: int(req.query["$top"])]
    return Response(200, {"value": [_asset_json(emu, kind, m["name"], v, b) for v, b in found]})


def container_get(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    """`models/{name}` (the asset's container): exists once a version does."""
    if (problem := arm._check_scope(emu, m)) is not None:
        return problem
    kind = m["kind"].lower()
    versions = [v for (k, n, v) in emu.v2.assets if k == kind and n == m["name"]]
    if not versions:
        return errors.not_found(kind[:-1].capitalize() + "Container", m["name"])
    return Response(
        200,
        {
            "id": f"{emu.workspace_scope}/{kind}/{m['name']}",
            "name": m["name"],
            "type": f"Microsoft.MachineLearningServices/workspaces/{kind}",
            "properties": {"latestVersion": max(versions, key=_version_key), "nextVersion": None},
            "systemData": system_data(emu.created, emu.created, emu.client_id),
        },
    )


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (0, version)


def start_pending_upload(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    if (problem := arm._check_scope(emu, m)) is not None:
        return problem
    # A temporary container of its own, with a container SAS (the SDK uploads the folder into it).
    blob_uri = f"https://{emu.storage_account}.blob.core.windows.net/{uuid.uuid4().hex}"
    return Response(
        200,
        {
            "pendingUploadId": uuid.uuid4().hex,
            "pendingUploadType": "TemporaryBlobReference",
            "blobReferenceForConsumption": {
                "blobUri": blob_uri,
                "storageAccountArmId": f"/subscriptions/{emu.subscription_id}/resourceGroups/"
                f"{emu.resource_group}/providers/Microsoft.Storage/storageAccounts/{emu.storage_account}",
                "credential": {
                    "credentialType": "SAS",
                    "sasUri": f"{blob_uri}?{CONTAINER_SAS}",
                },
            },
        },
    )


# --- blob storage (what v1's handler lacks) ------------------------------------------------------------


def blob(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    path = req.path.lstrip("/")
    if req.query.get("restype") == "container" and req.query.get("comp") == "list":
        return _list_blobs(emu, path, req.query.get("prefix", ""))
    if req.query.get("comp") == "metadata" and req.method == "PUT":
        if path not in emu.blobs:
            return Response(404, b"<Error><Code>BlobNotFound</Code></Error>", content_type="application/xml")
        emu.v2.blob_metadata[path] = _metadata(req.headers)
        return Response(
            200,
            None,
            headers={"ETag": f'"0x{uuid.uuid4().hex[:15].upper()}"'},
            content_type="application/octet-stream",
        )
    response = mms.blob(emu, req, m)
    if req.method == "PUT" and response.status == 201 and req.query.get("comp") in (None, "blocklist"):
        if _metadata(req.headers):
            emu.v2.blob_metadata[path] = _metadata(req.headers)
    if req.method in ("GET", "HEAD") and response.status == 200:
        response.headers.update({f"x-ms-meta-{k}": v for k, v in emu.v2.blob_metadata.get(path, {}).items()})
        response.headers.setdefault("x-ms-blob-type", "BlockBlob")
    return response


def _metadata(headers: dict[str, str]) -> dict[str, str]:
    return {k.removeprefix("x-ms-meta-"): v for k, v in headers.items() if k.startswith("x-ms-meta-")}


def _list_blobs(emu: AzureEmulator, container_name: str, prefix: str) -> Response:
    base = container_name.rstrip("/") + "/"
    names = sorted(p[len(base) :] for p in emu.blobs if p.startswith(base + prefix))
    items = "".join(
        f"<Blob><Name>{escape(name)}</Name><Properties><Content-Length>{len(emu.blobs[base + name])}"
        "</Content-Length><BlobType>BlockBlob</BlobType></Properties>"
        + "<Metadata>"
        + "".join(f"<{k}>{escape(v)}</{k}>" for k, v in emu.v2.blob_metadata.get(base + name, {}).items())
        + "</Metadata></Blob>"
        for name in names
    )
    body = (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<EnumerationResults ServiceEndpoint="https://{emu.storage_account}.blob.core.windows.net/" '
        f'ContainerName="{escape(container_name)}"><Prefix>{escape(prefix)}</Prefix>'
        f"<Blobs>{items}</Blobs><NextMarker /></EnumerationResults>"
    )
    return Response(200, body.encode(), content_type="application/xml")


# --- resolving a deployment's references -------------------------------------------------------------------

_ARM_VERSION = re.compile(
    r"/(?P<kind>models|codes|environments)/(?P<name>[^/]+)/versions/(?P<version>[^/]+)$", re.I
)
_DATASTORE_URI = re.compile(r"^azureml://(?:.*/)?datastores/(?P<datastore>[^/]+)/paths/(?P<path>.+)$", re.I)


def _referenced(emu: AzureEmulator, arm_id: str, kind: str) -> tuple[str, str, dict[str, Any]]:
    found = _ARM_VERSION.search(arm_id or "")
    body = emu.v2.assets.get((kind, found["name"], found["version"])) if found else None
    if found is None or body is None:
        raise MissingBlob(arm_id or f"(no {kind[:-1]})")
    return found["name"], found["version"], dict(body.get("properties") or {})


def _blob_prefix(emu: AzureEmulator, uri: str) -> str:
    """`container/path` in the emulated storage for an azureml:// datastore URI or an https blob URL."""
    found = _DATASTORE_URI.match(uri)
    if found is not None:
        return f"{container(emu)}/{found['path']}"
    parts = urlsplit(uri)
    return parts.path.lstrip("/")


def _files_under(emu: AzureEmulator, uri: str) -> list[tuple[str, bytes]]:
    """The blobs under `uri` (a file or a folder), named relative to the folder that holds it, so that a
    registered folder keeps its own name (`model/…`) and a registered file is just its name."""
    prefix = _blob_prefix(emu, uri).rstrip("/")
    parent = prefix.rsplit("/", 1)[0]
    found = [
        (path[len(parent) + 1 :], content)
        for path, content in emu.blobs.items()
        if path == prefix or path.startswith(prefix + "/")
    ]
    if not found:
        raise MissingBlob(uri)
    return found


def model_files(emu: AzureEmulator, arm_id: str) -> tuple[str, str, list[tuple[str, bytes]]]:
    name, version, props = _referenced(emu, arm_id, "models")
    return name, version, _files_under(emu, str(props.get("modelUri") or ""))


def code_files(emu: AzureEmulator, arm_id: str) -> tuple[str, list[tuple[str, bytes]]]:
    """(the code folder's name, its files relative to that folder)."""
    _name, _version, props = _referenced(emu, arm_id, "codes")
    uri = str(props.get("codeUri") or "")
    files = _files_under(emu, uri)
    folder = _blob_prefix(emu, uri).rstrip("/").rsplit("/", 1)[-1]
    return folder, [(relative.split("/", 1)[1] if "/" in relative else relative, c) for relative, c in files]


def environment_version(emu: AzureEmulator, arm_id: str) -> tuple[str, str, dict[str, Any]]:
    try:
        return _referenced(emu, arm_id, "environments")
    except MissingBlob:
        return "unknown", "0", {}


_WS = arm.WS_SCOPE
ROUTES = [
    ("tls", "GET", _WS + r"/datastores", datastore_list, True),
    ("tls", "GET", _WS + r"/datastores/(?P<name>[^/]+)", datastore_get, True),
    ("tls", "POST", _WS + r"/datastores/(?P<name>[^/]+)/listSecrets", datastore_secrets, True),
    (
        "tls",
        "POST",
        _WS + r"/(?P<kind>codes|models)/(?P<name>[^/]+)/versions/(?P<version>[^/]+)/startPendingUpload",
        start_pending_upload,
        True,
    ),
    (
        "tls",
        "GET",
        _WS + r"/(?P<kind>models|codes|environments)/(?P<name>[^/]+)/versions",
        version_list,
        True,
    ),
    (
        "tls",
        "PUT",
        _WS + r"/(?P<kind>models|codes|environments)/(?P<name>[^/]+)/versions/(?P<version>[^/]+)",
        version_put,
        True,
    ),
    (
        "tls",
        "GET",
        _WS + r"/(?P<kind>models|codes|environments)/(?P<name>[^/]+)/versions/(?P<version>[^/]+)",
        version_get,
        True,
    ),
    ("tls", "GET", _WS + r"/(?P<kind>models|codes|environments)/(?P<name>[^/]+)", container_get, True),
    ("blob", "*", r"/.+", blob, False),
]
