"""`…/workspaces/{ws}/onlineEndpoints`: create, update (traffic), get, list, delete, keys and tokens.

An endpoint's create, update and key regeneration are ARM long-running operations (lro.py); the new traffic
or key takes effect when the operation ends, as Azure's front end picks it up. Deleting an endpoint deletes
its deployments (their scoring hosts stop, their cores go back to the quota).
"""

from __future__ import annotations

import re
import time
import uuid
from typing import TYPE_CHECKING, Any

from .. import arm, catalog
from ..http import Request, Response
from ..state import new_key
from . import errors, kubernetes, lro
from .resources import OnlineEndpoint, system_data

if TYPE_CHECKING:
    from ..emulator import AzureEmulator

# Azure's rule for endpoint (and deployment) names, as azure-ai-ml states it too.
NAME_RULE = re.compile(r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")
TOKEN_LIFETIME_SECONDS = 3600
AUTH_MODES = {"key": "Key", "amltoken": "AMLToken", "aadtoken": "AADToken"}


def name_problem(name: str, what: str = "an endpoint") -> str | None:
    if not 3 <= len(name) <= 32:
        return (
            f"The name for {what} must be at least 3 and at most 32 characters long (inclusive of both "
            "limits)."
        )
    if not NAME_RULE.match(name):
        return (
            f"The name for {what} must start with an upper- or lowercase letter and only consist of '-'s and "
            "alphanumeric characters."
        )
    return None


def scoring_host(emu: AzureEmulator, name: str) -> str:
    return f"{name}.{emu.location}.inference.ml.azure.com"


def endpoint_json(emu: AzureEmulator, ep: OnlineEndpoint) -> dict[str, Any]:
    props = dict(ep.body.get("properties") or {})
    host = scoring_host(emu, ep.name)
    scoring_uri, swagger_uri = f"https://{host}/score", f"https://{host}/swagger.json"
    if ep.is_kubernetes:
        scoring_uri, swagger_uri = kubernetes.scoring_uris(emu, ep.name)
    return {
        "id": f"{emu.workspace_scope}/onlineEndpoints/{ep.name}",
        "name": ep.name,
        "type": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
        "location": ep.location,
        "tags": ep.body.get("tags") or {},
        # Unverified: the kind Azure reports for a Kubernetes endpoint the SDK sent without one.
        "kind": ep.body.get("kind") or ("K8S" if ep.is_kubernetes else "Managed"),
        "identity": {
            "type": "SystemAssigned",
            "principalId": emu.v2.identity_of(ep.name),
            "tenantId": emu.tenant_id,
        },
        "properties": {
            "authMode": AUTH_MODES.get(ep.auth_mode.lower(), ep.auth_mode),
            "description": props.get("description"),
            "properties": {
                **(props.get("properties") or {}),
                "azureml.onlineendpointid": f"{emu.workspace_scope}/onlineendpoints/{ep.name}".lower(),
                "AzureAsyncOperationUri": "",
            },
            "scoringUri": scoring_uri,
            "swaggerUri": swagger_uri,
            **({"compute": ep.compute} if ep.is_kubernetes else {}),
            "traffic": dict(ep.traffic),
            "mirrorTraffic": dict(ep.mirror_traffic),
            "publicNetworkAccess": props.get("publicNetworkAccess") or "Enabled",
            "provisioningState": ep.provisioning_state,
        },
        "systemData": system_data(ep.created, ep.modified, emu.client_id),
    }


def _traffic_problem(emu: AzureEmulator, ep_name: str, traffic: dict[str, Any]) -> Response | None:
    """Azure refuses traffic to a deployment that does not exist, or a split that is not 0 or 100 in all.
    (Unverified wordings.)"""
    deployments = emu.v2.deployments_of(ep_name)
    unknown = sorted(name for name in traffic if name not in deployments)
    if unknown:
        return errors.arm_error(
            400,
            "BadArgument",
            f"Traffic can't be routed to deployment(s) that don't exist: {', '.join(unknown)}.",
        )
    values = [int(v) for v in traffic.values()]
    if any(v < 0 or v > 100 for v in values) or sum(values) not in (0, 100):
        return errors.arm_error(
            400, "BadArgument", f"The traffic values must sum to 100 (or 0); they sum to {sum(values)}."
        )
    return None


def endpoint_put(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    if (problem := arm._check_scope(emu, m)) is not None:
        return problem
    name, body = m["name"], req.json() or {}
    existing = emu.v2.endpoints.get(name)
    if existing is None:
        return _create(emu, name, body)
    return _update(emu, existing, body)


def _create(emu: AzureEmulator, name: str, body: dict[str, Any]) -> Response:
    if (problem := name_problem(name)) is not None:
        return errors.arm_error(400, "BadArgument", problem)
    if name.lower() in emu.v2.names_taken_in_region:
        return errors.arm_error(
            400,
            "BadArgument",
            f"Endpoint name '{name}' is already taken in {emu.location}: endpoint names must be unique "
            "within "
            "an Azure region.",
        )
    props = body.get("properties") or {}
    if str(props.get("authMode") or "Key").lower() not in AUTH_MODES:
        return errors.arm_error(400, "BadArgument", f"Invalid authMode {props.get('authMode')!r}.")
    if props.get("compute") and (problem := kubernetes.compute_problem(emu, str(props["compute"]))):
        return problem
    if props.get("traffic"):
        # A new endpoint has no deployments yet, so any traffic names one that does not exist.
        if (problem := _traffic_problem(emu, name, props["traffic"])) is not None:
            return problem
    ep = OnlineEndpoint(name=name, location=body.get("location") or emu.location, body=body)
    op = lro.start(emu, "endpoint", name, action="create")
    ep.begin("Creating", op.id, emu.pace(catalog.azure_seconds("endpoint_create")))
    emu.v2.endpoints[name] = ep
    emu.record("v2_endpoint_create", name=name)
    return lro.accepted(emu, op, 201, endpoint_json(emu, ep))


def _update(emu: AzureEmulator, ep: OnlineEndpoint, body: dict[str, Any]) -> Response:
    if ep.busy:
        return errors.conflict("online endpoint", ep.name, ep.provisioning_state)
    props = body.get("properties") or {}
    traffic = props.get("traffic")
    if traffic is not None and (problem := _traffic_problem(emu, ep.name, traffic)) is not None:
        return problem
    mirror = props.get("mirrorTraffic")
    ep.pending = {
        "traffic": {k: int(v) for k, v in traffic.items()} if traffic is not None else None,
        "mirror": {k: int(v) for k, v in mirror.items()} if mirror is not None else None,
        "body": _merged(ep.body, body),
    }
    op = lro.start(emu, "endpoint", ep.name, action="update")
    ep.begin("Updating", op.id, emu.pace(catalog.azure_seconds("endpoint_update")))
    emu.record("v2_endpoint_update", name=ep.name, traffic=traffic)
    return lro.accepted(emu, op, 200, endpoint_json(emu, ep))


def _merged(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    merged = {**old, **{k: v for k, v in new.items() if k != "properties"}}
    merged["properties"] = {**(old.get("properties") or {}), **(new.get("properties") or {})}
    return merged


def endpoint_patch(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    if (problem := arm._check_scope(emu, m)) is not None:
        return problem
    ep = emu.v2.endpoints.get(m["name"])
    if ep is None:
        return errors.not_found("OnlineEndpoint", m["name"])
    return _update(emu, ep, req.json() or {})


def endpoint_get(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    if (problem := arm._check_scope(emu, m)) is not None:
        return problem
    ep = emu.v2.endpoints.get(m["name"])
    if ep is None:
        return errors.not_found("OnlineEndpoint", m["name"])
    return Response(200, endpoint_json(emu, ep))


def endpoint_list(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    if (problem := arm._check_scope(emu, m)) is not None:
        return problem
    return Response(200, {"value": [endpoint_json(emu, ep) for ep in emu.v2.endpoints.values()]})


def endpoint_delete(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    if (problem := arm._check_scope(emu, m)) is not None:
        return problem
    ep = emu.v2.endpoints.get(m["name"])
    if ep is None:
        return Response(204, None)  # ARM: deleting what is not there succeeds
    if ep.provisioning_state == "Deleting":
        return errors.conflict("online endpoint", ep.name, ep.provisioning_state)
    if ep.busy:
        # Deleting an endpoint cancels what runs on it (unverified: Azure may answer 409 instead).
        emu.v2.operations[ep.operation_id].end("Canceled", errors.canceled())
    op = lro.start(emu, "endpoint", ep.name, action="delete")
    ep.begin("Deleting", op.id, emu.pace(catalog.azure_seconds("endpoint_delete")))
    for deployment in emu.v2.deployments_of(ep.name).values():
        emu.v2.begin_deployment_delete(deployment, op.id)
    emu.record("v2_endpoint_delete", name=ep.name)
    return lro.accepted(emu, op, 202)


def _keyed(emu: AzureEmulator, m: re.Match[str]) -> OnlineEndpoint | Response:
    if (problem := arm._check_scope(emu, m)) is not None:
        return problem
    ep = emu.v2.endpoints.get(m["name"])
    if ep is None:
        return errors.not_found("OnlineEndpoint", m["name"])
    return ep


def list_keys(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    ep = _keyed(emu, m)
    if isinstance(ep, Response):
        return ep
    if ep.auth_mode.lower() != "key":
        return errors.arm_error(
            400, "BadArgument", "Keys are only available for endpoints with authMode Key."
        )
    return Response(200, {"primaryKey": ep.primary_key, "secondaryKey": ep.secondary_key})


def regenerate_keys(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    ep = _keyed(emu, m)
    if isinstance(ep, Response):
        return ep
    if ep.busy:
        return errors.conflict("online endpoint", ep.name, ep.provisioning_state)
    body = req.json() or {}
    key_type = str(body.get("keyType") or "")
    if key_type.lower() not in ("primary", "secondary"):
        return errors.arm_error(400, "BadArgument", f"Invalid keyType {key_type!r}: Primary or Secondary.")
    # azure-ai-ml's begin_regenerate_keys always sends the key's current value, and users get a new key from
    # it: so the current value means "regenerate". Another value sets the key to it (the REST spec's "the
    # value the key is set to", how a v1 service's keys are carried over). Unverified beyond that reading.
    current = ep.primary_key if key_type.lower() == "primary" else ep.secondary_key
    value = body.get("keyValue")
    ep.pending = {
        "key_type": key_type.lower(),
        "key_value": value if value and value != current else new_key(),
    }
    op = lro.start(emu, "endpoint", ep.name, action="regenerate")
    ep.begin("Updating", op.id, emu.pace(catalog.azure_seconds("endpoint_update")))
    return lro.accepted(emu, op, 202)


def get_token(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    ep = _keyed(emu, m)
    if isinstance(ep, Response):
        return ep
    if ep.auth_mode.lower() != "amltoken":
        return errors.arm_error(
            400, "BadArgument", "Tokens are only available for endpoints with authMode AMLToken."
        )
    token = uuid.uuid4().hex + uuid.uuid4().hex
    now = time.time()
    ep.tokens[token] = now + TOKEN_LIFETIME_SECONDS
    return Response(
        200,
        {
            "accessToken": token,
            "tokenType": "Bearer",
            "expiryTimeUtc": int(now + TOKEN_LIFETIME_SECONDS),
            "refreshAfterTimeUtc": int(now + TOKEN_LIFETIME_SECONDS / 2),
        },
    )


def finish_endpoint(emu: AzureEmulator, ep: OnlineEndpoint, now: float) -> None:
    """An endpoint whose operation is due: Creating/Updating → Succeeded (pending changes applied)."""
    if not ep.busy or ep.deadline > now or ep.provisioning_state == "Deleting":
        return
    pending, ep.pending = ep.pending, {}
    if pending.get("traffic") is not None:
        ep.traffic = pending["traffic"]
    if pending.get("mirror") is not None:
        ep.mirror_traffic = pending["mirror"]
    if pending.get("body") is not None:
        ep.body = pending["body"]
    if pending.get("key_type") == "primary":
        ep.primary_key = pending["key_value"]
    elif pending.get("key_type") == "secondary":
        ep.secondary_key = pending["key_value"]
    ep.provisioning_state = "Succeeded"
    op = emu.v2.operations.get(ep.operation_id)
    if op is not None:
        op.end("Succeeded")
