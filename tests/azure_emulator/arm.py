"""Azure Resource Manager and the Azure ML resource provider's compute API.

Create/attach/delete go to ARM (`management.azure.com` in Azure, PUT/DELETE + Azure-AsyncOperation);
get/list go to the regional RP endpoint (`{api}/rp/workspaces/...`), exactly as azureml-core calls them.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import string
import uuid
from typing import TYPE_CHECKING, Any

from . import catalog
from .http import Request, Response
from .state import Compute, SslConfiguration, arm_error, iso_now

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


# --- compute rules (what the RP refuses before it starts anything) ------------------------------------

# Azure ML's compute-name rule. The wording is the RP's as users quote it
# (aztfmod/terraform-provider-azurecaf#78, 2021; MicrosoftDocs/azure-docs#55961 quotes the older
# "2 and 16" variant on a 400 to an AKS attach); no Microsoft page publishes the message itself.
COMPUTE_NAME_RULE = re.compile(r"[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]")
COMPUTE_NAME_MESSAGE = (
    "Compute name is invalid. It can include letters, digits and dashes. It must start with a letter, "
    "end with a letter or digit, and be between 3 and 24 characters in length."
)
FAST_PROD_MIN_VCPUS, FAST_PROD_MIN_NODES = 12, 3


# And a name may not end in a hyphen followed by digits (`gpu-1`, reference 1.7). Azure's words for it are
# those of its compute instance refusal (MicrosoftDocs/pipelines-azureml#19, "cpu-cluster-1"); that AKS
# computes get the same sentence is unverified.
HYPHEN_DIGITS_END = re.compile(r"-[0-9]+$")
HYPHEN_DIGITS_MESSAGE = (
    "Numbers cannot be the ending of the name if the previous character is a minus symbol (-)."
)


def _refuse_name(name: str) -> Response | None:
    if not COMPUTE_NAME_RULE.fullmatch(name):
        return arm_error(400, "BadRequest", COMPUTE_NAME_MESSAGE)
    if HYPHEN_DIGITS_END.search(name):
        return arm_error(400, "BadRequest", f"{COMPUTE_NAME_MESSAGE} {HYPHEN_DIGITS_MESSAGE}")
    return None


def _refuse_vm_size(emu: AzureEmulator, vm_size: str, location: str) -> Response | None:
    """AKS's VMSizeNotSupported for a size Azure does not offer (never did, or retired)."""
    size = catalog.vm_size(vm_size)
    today = emu.today or dt.date.today()
    # AKS's wording (as quoted in rancher/rancher#33885); the retirement sentence is the NC-series notice's.
    refusal = (
        f"Virtual Machine size: '{vm_size}' is not supported for subscription {emu.subscription_id} "
        f"in location '{location}'."
    )
    if size is None:
        available = ",".join(name.lower() for name in catalog.deployable_size_names(today))
        return arm_error(400, "VMSizeNotSupported", f"{refusal} The available VM sizes are '{available}'.")
    if size.is_retired(today):
        assert size.retired_on is not None
        return arm_error(
            400,
            "VMSizeNotSupported",
            f"{refusal} {size.name} ({size.gpu_kind or 'CPU'}) was retired on "
            f"{size.retired_on.isoformat()}: it is no longer available and can't be provisioned.",
        )
    return None


def _refuse_purpose(purpose: str, vm_size: str, node_count: int) -> Response | None:
    """FastProd (the default) needs ≥ 12 vCPUs in all and ≥ 3 nodes; DevTest needs ≥ 1 node."""
    size = catalog.vm_size(vm_size)
    vcpus = (size.vcpus if size else 0) * node_count
    if purpose == "DevTest":
        if node_count >= 1:
            return None
        return arm_error(400, "BadRequest", "A DevTest cluster needs at least 1 node (agent count).")
    if purpose != "FastProd":
        return arm_error(
            400,
            "BadRequest",
            f"Invalid cluster purpose '{purpose}'. Valid values are 'FastProd' and 'DevTest'.",
        )
    if vcpus >= FAST_PROD_MIN_VCPUS and node_count >= FAST_PROD_MIN_NODES:
        return None
    # The first sentence is Azure ML studio's (MicrosoftLearning/DP100#43); the rest says which rule failed.
    return arm_error(
        400,
        "BadRequest",
        "The number of nodes multiplied by the virtual machine's number of cores (vCPUs) must be greater "
        f"than or equal to {FAST_PROD_MIN_VCPUS}, and a FastProd cluster needs at least "
        f"{FAST_PROD_MIN_NODES} nodes: "
        f"{node_count} × {vm_size} gives {vcpus} vCPUs. If your cluster has less than 12 virtual CPUs, you "
        "will need to specify 'DevTest' as the cluster purpose.",
    )


