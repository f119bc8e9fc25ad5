"""`…/onlineEndpoints/{e}/deployments`: create/update (with Azure's SKU and quota checks), get, list, delete,
getLogs, skus.

A PUT is refused at once, as Azure's inferencing service refuses it, for an instance type managed endpoints
do not offer (catalog.MANAGED_ONLINE_SKUS), one that is retired (catalog.VM_SIZES), or cores beyond the
family's quota (ceil(1.2 × instances) × cores unless the SKU skips the reservation). Accepted, it runs as
rollout.py says. 409 while the deployment, or its endpoint, has an operation in progress.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Any

from .. import arm, catalog
from ..http import Request, Response
from . import errors, kubernetes, lro, rollout
from .endpoints import name_problem
from .resources import OnlineDeployment, system_data

if TYPE_CHECKING:
    from ..emulator import AzureEmulator

DEPLOYMENT_TYPE = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments"
LOG_CONTAINERS = {"inferenceserver": "InferenceServer", "storageinitializer": "StorageInitializer"}


def deployment_json(emu: AzureEmulator, d: OnlineDeployment) -> dict[str, Any]:
    props = d.properties
    sku = dict(d.body.get("sku") or {"name": "Default", "capacity": d.instance_count})
    return {
        "id": f"{emu.workspace_scope}/onlineEndpoints/{d.endpoint}/deployments/{d.name}",
        "name": d.name,
        "type": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments",
        "location": d.location,
        "tags": d.body.get("tags") or {},
        "kind": d.body.get("kind") or ("Kubernetes" if d.is_kubernetes else "Managed"),
        "sku": sku,
        "properties": {
            **props,
            "endpointComputeType": props.get("endpointComputeType") or "Managed",
            "scaleSettings": props.get("scaleSettings") or {"scaleType": "Default"},
            "requestSettings": {**rollout.DEFAULT_REQUEST_SETTINGS, **(props.get("requestSettings") or {})},
            "livenessProbe": {**rollout.DEFAULT_PROBE, **(props.get("livenessProbe") or {})},
            "readinessProbe": {**rollout.DEFAULT_PROBE, **(props.get("readinessProbe") or {})},
            # azure-ai-ml reads it on every Kubernetes deployment; without a resources section, nulls
            # (unverified: Azure may report the instance type's values).
            **({"containerResourceRequirements": _container_resources(props)} if d.is_kubernetes else {}),
            "provisioningState": d.provisioning_state,
            **({"error": d.error} if d.error else {}),
        },
        "systemData": system_data(d.created, d.modified, emu.client_id),
    }


def _container_resources(props: dict[str, Any]) -> dict[str, Any]:
    sent = props.get("containerResourceRequirements") or {}
    empty = {"cpu": None, "memory": None, "gpu": None}
    return {
        "containerResourceRequests": {**empty, **(sent.get("containerResourceRequests") or {})},
        "containerResourceLimits": {**empty, **(sent.get("containerResourceLimits") or {})},
    }


def _today(emu: AzureEmulator) -> dt.date:
    return emu.today or dt.date.today()


def sku_problem(
    emu: AzureEmulator, instance_type: str, count: int, replacing: OnlineDeployment | None
) -> Response | None:
    """Azure's refusal of an instance type × count, or None when it fits."""
    sku = catalog.managed_sku(instance_type)
    size = catalog.vm_size(instance_type)
    if sku is not None and size is not None and size.retired_on is not None and size.is_retired(_today(emu)):
        return errors.retired_sku(sku.name, size.retired_on.isoformat())
    if sku is None:
        today = _today(emu)
        supported = sorted(
            s.name
            for s in catalog.MANAGED_ONLINE_SKUS.values()
            if not ((v := catalog.vm_size(s.name)) and v.is_retired(today))
        )
        return errors.unsupported_sku(instance_type, supported)
    needed = catalog.managed_cores_needed(sku, count)
    used = emu.v2.cores_in_use(sku.family, excluding=replacing)
    limit = emu.v2.quota_limit(sku.family)
    if used + needed > limit:
        return errors.out_of_quota(sku.name, emu.subscription_id, used, limit, needed)
    return None


