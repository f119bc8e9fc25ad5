"""Azure Resource Manager and the Azure ML resource provider's compute API.

Create/attach/delete go to ARM (`management.azure.com` in Azure, PUT/DELETE + Azure-AsyncOperation);
get/list go to the regional RP endpoint (`{api}/rp/workspaces/...`), exactly as azureml-core calls them.
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any

from .http import Request, Response
from .state import Compute, arm_error, iso_now

if TYPE_CHECKING:
    from .emulator import AzureEmulator

WS_SCOPE = (
    r"/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)"
    r"/providers/Microsoft\.MachineLearningServices/workspaces/(?P<ws>[^/]+)"
)


def subscriptions(emu: AzureEmulator, req: Request, _m: re.Match[str]) -> Response:
    return Response(
        200,
        {
            "value": [
                {
                    "id": f"/subscriptions/{emu.subscription_id}",
                    "authorizationSource": "RoleBased",
                    "managedByTenants": [],
                    "subscriptionId": emu.subscription_id,
                    "tenantId": emu.tenant_id,
                    "displayName": "Lynx emulator subscription",
                    "state": "Enabled",
                    "subscriptionPolicies": {
                        "locationPlacementId": "Public_2014-09-01",
                        "quotaId": "PayAsYouGo_2014-09-01",
                        "spendingLimit": "Off",
                    },
                }
            ],
            "count": {"type": "Total", "value": 1},
        },
    )


def _check_scope(emu: AzureEmulator, m: re.Match[str]) -> Response | None:
    """ARM's own 404s, in the order ARM checks them; also the emulated RBAC denial."""
    if m["sub"] != emu.subscription_id:
        return arm_error(404, "SubscriptionNotFound", f"The subscription '{m['sub']}' could not be found.")
    if emu.faults.deny_access:
        return arm_error(
            403,
            "AuthorizationFailed",
            f"The client '{emu.client_id}' with object id '{emu.principal_object_id}' does not have "
            "authorization "
            "to perform action 'Microsoft.MachineLearningServices/workspaces/read' over scope "
            f"'/subscriptions/{m['sub']}/resourceGroups/{m['rg']}/providers/Microsoft.MachineLearningServices/"
            f"workspaces/{m['ws']}' or the scope is invalid. If access was recently granted, please refresh "
            "your credentials.",
        )
    if m["rg"].lower() != emu.resource_group.lower():
        return arm_error(404, "ResourceGroupNotFound", f"Resource group '{m['rg']}' could not be found.")
    if m["ws"].lower() != emu.workspace_name.lower():
        return arm_error(
            404,
            "ResourceNotFound",
            f"The Resource 'Microsoft.MachineLearningServices/workspaces/{m['ws']}' under resource group "
            f"'{m['rg']}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
        )
    return None


