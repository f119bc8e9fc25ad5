"""AKS web services: name and resource validation, create, list, get, patch, delete, keys, logs."""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import TYPE_CHECKING, Any

from .. import lifecycle
from ..hosts import FrontEnd
from ..http import Request, Response
from ..scheduler import unschedulable_reason
from ..state import Service, iso_now, mms_error, new_key
from .models import model_json

if TYPE_CHECKING:
    from ..emulator import AzureEmulator


def _validation(message: str | None) -> Response:
    return Response(200, {"error": {"message": message}} if message else {})


def validate_name(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    if m["name"] in emu.services:
        return _validation(
            f"Service {m['name']} with the same name already exists, please use a different "
            "service name or delete the existing service."
        )
    return _validation(None)


def validate_resource(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    body = req.json() or {}
    compute = emu.computes.get(body.get("computeName", ""))
    if compute is None:
        return _validation(f"Compute target {body.get('computeName')} not found in workspace.")
    if compute.provisioning_state != "Succeeded":
        return _validation(
            f"Compute target {compute.name} is in state {compute.provisioning_state}; "
            "deploy again when it has Succeeded."
        )
    return _validation(None)


def validate(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    return _validation(None)


def service_json(emu: AzureEmulator, svc: Service) -> dict[str, Any]:
    p = svc.payload
    model_ids = (p.get("environmentImageRequest") or {}).get("modelIds") or []
    models = [model_json(x) for x in emu.models if x.id in model_ids]
    return {
        "id": svc.name,
        "name": svc.name,
        "description": p.get("description"),
        "kvTags": p.get("kvTags") or {},
        "properties": {**(p.get("properties") or {}), "hasInferenceSchema": "False"},
        "operationId": svc.operation_id,
        "state": svc.state,
        "createdTime": svc.created_time,
        "updatedTime": svc.updated_time or svc.created_time,
        "error": svc.error,
        "computeType": "AKS",
        "imageId": None,
        "imageDigest": None,
        "createdBy": {"userName": "lynx-emulator"},
        "appInsightsEnabled": p.get("appInsightsEnabled", False),
        "authEnabled": key_auth_enabled(p),
        "aadAuthEnabled": bool(p.get("aadAuthEnabled")),
        "autoScaler": p.get("autoScaler")
        or {
            "autoscaleEnabled": True,
            "minReplicas": 1,
            "maxReplicas": 10,
            "refreshPeriodInSeconds": 1,
            "targetUtilization": 70,
        },
        "computeName": p.get("computeName"),
        "containerResourceRequirements": p.get("containerResourceRequirements")
        or {"cpu": 0.1, "cpuLimit": None, "memoryInGB": 0.5, "memoryInGBLimit": None, "gpu": 0, "fpga": 0},
        "dataCollection": p.get("dataCollection") or {"eventHubEnabled": False, "storageEnabled": False},
        "maxConcurrentRequestsPerContainer": p.get("maxConcurrentRequestsPerContainer", 1),
        "maxQueueWaitMs": p.get("maxQueueWaitMs", 500),
        "numReplicas": p.get("numReplicas"),
        "scoringTimeoutMs": p.get("scoringTimeoutMs", 60000),
        "scoringUri": scoring_uri(emu, svc),
        "livenessProbeRequirements": p.get("livenessProbeRequirements")
        or {
            "failureThreshold": 3,
            "successThreshold": 1,
            "timeoutSeconds": 2,
            "periodSeconds": 10,
            "initialDelaySeconds": 310,
        },
        "models": models,
        "environmentImageRequest": p.get("environmentImageRequest"),
        "deploymentStatus": {
            "desiredReplicas": p.get("numReplicas") or 1,
            "updatedReplicas": 0 if svc.state == "Transitioning" else (p.get("numReplicas") or 1),
            "availableReplicas": (p.get("numReplicas") or 1) if svc.state == "Healthy" else 0,
            "error": svc.error,
        },
        "namespace": p.get("namespace") or f"azureml-{emu.workspace_name}",
        "isDefault": None,
        "trafficPercentile": None,
        "type": None,
    }


def key_auth_enabled(payload: dict[str, Any]) -> bool:
    """AKS services use key auth unless told otherwise; token auth replaces it (the SDK refuses both)."""
    enabled = payload.get("authEnabled")
    return (not payload.get("aadAuthEnabled")) if enabled is None else bool(enabled)


def scoring_uri(emu: AzureEmulator, svc: Service) -> str:
    """http on the front end's address, or https on the compute's certified name when its TLS is on."""
    compute_scoring_base = getattr(emu, "compute_scoring_base", None)
    if compute_scoring_base is None:
        return emu.scoring_uri(svc.name)
    scheme, host = compute_scoring_base(str(svc.payload.get("computeName") or ""))
    return f"{scheme}://{host}/api/v1/service/{svc.name}/score"


def _unschedulable_error(name: str, message: str) -> dict[str, Any]:
    return {
        "code": "KubernetesDeploymentFailed",
        "statusCode": 400,
        "message": "Kubernetes Deployment failed",
        "details": [
            {
                "code": "Unschedulable",
                "message": f"{message}\nPlease check logs for your container "
                f"instance: {name}. From the AML SDK, you can run print(service.get_logs()) if you have "
                "service object to fetch the logs.",
            }
        ],
    }


def service_create(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    payload = req.json() or {}
    name = payload.get("name", "")
    if name in emu.services:
        return mms_error(
            409,
            "Conflict",
            f"Service {name} with the same name already exists, please use a "
            "different service name or delete the existing service.",
        )
    compute = emu.computes.get(payload.get("computeName", ""))
    if compute is None or compute.provisioning_state != "Succeeded":
        return mms_error(
            400,
            "BadRequest",
            "The request is invalid.",
            [
                {
                    "code": "ComputeNotFound" if compute is None else "ComputeNotReady",
                    "message": f"Compute {payload.get('computeName')} is not available for deployment.",
                }
            ],
        )
    keys = payload.get("keys") or {}
    svc = Service(
        name=name,
        payload=payload,
        created_time=iso_now(),
        primary_key=keys.get("primaryKey") or new_key(),
        secondary_key=keys.get("secondaryKey") or new_key(),
        front_end=FrontEnd(),
    )
    op = _service_operation(emu, name, "Deploy")
    message = emu.faults.take_unschedulable(name) or unschedulable_reason(
        emu, str(payload.get("computeName") or ""), payload
    )
    if message:
        svc.begin(op.id, outcome="Unschedulable", outcome_error=_unschedulable_error(name, message))
    else:
        svc.begin(op.id)
    emu.services[name] = svc
    lifecycle.wake_in(emu, 0.0)
    emu.record("mms.service_create", service=name)
    return Response(
        202, {"operationId": op.id}, headers={"Operation-Location": f"{emu.mms_base(req)}/operations/{op.id}"}
    )


def _service_operation(emu: AzureEmulator, name: str, operation_type: str) -> Any:
    """A deploy or update operation: NotStarted until the emulator's clock next runs (MMS queues it)."""
    op = emu.new_operation("service", name, 0.0, operation_type)
    op.state = "NotStarted"
    return op


def _service_or_404(emu: AzureEmulator, name: str) -> Service | Response:
    svc = emu.services.get(name)
    if svc is None:
        return mms_error(404, "NotFound", f"No service with name {name} found in provided workspace.")
    return svc


def _in_progress(svc: Service) -> Response:
    return mms_error(
        409,
        "Conflict",
        "Conflict",
        [
            {
                "code": "OperationInProgress",
                "message": f"An operation is already in progress on service '{svc.name}' "
                f"(operation {svc.operation_id}); "
                "wait for it to finish before starting another one.",
            }
        ],
    )


def service_list(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    compute_type = req.query.get("computeType")
    items = [service_json(emu, s) for s in emu.services.values() if compute_type in (None, "AKS")]
    return Response(200, {"value": items})


def service_get(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    svc = _service_or_404(emu, m["name"])
    return svc if isinstance(svc, Response) else Response(200, service_json(emu, svc))


def service_patch(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    svc = _service_or_404(emu, m["name"])
    if isinstance(svc, Response):
        return svc
    if svc.busy:
        return _in_progress(svc)
    image_request_before = json.dumps(svc.payload.get("environmentImageRequest"), sort_keys=True)
    for op in req.json() or []:
        target: dict[str, Any] = svc.payload
        parts = op["path"].strip("/").split("/")
        for part in parts[:-1]:
            if not isinstance(target.get(part), dict):
                target[part] = {}
            target = target[part]
        target[parts[-1]] = op.get("value")
    # New code, models or environment: a new revision (image build if needed, new pods); else a scale change.
    needs_host = (
        json.dumps(svc.payload.get("environmentImageRequest"), sort_keys=True) != image_request_before
    )
    operation = _service_operation(emu, svc.name, "Update")
    message = emu.faults.take_unschedulable(svc.name) or unschedulable_reason(
        emu, str(svc.payload.get("computeName") or ""), svc.payload, replacing=svc.name
    )
    if message:
        svc.begin(
            operation.id,
            needs_host=needs_host,
            outcome="Unschedulable",
            outcome_error=_unschedulable_error(svc.name, message),
        )
    else:
        svc.begin(operation.id, needs_host=needs_host)
    svc.log_lines.append(f"{iso_now()} | Update requested: {json.dumps(req.json())}")
    lifecycle.wake_in(emu, 0.0)
    return Response(
        202, None, headers={"Operation-Location": f"{emu.mms_base(req)}/operations/{operation.id}"}
    )


def service_delete(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    svc = emu.services.get(m["name"])
    if svc is None:
        return Response(204)
    if svc.busy:
        return _in_progress(svc)
    svc.deleting = True
    seconds = lifecycle.service_delete_seconds(emu)
    svc.deadline = time.monotonic() + seconds
    lifecycle.wake_in(emu, seconds)
    operation = emu.new_operation("service", svc.name, seconds, "Delete")
    return Response(
        202, None, headers={"Operation-Location": f"{emu.mms_base(req)}/operations/{operation.id}"}
    )


def service_keys(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    svc = _service_or_404(emu, m["name"])
    if isinstance(svc, Response):
        return svc
    return Response(200, {"primaryKey": svc.primary_key, "secondaryKey": svc.secondary_key})


def service_regen_keys(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    svc = _service_or_404(emu, m["name"])
    if isinstance(svc, Response):
        return svc
    body = req.json() or {}
    value = body.get("keyValue") or new_key()
    if body.get("keyType") == "Primary":
        svc.primary_key = value
    elif body.get("keyType") == "Secondary":
        svc.secondary_key = value
    else:
        return mms_error(400, "BadRequest", f"Invalid keyType {body.get('keyType')!r}.")
    operation = emu.new_operation("keys", svc.name, 0.0, "RegenerateKeys")
    return Response(
        202, None, headers={"Operation-Location": f"{emu.mms_base(req)}/operations/{operation.id}"}
    )


def service_logs(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    svc = _service_or_404(emu, m["name"])
    if isinstance(svc, Response):
        return svc
    if req.query.get("init", "False").lower() == "true":
        lines = [
            f"{svc.created_time} | storage-initializer: downloading model(s) "
            f"{(svc.payload.get('environmentImageRequest') or {}).get('modelIds')} ... done"
        ]
    else:
        host = svc.new_host or svc.host
        lines = svc.log_lines + (host.log_lines() if host is not None else [])
    tail = int(req.query.get("tail") or 5000)
    return Response(200, {"content": "\n".join(lines[-tail:]) + "\n"})


TOKEN_LIFETIME_SECONDS = 3600  # unverified: AKS service tokens are documented as valid for a limited time


def service_token(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    """`POST …/services/{name}/token`: what `AksWebservice.get_access_token()` reads."""
    svc = _service_or_404(emu, m["name"])
    if isinstance(svc, Response):
        return svc
    if not svc.payload.get("aadAuthEnabled"):
        return mms_error(400, "BadRequest", f"Token authentication is not enabled for service {svc.name}.")
    now = int(time.time())
    token = secrets.token_urlsafe(32)
    svc.tokens[token] = now + TOKEN_LIFETIME_SECONDS
    return Response(
        200,
        {
            "accessToken": token,
            "tokenType": "Bearer",
            "refreshAfter": now + TOKEN_LIFETIME_SECONDS // 2,
            "expiryOn": now + TOKEN_LIFETIME_SECONDS,
        },
    )