def _endpoint_or_problem(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response | None:
    if (problem := arm._check_scope(emu, m)) is not None:
        return problem
    if m["name"] not in emu.v2.endpoints:
        return errors.not_found("OnlineEndpoint", m["name"])
    return None


def _compute_type_problem(
    emu: AzureEmulator, ep: Any, body: dict[str, Any], existing: OnlineDeployment | None
) -> Response | None:
    """Managed deployments on managed endpoints (SKU and quota checks), Kubernetes ones on Kubernetes
    endpoints (kubernetes.deployment_problem). The cross-type refusals' wordings are unverified."""
    props = body.get("properties") or {}
    compute_type = str(props.get("endpointComputeType") or "Managed")
    if ep.is_kubernetes:
        if compute_type != "Kubernetes":
            return errors.arm_error(
                400,
                "BadArgument",
                "Only Kubernetes deployments can be created on a Kubernetes online endpoint.",
            )
        return kubernetes.deployment_problem(emu, ep, body)
    if compute_type != "Managed":
        return errors.arm_error(
            400, "BadArgument", "Only Managed deployments can be created on a managed online endpoint."
        )
    count = int((body.get("sku") or {}).get("capacity") or 1)
    return sku_problem(emu, str(props.get("instanceType") or ""), count, existing)


def deployment_put(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    if (problem := _endpoint_or_problem(emu, req, m)) is not None:
        return problem
    ep = emu.v2.endpoints[m["name"]]
    name, body = m["deployment"], req.json() or {}
    if ep.provisioning_state in ("Creating", "Deleting"):
        return errors.conflict("online endpoint", ep.name, ep.provisioning_state)
    existing = emu.v2.deployments.get((ep.name, name))
    if existing is not None and existing.busy:
        return errors.conflict("online deployment", name, existing.provisioning_state)
    if existing is None and (problem := name_problem(name, "a deployment")) is not None:
        return errors.arm_error(400, "BadArgument", problem)
    props = body.get("properties") or {}
    if (problem := _compute_type_problem(emu, ep, body, existing)) is not None:
        return problem
    if ep.is_kubernetes:
        # Azure reports the instance type a deployment without one runs on: the compute's default.
        props = {**props, "instanceType": kubernetes.instance_type_of(emu, ep, body)}
        body = {**body, "properties": props}
    op = lro.start(emu, "deployment", ep.name, name, action="create" if existing is None else "update")
    if existing is None:
        deployment = OnlineDeployment(
            endpoint=ep.name, name=name, location=body.get("location") or emu.location, body=body
        )
        emu.v2.deployments[(ep.name, name)] = deployment
        ep.traffic.setdefault(name, 0)  # Azure lists a new deployment in the endpoint's traffic, at 0 %
        rollout.begin(emu, deployment, op.id, "Creating", needs_host=True)
        status = 201
    else:
        deployment = existing
        needs_host = rollout.revision_changes(existing.body, body) or existing.host is None
        deployment.body = body
        rollout.begin(emu, deployment, op.id, "Updating", needs_host=needs_host)
        status = 200
    emu.record("v2_deployment_put", endpoint=ep.name, name=name, instance_type=props.get("instanceType"))
    return lro.accepted(emu, op, status, deployment_json(emu, deployment))


def deployment_patch(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    """Tags and scale (sku.capacity) only: a scale change rolls out without a new revision."""
    if (problem := _endpoint_or_problem(emu, req, m)) is not None:
        return problem
    deployment = emu.v2.deployments.get((m["name"], m["deployment"]))
    if deployment is None:
        return errors.not_found("OnlineDeployment", m["deployment"])
    if deployment.busy:
        return errors.conflict("online deployment", deployment.name, deployment.provisioning_state)
    patch = req.json() or {}
    body = {**deployment.body, **{k: v for k, v in patch.items() if k in ("tags", "sku")}}
    ep = emu.v2.endpoints[m["name"]]
    if (problem := _compute_type_problem(emu, ep, body, deployment)) is not None:
        return problem
    deployment.body = body
    op = lro.start(emu, "deployment", deployment.endpoint, deployment.name, action="update")
    rollout.begin(emu, deployment, op.id, "Updating", needs_host=deployment.host is None)
    return lro.accepted(emu, op, 202, deployment_json(emu, deployment))


def deployment_get(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    if (problem := _endpoint_or_problem(emu, req, m)) is not None:
        return problem
    deployment = emu.v2.deployments.get((m["name"], m["deployment"]))
    if deployment is None:
        return errors.not_found("OnlineDeployment", m["deployment"])
    return Response(200, deployment_json(emu, deployment))


def deployment_list(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    if (problem := _endpoint_or_problem(emu, req, m)) is not None:
        return problem
    found = emu.v2.deployments_of(m["name"]).values()
    return Response(200, {"value": [deployment_json(emu, d) for d in found]})


def deployment_delete(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    if (problem := arm._check_scope(emu, m)) is not None:
        return problem
    ep = emu.v2.endpoints.get(m["name"])
    deployment = emu.v2.deployments.get((m["name"], m["deployment"]))
    if ep is None or deployment is None:
        return Response(204, None)
    if deployment.provisioning_state == "Deleting":
        return errors.conflict("online deployment", deployment.name, deployment.provisioning_state)
    if ep.traffic.get(deployment.name, 0) > 0:
        # Unverified wording: Azure refuses to delete a deployment that still takes traffic.
        return errors.arm_error(
            400,
            "BadArgument",
            f"Deployment {deployment.name} has {ep.traffic[deployment.name]}% of endpoint {ep.name}'s "
            "traffic. "
            "Set its traffic to 0 before deleting it.",
        )
    op = lro.start(emu, "deployment", ep.name, deployment.name, action="delete")
    rollout.begin_delete(deployment, op.id)
    deployment.deadline = 0.0
    return lro.accepted(emu, op, 202)


def get_logs(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    if (problem := _endpoint_or_problem(emu, req, m)) is not None:
        return problem
    deployment = emu.v2.deployments.get((m["name"], m["deployment"]))
    if deployment is None:
        return errors.not_found("OnlineDeployment", m["deployment"])
    body = req.json() or {}
    container = str(body.get("containerType") or "InferenceServer").lower().replace("-", "").replace("_", "")
    if container not in LOG_CONTAINERS:
        return errors.arm_error(400, "BadArgument", f"Invalid containerType {body.get('containerType')!r}.")
    lines = rollout.log_lines(deployment, LOG_CONTAINERS[container])
    tail = body.get("tail")
    if tail:
        lines = lines[-int(tail) :]
    return Response(200, {"content": "\n".join(lines) + ("\n" if lines else "")})


def skus(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    if (problem := _endpoint_or_problem(emu, req, m)) is not None:
        return problem
    return Response(
        200,
        {
            "value": [
                {
                    "resourceType": DEPLOYMENT_TYPE,
                    "sku": {"name": "Default", "tier": "Standard"},
                    "capacity": {"minimum": 1, "maximum": 20, "default": 1, "scaleType": "Manual"},
                }
            ]
        },
    )