def workspace(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    if (error := _check_scope(emu, m)) is not None:
        return error
    scope = emu.workspace_scope
    return Response(
        200,
        {
            "id": scope,
            "name": emu.workspace_name,
            "type": "Microsoft.MachineLearningServices/workspaces",
            "location": emu.location,
            "tags": {},
            "sku": {"name": "Basic", "tier": "Basic"},
            "identity": {
                "type": "SystemAssigned",
                "principalId": str(uuid.uuid4()),
                "tenantId": emu.tenant_id,
            },
            "properties": {
                "friendlyName": emu.workspace_name,
                "description": "",
                "workspaceId": emu.workspace_id,
                "provisioningState": "Succeeded",
                "creationTime": emu.created,
                "storageAccount": f"/subscriptions/{emu.subscription_id}/resourceGroups/{emu.resource_group}"
                f"/providers/Microsoft.Storage/storageAccounts/{emu.storage_account}",
                "containerRegistry": None,
                "keyVault": f"/subscriptions/{emu.subscription_id}/resourceGroups/{emu.resource_group}"
                "/providers/Microsoft.Keyvault/vaults/lynxemulatorkv",
                "applicationInsights": None,
                "hbiWorkspace": False,
                "allowPublicAccessWhenBehindVnet": False,
                "discoveryUrl": emu.discovery_url,
                "v1LegacyMode": False,
                "sdkTelemetryAppInsightsKey": None,
            },
        },
    )


def compute_put(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    if (error := _check_scope(emu, m)) is not None:
        return error
    name = m["name"]
    body: dict[str, Any] = req.json() or {}
    props = body.get("properties") or {}
    if props.get("computeType") != "AKS":
        return arm_error(400, "BadRequest", f"Compute type {props.get('computeType')!r} is not emulated.")
    aks = props.get("properties") or {}
    existing = emu.computes.get(name)
    attach = bool(props.get("resourceId"))
    if existing is not None and existing.provisioning_state in ("Creating", "Updating", "Deleting"):
        return arm_error(
            409,
            "Conflict",
            f"Compute '{name}' has an operation in progress ({existing.provisioning_state}); "
            "retry when it ends.",
        )
    if existing is not None and not attach and aks.get("agentVmSize") not in (None, existing.vm_size):
        return arm_error(
            400, "BadRequest", "Updating the agent VM size of an existing AKS compute is not supported."
        )
    vm_size = aks.get("agentVmSize") or "Standard_D3_v2"
    count = int(aks.get("agentCount") or (3 if aks.get("clusterPurpose", "FastProd") == "FastProd" else 1))
    if not attach and existing is None and (quota := emu.faults.take_quota(name)) is not None:
        family_cores = emu.vcpus(vm_size) * count
        location = props.get("computeLocation") or emu.location
        return arm_error(
            400,
            "QuotaExceeded",
            f"Operation could not be completed as it results in exceeding approved {quota} quota. Additional "
            f"details - Deployment Model: Resource Manager, Location: {location}, "
            f"Current Limit: 0, Current Usage: 0, Additional Required: {family_cores}, "
            "(Minimum) New Limit Required: "
            f"{family_cores}. Submit a request for Quota increase at https://aka.ms/ProdportalCRP/#blade/"
            "Microsoft_Azure_Capacity/UsageAndQuota.ReactView.",
        )
    compute = existing or Compute(
        name=name,
        location=props.get("computeLocation") or body.get("location") or emu.location,
        vm_size=vm_size,
        agent_count=count,
        cluster_purpose=aks.get("clusterPurpose") or "FastProd",
        is_attached=attach,
        resource_id=props.get("resourceId")
        or f"/subscriptions/{emu.subscription_id}/resourcegroups/{emu.resource_group}/providers/"
        f"Microsoft.ContainerService/managedClusters/{name}{uuid.uuid4().hex[:6]}",
        created_on=iso_now(),
    )
    if attach:
        known = emu.external_aks.get(props["resourceId"].lower())
        if known is None:
            return arm_error(
                400,
                "BadRequest",
                f"Could not find AKS cluster {props['resourceId']}. Check the resource ID and that the "
                "workspace "
                "identity can read it.",
            )
        compute.vm_size, compute.agent_count = known
    if existing is None and not attach:
        compute.fail_with = emu.faults.take_cluster_failure(name)
    compute.begin("Updating" if existing else "Creating", emu.cluster_create_seconds)
    emu.computes[name] = compute
    op = emu.new_operation("compute", name, emu.cluster_create_seconds)
    return Response(
        201 if existing is None else 200,
        compute_json(emu, compute),
        headers={"Azure-AsyncOperation": emu.compute_operation_url(op.id)},
    )


def compute_delete(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    if (error := _check_scope(emu, m)) is not None:
        return error
    compute = emu.computes.get(m["name"])
    if compute is None:
        return Response(204)
    action = req.query.get("underlyingResourceAction", "")
    emu.record("arm.compute_delete", name=compute.name, action=action)
    if compute.is_attached and action == "delete":
        return arm_error(
            400,
            "BadRequest",
            "Deleting an attached compute is not supported; use underlyingResourceAction=detach.",
        )
    if compute.provisioning_state == "Deleting":
        return arm_error(409, "Conflict", f"Compute '{compute.name}' is already being deleted.")
    compute.begin("Deleting", emu.delete_seconds)
    op = emu.new_operation("compute", compute.name, emu.delete_seconds)
    return Response(202, None, headers={"Azure-AsyncOperation": emu.compute_operation_url(op.id)})


def compute_operation(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    op = emu.operations.get(m["id"])
    if op is None:
        return arm_error(404, "NotFound", f"Operation {m['id']} not found.")
    status = {"Running": "InProgress"}.get(op.state, op.state)
    body: dict[str, Any] = {"status": status}
    if op.error:
        body["error"] = op.error
    return Response(200, body)


def rp_compute_get(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    if (error := _check_scope(emu, m)) is not None:
        return error
    compute = emu.computes.get(m["name"])
    if compute is None:
        return arm_error(
            404,
            "NotFound",
            f"Compute '{m['name']}' was not found in workspace '{emu.workspace_name}'.",
        )
    return Response(200, compute_json(emu, compute))


def rp_compute_list(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    if (error := _check_scope(emu, m)) is not None:
        return error
    # No "nextLink" key at all: azureml-core loops while the key is present, even when it is null.
    return Response(200, {"value": [compute_json(emu, c) for c in emu.computes.values()]})


def compute_json(emu: AzureEmulator, compute: Compute) -> dict[str, Any]:
    ready = compute.provisioning_state == "Succeeded"
    return {
        "id": f"{emu.workspace_scope}/computes/{compute.name}",
        "name": compute.name,
        "type": "Microsoft.MachineLearningServices/workspaces/computes",
        "location": compute.location,
        "tags": None,
        "properties": {
            "computeType": "AKS",
            "computeLocation": compute.location,
            "description": None,
            "createdOn": compute.created_on,
            "modifiedOn": compute.modified_on or compute.created_on,
            "resourceId": compute.resource_id,
            "provisioningErrors": compute.errors or None,
            "provisioningState": compute.provisioning_state,
            "isAttachedCompute": compute.is_attached,
            "disableLocalAuth": False,
            "properties": {
                "clusterFqdn": f"{compute.name}-dns-{emu.workspace_id[:8]}.hcp.{compute.location}.azmk8s.io"
                if ready
                else None,
                "systemServices": [
                    {"systemServiceType": "ScoringFrontEnd", "publicIpAddress": "127.0.0.1", "version": "1.0"}
                ]
                if ready
                else None,
                "agentCount": compute.agent_count,
                "agentVmSize": compute.vm_size,
                "clusterPurpose": compute.cluster_purpose,
                "sslConfiguration": {
                    "status": "Disabled",
                    "cert": None,
                    "key": None,
                    "cname": None,
                    "leafDomainLabel": None,
                    "overwriteExistingDomain": False,
                },
                "aksNetworkingConfiguration": None,
                "loadBalancerType": "PublicIp",
                "loadBalancerSubnet": None,
            },
        },
    }
