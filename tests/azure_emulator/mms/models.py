"""Model management: assets and registered models (register, query by name and tags, get)."""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any

from ..http import Request, Response
from ..state import RegisteredModel, iso_now, mms_error

if TYPE_CHECKING:
    from ..emulator import AzureEmulator


def asset_create(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    body = req.json() or {}
    asset_id = uuid.uuid4().hex
    asset = {
        "id": asset_id,
        "name": body.get("name"),
        "type": None,
        "description": body.get("description"),
        "artifacts": body.get("artifacts", []),
        "kvTags": body.get("kvTags") or {},
        "properties": body.get("properties") or {},
        "runid": body.get("runid"),
        "meta": body.get("meta"),
        "createdTime": iso_now(),
    }
    emu.assets[asset_id] = asset
    return Response(200, asset)


def asset_get(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    asset = emu.assets.get(m["id"])
    return Response(200, asset) if asset else mms_error(404, "NotFound", f"Asset {m['id']} not found.")


def model_json(model: RegisteredModel) -> dict[str, Any]:
    return {
        "id": model.id,
        "name": model.name,
        "version": model.version,
        "framework": "Custom",
        "frameworkVersion": None,
        "datasets": [],
        "url": model.url,
        "mimeType": "application/octet-stream",
        "description": model.description,
        "createdTime": model.created_time,
        "modifiedTime": model.created_time,
        "unpack": False,
        "parentModelId": None,
        "runId": None,
        "experimentName": None,
        "kvTags": model.tags,
        "properties": model.properties,
        "derivedModelIds": None,
        "sampleInputData": None,
        "sampleOutputData": None,
        "resourceRequirements": None,
        "createdBy": {
            "userObjectId": None,
            "userPuId": None,
            "userIdp": None,
            "userAltSecId": None,
            "userIss": None,
            "userTenantId": None,
            "userName": "lynx-emulator",
        },
    }


def model_register(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    body = req.json() or {}
    name = body["name"]
    versions = [x.version for x in emu.models if x.name == name]
    model = RegisteredModel(
        name=name,
        version=max(versions, default=0) + 1,
        url=body.get("url", ""),
        tags=body.get("kvTags") or {},
        properties=body.get("properties") or {},
        description=body.get("description"),
        created_time=iso_now(),
    )
    emu.models.append(model)
    emu.record("mms.model_register", model=model.id)
    return Response(200, model_json(model))


def _matches(wanted: str | None, have: dict[str, str]) -> bool:
    for clause in filter(None, (wanted or "").split(",")):
        key, _, value = clause.partition("=")
        if key not in have or (value and have[key] != value):
            return False
    return True


def model_query(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    q = req.query
    found = [
        x
        for x in emu.models
        if (not q.get("name") or x.name == q["name"])
        and _matches(q.get("tags"), x.tags)
        and _matches(q.get("properties"), x.properties)
    ]
    found.sort(key=lambda x: (x.created_time, x.version), reverse=True)
    if q.get("count"):
        found = found[: int(q["count"])]
    return Response(200, {"value": [model_json(x) for x in found]})


def model_get(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    for model in emu.models:
        if model.id == m["id"]:
            return Response(200, model_json(model))
    return mms_error(404, "NotFound", f"Model with id {m['id']} not found in provided workspace.")