def _quota_error(emu: AzureEmulator, quota: str, vm_size: str, count: int, location: str) -> Response:
    family_cores = emu.vcpus(vm_size) * count
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


# --- TLS on the scoring front end ---------------------------------------------------------------------


def _leaf_fqdn(label: str, location: str) -> str:
    suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(3))
    return f"{label}{suffix}.{location}.cloudapp.azure.com"


def _public_key_der(public_key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def own_certificate_error(cert_pem: str, key_pem: str) -> str:
    """Why Azure would refuse an own certificate and key ("" when it takes them): either one that does not
    parse, or a key that is not the certificate's. Azure's exact words for these are unverified (no source
    or probe shows them); the emulator answers 400 BadRequest with its own."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        certificate = x509.load_pem_x509_certificate(cert_pem.encode())
    except ValueError:
        return "The SSL certificate could not be parsed as a PEM X.509 certificate."
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError):
        return "The SSL key could not be parsed as an unencrypted PEM private key."
    except Exception:  # cryptography's UnsupportedAlgorithm: a key type nothing serves with
        return "The SSL key could not be parsed as an unencrypted PEM private key."
    if _public_key_der(key.public_key()) != _public_key_der(certificate.public_key()):
        return "The SSL key does not match the SSL certificate's public key."
    return ""


def _apply_ssl(compute: Compute, ssl: dict[str, Any]) -> Response | None:
    """Take an `sslConfiguration` from a create, attach or update PUT; an error if Azure would refuse it."""
    if ssl.get("renew"):
        if compute.ssl.status != "Auto" or not compute.ssl.leaf_domain_label:
            return arm_error(
                400,
                "BadRequest",
                "Invalid configuration. When renew is set the cluster should have the leaf domain label set "
                "for SSL.",
            )
        compute.ssl.renewals += 1  # the same name, a fresh certificate, during the Updating that follows
        return None
    status = ssl.get("status")
    if status == "Disabled":
        compute.ssl = SslConfiguration()
    elif status == "Enabled":
        if not (ssl.get("cname") and ssl.get("cert") and ssl.get("key")):
            return arm_error(
                400, "BadRequest", "SSL status Enabled needs cname, cert and key (a certificate of your own)."
            )
        if message := own_certificate_error(ssl["cert"], ssl["key"]):
            return arm_error(400, "BadRequest", message)
        compute.ssl = SslConfiguration("Enabled", ssl["cert"], ssl["key"], ssl["cname"])
    elif status == "Auto":
        label = ssl.get("leafDomainLabel")
        if not label:
            return arm_error(400, "BadRequest", "SSL status Auto needs a leafDomainLabel.")
        overwrite = bool(ssl.get("overwriteExistingDomain"))
        keep = compute.ssl.status == "Auto" and compute.ssl.leaf_domain_label == label and not overwrite
        fqdn = compute.ssl.fqdn if keep else _leaf_fqdn(label, compute.location)
        compute.ssl = SslConfiguration(
            "Auto", leaf_domain_label=label, overwrite_existing_domain=overwrite, fqdn=fqdn
        )
    else:
        return arm_error(
            400,
            "BadRequest",
            f"Invalid SSL status '{status}'. Valid values are 'Enabled', 'Auto' and 'Disabled'.",
        )
    return None


# --- compute create / attach / update / delete ----------------------------------------------------------


def compute_put(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    """PUT a compute: create (AKS), attach (AKS with a resourceId), or update one that exists (the SDK's
    `AksCompute.update` GETs the compute and PUTs it back whole, resourceId included)."""
    if (error := _check_scope(emu, m)) is not None:
        return error
    name = m["name"]
    body: dict[str, Any] = req.json() or {}
    props = body.get("properties") or {}
    existing = emu.computes.get(name)
    if existing is not None:
        return _compute_update(emu, existing, props)
    if (error := _refuse_name(name)) is not None:
        return error
    if props.get("computeType") == "Kubernetes":
        # v2's KubernetesCompute: an attach of a cluster with the AzureML extension.
        from .v2 import kubernetes

        attached = kubernetes.attach(emu, name, props)
        if isinstance(attached, Response):
            return attached
        emu.record("arm.kubernetes_attach", name=name, resource_id=attached.resource_id)
        return _begin(emu, attached, "Creating", emu.attach_seconds, status=201)
    if props.get("computeType") != "AKS":
        return arm_error(400, "BadRequest", f"Compute type {props.get('computeType')!r} is not emulated.")
    if props.get("resourceId"):
        return _compute_attach(emu, name, props)
    return _compute_create(emu, name, body, props)


def _compute_create(emu: AzureEmulator, name: str, body: dict[str, Any], props: dict[str, Any]) -> Response:
    aks = props.get("properties") or {}
    purpose = aks.get("clusterPurpose") or "FastProd"
    vm_size = aks.get("agentVmSize") or "Standard_D3_v2"  # the SDK's documented defaults: 3 × D3_v2
    count = int(aks.get("agentCount") or (3 if purpose == "FastProd" else 1))
    location = props.get("computeLocation") or body.get("location") or emu.location
    for refusal in (_refuse_vm_size(emu, vm_size, location), _refuse_purpose(purpose, vm_size, count)):
        if refusal is not None:
            return refusal
    if (quota := emu.faults.take_quota(name)) is not None:
        return _quota_error(emu, quota, vm_size, count, location)
    compute = Compute(
        name=name,
        location=location,
        vm_size=_canonical_size_name(vm_size),
        agent_count=count,
        cluster_purpose=purpose,
        is_attached=False,
        resource_id=f"/subscriptions/{emu.subscription_id}/resourcegroups/{emu.resource_group}/providers/"
        f"Microsoft.ContainerService/managedClusters/{name}{uuid.uuid4().hex[:6]}",
        created_on=iso_now(),
        kubernetes_version=emu.default_kubernetes_version,
    )
    if (error := _ssl_from(compute, aks)) is not None:
        return error
    compute.fail_with = emu.faults.take_cluster_failure(name)
    return _begin(emu, compute, "Creating", emu.cluster_create_seconds, status=201)


def _canonical_size_name(vm_size: str) -> str:
    """Azure's own spelling of a size given in any case (the RP matches names case-insensitively)."""
    size = catalog.vm_size(vm_size)
    return size.name if size else vm_size


def _compute_attach(emu: AzureEmulator, name: str, props: dict[str, Any]) -> Response:
    aks = props.get("properties") or {}
    known = emu.external_aks.get(props["resourceId"].lower())
    if known is None:
        return arm_error(
            400,
            "BadRequest",
            f"Could not find AKS cluster {props['resourceId']}. Check the resource ID and that the workspace "
            "identity can read it.",
        )
    purpose = aks.get("clusterPurpose") or "FastProd"
    if (refusal := _refuse_purpose(purpose, known.vm_size, known.agent_count)) is not None:
        return refusal
    compute = Compute(
        name=name,
        location=known.location,
        vm_size=known.vm_size,
        agent_count=known.agent_count,
        cluster_purpose=purpose,
        is_attached=True,
        resource_id=props["resourceId"],
        created_on=iso_now(),
        kubernetes_version=known.kubernetes_version,
    )
    if (error := _ssl_from(compute, aks)) is not None:
        return error
    return _begin(emu, compute, "Creating", emu.attach_seconds, status=201)


def _compute_update(emu: AzureEmulator, compute: Compute, props: dict[str, Any]) -> Response:
    if props.get("computeType") != compute.compute_type:
        # Unverified shape; the sentence is the RP's for a name already in use (microsoft/MCW-ML-Ops#28).
        return arm_error(
            409,
            "Conflict",
            f"Compute with this name already exists. Compute '{compute.name}' is of type "
            f"{compute.compute_type}, not {props.get('computeType')}; compute names must be unique in the "
            "workspace.",
        )
    if compute.busy:
        return arm_error(
            409,
            "Conflict",
            f"Compute '{compute.name}' has an operation in progress ({compute.provisioning_state}); "
            "retry when it ends.",
        )
    if compute.compute_type != "AKS":
        return arm_error(400, "BadRequest", f"Updating a {compute.compute_type} compute is not emulated.")
    aks = props.get("properties") or {}
    if aks.get("agentVmSize") not in (None, compute.vm_size):
        return arm_error(
            400, "BadRequest", "Updating the agent VM size of an existing AKS compute is not supported."
        )
    if (error := _ssl_from(compute, aks)) is not None:
        return error
    emu.record("arm.compute_update", name=compute.name, ssl=compute.ssl.status, renewals=compute.ssl.renewals)
    return _begin(emu, compute, "Updating", emu.compute_update_seconds, status=200)


def _ssl_from(compute: Compute, aks: dict[str, Any]) -> Response | None:
    ssl = aks.get("sslConfiguration")
    return _apply_ssl(compute, ssl) if isinstance(ssl, dict) else None


def _begin(emu: AzureEmulator, compute: Compute, state: str, seconds: float, *, status: int) -> Response:
    compute.begin(state, seconds)
    emu.computes[compute.name] = compute
    op = emu.new_operation("compute", compute.name, seconds)
    compute.operation_id = op.id
    return Response(status, compute_json(emu, compute), headers=_operation_headers(emu, op.id))


def _operation_headers(emu: AzureEmulator, op_id: str) -> dict[str, str]:
    """Azure-AsyncOperation, and the pace azure-core's poller waits between polls (without Retry-After it
    waits 30 s, whatever the time scale); azureml-core polls its own way and ignores it."""
    from .v2 import lro

    return {"Azure-AsyncOperation": emu.compute_operation_url(op_id), **lro.retry_after(emu)}


def compute_delete(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    if (error := _check_scope(emu, m)) is not None:
        return error
    compute = emu.computes.get(m["name"])
    if compute is None:
        return Response(204)
    # azureml-core sends "detach"/"delete", azure-ai-ml "Detach"/"Delete".
    action = req.query.get("underlyingResourceAction", "").lower()
    emu.record("arm.compute_delete", name=compute.name, action=action)
    if compute.is_attached and action == "delete":
        return arm_error(
            400,
            "BadRequest",
            "Deleting an attached compute is not supported; use underlyingResourceAction=detach.",
        )
    if compute.provisioning_state == "Deleting":
        return arm_error(409, "Conflict", f"Compute '{compute.name}' is already being deleted.")
    if compute.provisioning_state == "Creating":
        # Deleting a compute still being created cancels the creation, then deletes what was made.
        emu.settle_compute_operation(
            compute, "Canceled", {"code": "OperationCanceled", "message": "The operation was canceled."}
        )
    compute.begin("Deleting", emu.delete_seconds)
    op = emu.new_operation("compute", compute.name, emu.delete_seconds)
    compute.operation_id = op.id
    return Response(202, None, headers=_operation_headers(emu, op.id))


def compute_operation(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    op = emu.operations.get(m["id"])
    if op is None:
        return arm_error(404, "NotFound", f"Operation {m['id']} not found.")
    status = {"Running": "InProgress"}.get(op.state, op.state)
    body: dict[str, Any] = {"status": status}
    if op.error:
        body["error"] = op.error
    from .v2 import lro  # azure-core's poller reads the pace from each status answer

    return Response(200, body, headers=lro.retry_after(emu) if status == "InProgress" else {})


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


# --- the AKS resource itself (Microsoft.ContainerService, on ARM) --------------------------------------

MANAGED_CLUSTER = (
    r"/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)"
    r"/providers/Microsoft\.ContainerService/managedClusters/(?P<name>[^/]+)"
)


def managed_cluster_get(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    """ARM's GET of an AKS cluster: one Azure ML created (while its compute exists) or one made in AKS."""
    resource_id = req.path.rstrip("/").lower()
    cluster = _managed_cluster(emu, resource_id)
    if cluster is None:
        return arm_error(
            404,
            "ResourceNotFound",
            f"The Resource 'Microsoft.ContainerService/managedClusters/{m['name']}' under resource group "
            f"'{m['rg']}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
        )
    return Response(200, cluster)


def _managed_cluster(emu: AzureEmulator, resource_id: str) -> dict[str, Any] | None:
    for compute in emu.computes.values():
        if (
            compute.compute_type == "AKS"
            and not compute.is_attached
            and (compute.resource_id or "").lower() == resource_id
        ):
            state = {"Creating": "Creating", "Deleting": "Deleting"}.get(
                compute.provisioning_state, "Succeeded"
            )
            return _managed_cluster_json(
                compute.resource_id or resource_id,
                compute.location,
                compute.vm_size,
                compute.agent_count,
                compute.kubernetes_version or emu.default_kubernetes_version,
                "standard",
                state,
            )
    known = emu.external_aks.get(resource_id)
    if known is None:
        return None
    return _managed_cluster_json(
        known.resource_id,
        known.location,
        known.vm_size,
        known.agent_count,
        known.kubernetes_version,
        known.load_balancer_sku,
        "Succeeded",
    )


def _stable_suffix(resource_id: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, resource_id).hex[:8]


def _managed_cluster_json(
    resource_id: str, location: str, vm_size: str, count: int, version: str, lb_sku: str, state: str
) -> dict[str, Any]:
    name = resource_id.rstrip("/").rsplit("/", 1)[-1]
    resource_group = resource_id.split("/")[4]
    return {
        "id": resource_id,
        "location": location,
        "name": name,
        "type": "Microsoft.ContainerService/ManagedClusters",
        "properties": {
            "provisioningState": state,
            "powerState": {"code": "Running"},
            "kubernetesVersion": version,
            "currentKubernetesVersion": version,
            "dnsPrefix": f"{name}-dns",
            "fqdn": f"{name}-dns-{_stable_suffix(resource_id)}.hcp.{location}.azmk8s.io",
            "agentPoolProfiles": [
                {
                    "name": "agentpool",
                    "count": count,
                    "vmSize": vm_size,
                    "osType": "Linux",
                    "mode": "System",
                    "type": "VirtualMachineScaleSets",
                    "orchestratorVersion": version,
                    "currentOrchestratorVersion": version,
                    "provisioningState": state,
                    "powerState": {"code": "Running"},
                }
            ],
            "nodeResourceGroup": f"MC_{resource_group}_{name}_{location}",
            "networkProfile": {
                "networkPlugin": "kubenet",
                "loadBalancerSku": lb_sku,
                "outboundType": "loadBalancer",
            },
        },
    }


# (method, path, handler) on the TLS listener, authenticated; added to the route table by AzureEmulator.
EXTRA_ROUTES = [("GET", MANAGED_CLUSTER, managed_cluster_get)]


# --- the compute JSON, per compute type, as the RP answers GET and list -------------------------------


def compute_json(emu: AzureEmulator, compute: Compute) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "computeType": compute.compute_type,
        "computeLocation": compute.location,
        "description": None,
        "createdOn": compute.created_on,
        "modifiedOn": compute.modified_on or compute.created_on,
        "resourceId": compute.resource_id,
        "provisioningErrors": compute.errors or None,
        "provisioningState": compute.provisioning_state,
        "isAttachedCompute": compute.is_attached,
        "disableLocalAuth": compute.compute_type != "AKS",
        "properties": None
        if compute.properties_null
        else _TYPE_PROPERTIES[compute.compute_type](emu, compute),
    }
    return {
        "id": f"{emu.workspace_scope}/computes/{compute.name}",
        "name": compute.name,
        "type": "Microsoft.MachineLearningServices/workspaces/computes",
        "location": compute.location,
        "tags": None,
        "properties": properties,
    }


def _aks_properties(emu: AzureEmulator, compute: Compute) -> dict[str, Any]:
    ready = compute.provisioning_state in ("Succeeded", "Updating")
    return {
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
        "sslConfiguration": compute.ssl.json(),
        "aksNetworkingConfiguration": None,
        "loadBalancerType": "PublicIp",
        "loadBalancerSubnet": None,
    }


def _aml_compute_properties(emu: AzureEmulator, compute: Compute) -> dict[str, Any]:
    return {
        "osType": "Linux",
        "vmSize": compute.vm_size,
        "vmPriority": "Dedicated",
        "virtualMachineImage": None,
        "isolatedNetwork": False,
        "subnet": None,
        "scaleSettings": {
            "maxNodeCount": compute.agent_count,
            "minNodeCount": 0,
            "nodeIdleTimeBeforeScaleDown": "PT120S",
        },
        "remoteLoginPortPublicAccess": "NotSpecified",
        "allocationState": "Steady",
        "allocationStateTransitionTime": compute.modified_on or compute.created_on,
        "errors": None,
        "currentNodeCount": 0,
        "targetNodeCount": 0,
        "nodeStateCounts": {
            "preparingNodeCount": 0,
            "runningNodeCount": 0,
            "idleNodeCount": 0,
            "unusableNodeCount": 0,
            "leavingNodeCount": 0,
            "preemptedNodeCount": 0,
        },
        "enableNodePublicIp": True,
        "propertyBag": None,
    }


def _compute_instance_properties(emu: AzureEmulator, compute: Compute) -> dict[str, Any]:
    # A compute instance is one VM: vmSize but no agentCount, and no scale settings.
    return {
        "vmSize": compute.vm_size,
        "subnet": None,
        "applicationSharingPolicy": "Personal",
        "sshSettings": {
            "sshPublicAccess": "Disabled",
            "adminUserName": "azureuser",
            "sshPort": 4001,
            "adminPublicKey": None,
        },
        "connectivityEndpoints": {"publicIpAddress": "20.0.0.4", "privateIpAddress": "10.0.0.4"},
        "applications": [
            {
                "displayName": "Jupyter",
                "endpointUri": f"https://{compute.name}.{compute.location}.instances.azureml.ms/tree/",
            }
        ],
        "createdBy": {
            "userName": "someone@example.com",
            "userOrgId": emu.tenant_id,
            "userId": str(uuid.uuid4()),
        },
        "errors": None,
        "state": "Running",
        "computeInstanceAuthorizationType": "personal",
        "personalComputeInstanceSettings": {
            "assignedUser": {"objectId": str(uuid.uuid4()), "tenantId": emu.tenant_id}
        },
        "setupScripts": None,
        "lastOperation": None,
        "schedules": None,
        "enableNodePublicIp": True,
        "containers": None,
        "dataDisks": None,
        "dataMounts": None,
        "versions": None,
    }


def _kubernetes_properties(emu: AzureEmulator, compute: Compute) -> dict[str, Any]:
    # An AKS/Arc cluster attached with the AzureML extension (v2's KubernetesCompute), as the RP's example
    # shows; an attached cluster's own namespace, default instance type and instance types (its CRDs).
    if compute.instance_types is not None:
        return {
            "relayConnectionString": None,
            "serviceBusConnectionString": None,
            "extensionPrincipalId": None,
            "extensionInstanceReleaseTrain": "stable",
            "vcName": None,
            "namespace": compute.namespace,
            "defaultInstanceType": compute.default_instance_type,
            "instanceTypes": dict(compute.instance_types),
        }
    return {
        "relayConnectionString": None,
        "serviceBusConnectionString": None,
        "extensionPrincipalId": None,
        "extensionInstanceReleaseTrain": "stable",
        "vcName": None,
        "namespace": "default",
        "defaultInstanceType": "defaultinstancetype",
        "instanceTypes": {
            "defaultinstancetype": {
                "nodeSelector": None,
                "resources": {
                    "requests": {"cpu": "100m", "memory": "2Gi", "nvidia.com/gpu": None},
                    "limits": {"cpu": "2", "memory": "2Gi", "nvidia.com/gpu": None},
                },
            }
        },
    }


_TYPE_PROPERTIES = {
    "AKS": _aks_properties,
    "AmlCompute": _aml_compute_properties,
    "ComputeInstance": _compute_instance_properties,
    "Kubernetes": _kubernetes_properties,
}
