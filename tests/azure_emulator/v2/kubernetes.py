"""Azure ML v2 on Kubernetes: AKS clusters with (or without) the AzureML extension, attached as
`KubernetesCompute`, and Kubernetes online endpoints and deployments on them.

* A cluster (`KubernetesCluster`, made by the control API: AKS is not Azure ML's to create) has a node pool
  (`catalog.VM_SIZES`), and, with the extension (`Microsoft.AzureML.Kubernetes`), instance types: the
  extension's `amlarc.azureml.com/v1alpha1 InstanceType` CRDs. `defaultinstancetype` always exists (requests
  100m CPU / 2Gi, limits 2 CPU / 2Gi, no GPU: azure-ai-docs `how-to-manage-kubernetes-instance-types`,
  2025-07-23; an InstanceType of that name overrides it). A CRD is validated as that page's table says:
  CPU and memory requests and limits required and non-zero, `nvidia.com/gpu` an integer, in limits only.
* Attach: `PUT …/computes/{name}` with `computeType: Kubernetes`, `resourceId`, `properties.namespace`
  (a DNS label, as Kubernetes requires of a namespace), `properties.defaultInstanceType`. A cluster without
  the extension, an unknown resource id and a bad namespace are refused. The same AKS cluster may be attached
  again under another name (as v1 `AKS` and as `Kubernetes`).
* Endpoints: `properties.compute` names a Kubernetes compute (ARM id or name). A v1 `AKS` compute is refused
  with Azure's words (Azure/azure-cli-extensions#5102: "Creation of Online Endpoints or deployments on AKS
  compute type is no longer supported…"); a compute that does not exist with "Cannot find Kubernetes
  compute." (ComputeNotFound), another type with "The compute information is invalid."
  (InvalidComputeInformation), both from `how-to-troubleshoot-kubernetes-compute` (envelopes unverified).
  The scoring URI is `http://<azureml-fe>/api/v1/endpoint/<name>/score` (the shape azure-2026.md §3 gives;
  unverified against a live answer): the emulator's plain listener is the front end's address, as it is for
  v1 AKS services without TLS.
* Deployments: `instanceType` (default: the compute's `defaultInstanceType`) must be one of the compute's;
  a `resources` section (`containerResourceRequirements`) needs CPU and memory requests, GPU only as a limit,
  requests ≤ limits ("Resource requests greater than limits", BadArgument) and limits within the instance
  type's (the instance types page: "the resource limits must be less than the instance type limits");
  wordings unverified. Pods (Default scale: `sku.capacity`; TargetUtilization: `minInstances`, unverified)
  are placed on the cluster's nodes by scheduler.py, beside every other Kubernetes deployment on the same
  cluster; pods that do not fit fail the deployment `OutOfQuota` "Kubernetes unschedulable. Details:…"
  (the wording of `how-to-troubleshoot-online-endpoints`, "Kubernetes quota").
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import catalog, scheduler
from ..http import Request, Response
from ..state import Compute, arm_error, iso_now
from . import errors

if TYPE_CHECKING:
    from ..emulator import AzureEmulator
    from .resources import OnlineDeployment, OnlineEndpoint

EXTENSION_TYPE = "Microsoft.AzureML.Kubernetes"
DEFAULT_INSTANCE_TYPE = "defaultinstancetype"
DEFAULT_INSTANCE_TYPE_RESOURCES: dict[str, dict[str, Any]] = {
    "requests": {"cpu": "100m", "memory": "2Gi"},
    "limits": {"cpu": "2", "memory": "2Gi", "nvidia.com/gpu": None},
}
GPU = "nvidia.com/gpu"

# Kubernetes' own rule and words for a namespace name (apimachinery's IsDNS1123Label).
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_LABEL_MESSAGE = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
    "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
TSG_K8S = "https://aka.ms/arcmltsg"


# --- Kubernetes quantities -------------------------------------------------------------------------------

_CPU = re.compile(r"^(\d+(?:\.\d+)?)(m?)$")
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|K|M|G|T)?$")
_MEMORY_BYTES = {
    None: 1,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
}


def cpu_cores(quantity: Any) -> float | None:
    """A Kubernetes CPU quantity ("100m", "2", 0.5) in cores; None if it does not parse."""
    found = _CPU.match(str(quantity).strip()) if quantity is not None else None
    if found is None:
        return None
    value = float(found[1])
    return value / 1000 if found[2] else value


def memory_gib(quantity: Any) -> float | None:
    """A Kubernetes memory quantity ("2Gi", "1536Mi", "0.5G") in GiB; None if it does not parse."""
    found = _MEMORY.match(str(quantity).strip()) if quantity is not None else None
    if found is None:
        return None
    return float(found[1]) * _MEMORY_BYTES[found[2]] / 2**30


def gpu_count(quantity: Any) -> int | None:
    """An `nvidia.com/gpu` quantity: a whole number (0 when absent); None when it is not one."""
    if quantity in (None, ""):
        return 0
    text = str(quantity).strip()
    return int(text) if text.isdigit() else None


# --- the cluster and its instance types ----------------------------------------------------------------


@dataclass(frozen=True)
class InstanceType:
    """One `amlarc.azureml.com/v1alpha1 InstanceType`: a node selector and the pod's requests and limits."""

    name: str
    requests: dict[str, Any]
    limits: dict[str, Any]
    node_selector: dict[str, str] | None = None

    @property
    def gpus(self) -> int:
        return gpu_count(self.limits.get(GPU)) or 0

    def json(self) -> dict[str, Any]:
        """As the RP reports it under `properties.instanceTypes`."""
        return {
            "nodeSelector": self.node_selector,
            "resources": {
                "requests": {
                    "cpu": self.requests.get("cpu"),
                    "memory": self.requests.get("memory"),
                    GPU: None,
                },
                "limits": {
                    "cpu": self.limits.get("cpu"),
                    "memory": self.limits.get("memory"),
                    GPU: self.limits.get(GPU),
                },
            },
        }


def instance_type_problem(name: str, spec: dict[str, Any]) -> str | None:
    """Why the extension's CRD validation refuses an InstanceType (the instance types page's rules)."""
    if not DNS_LABEL.fullmatch(name or ""):
        return f"InstanceType name {name!r}: {DNS_LABEL_MESSAGE}"
    resources = spec.get("resources") or spec
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    for section, values in (("requests", requests), ("limits", limits)):
        if not cpu_cores(values.get("cpu")):
            return f"InstanceType {name}: {section}.cpu is required and can't be zero or empty."
        if not memory_gib(values.get("memory")):
            return f"InstanceType {name}: {section}.memory is required and can't be zero or empty."
    if requests.get(GPU) not in (None, 0, "0"):
        return f"InstanceType {name}: {GPU} can be specified only in the limits section."
    if gpu_count(limits.get(GPU)) is None:
        return f"InstanceType {name}: limits.{GPU} must be an integer."
    return None


def make_instance_type(name: str, spec: dict[str, Any]) -> InstanceType:
    resources = spec.get("resources") or spec
    return InstanceType(
        name=name,
        requests=dict(resources.get("requests") or {}),
        limits=dict(resources.get("limits") or {}),
        node_selector=spec.get("nodeSelector"),
    )


DEFAULT = make_instance_type(DEFAULT_INSTANCE_TYPE, DEFAULT_INSTANCE_TYPE_RESOURCES)


@dataclass
class KubernetesCluster:
    """An AKS cluster made in AKS (not by Azure ML), with or without the AzureML extension."""

    resource_id: str
    vm_size: str
    node_count: int
    location: str
    extension: bool
    instance_types: dict[str, InstanceType] = field(default_factory=dict)
    created: str = field(default_factory=iso_now)

    @property
    def name(self) -> str:
        return self.resource_id.rstrip("/").rsplit("/", 1)[-1]


def new_cluster(
    emu: AzureEmulator,
    name: str,
    *,
    vm_size: str,
    node_count: int,
    extension: bool,
    instance_types: dict[str, dict[str, Any]] | None,
    resource_group: str | None,
) -> KubernetesCluster:
    """A cluster as the control API makes it; raises ValueError for what AKS or kubectl would refuse."""
    size = catalog.vm_size(vm_size)
    if size is None or size.is_retired(emu.today or dt.date.today()):
        raise ValueError(f"AKS offers no node size {vm_size!r} (catalog.VM_SIZES, retirements included).")
    if node_count < 1:
        raise ValueError("An AKS node pool needs at least 1 node.")
    if instance_types and not extension:
        raise ValueError("InstanceType is the AzureML extension's CRD: a cluster without it has none.")
    types: dict[str, InstanceType] = {DEFAULT_INSTANCE_TYPE: DEFAULT} if extension else {}
    for type_name, spec in (instance_types or {}).items():
        if (problem := instance_type_problem(type_name, spec)) is not None:
            raise ValueError(problem)
        types[type_name] = make_instance_type(type_name, spec)
    resource_id = (
        f"/subscriptions/{emu.subscription_id}/resourceGroups/{resource_group or emu.resource_group}"
        f"/providers/Microsoft.ContainerService/managedClusters/{name}"
    )
    return KubernetesCluster(resource_id, size.name, node_count, emu.location, extension, types)


def cluster_of(emu: AzureEmulator, resource_id: str | None) -> KubernetesCluster | None:
    return emu.v2.k8s_clusters.get((resource_id or "").rstrip("/").lower())


# --- attach (PUT …/computes/{name}, computeType Kubernetes) -----------------------------------------------


def attach(emu: AzureEmulator, name: str, props: dict[str, Any]) -> Response | Compute:
    """The compute to create for an attach, or Azure's refusal."""
    resource_id = str(props.get("resourceId") or "")
    k8s = props.get("properties") or {}
    if not resource_id:
        # Unverified wording: a Kubernetes compute is always an attach of an existing cluster.
        return arm_error(
            400, "BadRequest", "A Kubernetes compute needs the resourceId of the cluster to attach."
        )
    cluster = cluster_of(emu, resource_id)
    if cluster is None:
        if resource_id.lower() in emu.external_aks:
            return _no_extension(resource_id)
        parts = resource_id.strip("/").split("/")
        group = parts[3] if len(parts) > 3 else "?"
        # ARM's own ResourceNotFound sentence, relayed by the RP (the relay's envelope is unverified).
        return arm_error(
            400,
            "BadRequest",
            f"The Resource 'Microsoft.ContainerService/managedClusters/{parts[-1]}' under resource group "
            f"'{group}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
        )
    if not cluster.extension:
        return _no_extension(resource_id)
    namespace = str(k8s.get("namespace") or "default")
    if len(namespace) > 63 or not DNS_LABEL.fullmatch(namespace):
        # Kubernetes' words for a namespace name; the RP's envelope around them is unverified.
        problem = "must be no more than 63 characters" if len(namespace) > 63 else DNS_LABEL_MESSAGE
        return arm_error(400, "BadRequest", f"Invalid namespace {namespace!r}: {problem}")
    default_type = str(k8s.get("defaultInstanceType") or DEFAULT_INSTANCE_TYPE)
    if default_type not in cluster.instance_types:
        return unknown_instance_type(default_type, name, cluster)
    return Compute(
        name=name,
        location=cluster.location,
        vm_size=cluster.vm_size,
        agent_count=cluster.node_count,
        cluster_purpose="",
        is_attached=True,
        resource_id=cluster.resource_id,
        created_on=iso_now(),
        compute_type="Kubernetes",
        namespace=namespace,
        default_instance_type=default_type,
        instance_types={n: t.json() for n, t in cluster.instance_types.items()},
    )


def _no_extension(resource_id: str) -> Response:
    # Unverified wording (no public source quotes the RP's refusal); the requirement is the attach page's.
    return arm_error(
        400,
        "BadRequest",
        f"The Azure Machine Learning extension ({EXTENSION_TYPE}) is not installed on cluster {resource_id}. "
        f"Deploy the extension on the cluster before attaching it. Troubleshooting: {TSG_K8S}",
    )


def unknown_instance_type(instance_type: str, compute: str, cluster: KubernetesCluster) -> Response:
    # Unverified wording.
    return arm_error(
        400,
        "BadArgument",
        f"Instance type {instance_type} is not found in compute {compute}. Available instance types: "
        f"{', '.join(sorted(cluster.instance_types))}. Create it in the cluster (kubectl apply an "
        "InstanceType) or choose another.",
    )


# --- endpoints ----------------------------------------------------------------------------------------------


def compute_name(reference: str) -> str:
    """A compute named by ARM id (…/computes/<name>), `azureml:<name>`, or plain name."""
    return reference.rstrip("/").rsplit("/", 1)[-1].removeprefix("azureml:")


def compute_problem(emu: AzureEmulator, reference: str) -> Response | None:
    """Azure's refusal of an endpoint's or deployment's compute, or None for a usable Kubernetes one."""
    compute = emu.computes.get(compute_name(reference))
    if compute is None:
        return errors.arm_error(400, "ComputeNotFound", "Cannot find Kubernetes compute.")
    if compute.compute_type == "AKS":
        return errors.arm_error(
            400,
            "BadRequest",
            "The request is invalid.",
            [
                {
                    "code": "NotSupported",
                    "message": "Creation of Online Endpoints or deployments on AKS compute type is no longer "
                    "supported. More details can be found here, https://aka.ms/troubleshoot-creating-aks-"
                    "endpoint",
                }
            ],
        )
    if compute.compute_type != "Kubernetes" or compute.provisioning_state != "Succeeded":
        return errors.arm_error(400, "InvalidComputeInformation", "The compute information is invalid.")
    return None


def front_end(emu: AzureEmulator) -> str:
    """The extension's azureml-fe address: the emulator's plain listener (no TLS configured)."""
    return emu.plain_url.removeprefix("http://")


def scoring_uris(emu: AzureEmulator, name: str) -> tuple[str, str]:
    base = f"http://{front_end(emu)}/api/v1/endpoint/{name}"
    return f"{base}/score", f"{base}/swagger.json"


# --- deployments ------------------------------------------------------------------------------------------


def compute_of(emu: AzureEmulator, ep: OnlineEndpoint) -> Compute | None:
    return emu.computes.get(compute_name(ep.compute or ""))


def instance_type_of(emu: AzureEmulator, ep: OnlineEndpoint, body: dict[str, Any]) -> str:
    compute = compute_of(emu, ep)
    props = body.get("properties") or {}
    default = compute.default_instance_type if compute is not None else DEFAULT_INSTANCE_TYPE
    return str(props.get("instanceType") or default)


def _resources(props: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(requests, limits) of a deployment's `resources` section, or None without one."""
    section = props.get("containerResourceRequirements")
    if not section:
        return None
    requests = dict(section.get("containerResourceRequests") or {})
    limits = dict(section.get("containerResourceLimits") or {})
    return requests, limits


def deployment_problem(emu: AzureEmulator, ep: OnlineEndpoint, body: dict[str, Any]) -> Response | None:
    """A Kubernetes deployment PUT that Azure refuses at once (all wordings unverified but the rules'
    sources, see the module docstring)."""
    if (problem := compute_problem(emu, ep.compute or "")) is not None:
        return problem
    compute = compute_of(emu, ep)
    cluster = cluster_of(emu, compute.resource_id if compute else None)
    if compute is None or cluster is None:
        return errors.arm_error(400, "ClusterNotFound", "Cannot found Kubernetes cluster.")
    instance_type = instance_type_of(emu, ep, body)
    chosen = cluster.instance_types.get(instance_type)
    if chosen is None:
        return unknown_instance_type(instance_type, compute.name, cluster)
    props = body.get("properties") or {}
    if (problem := _scale_problem(props.get("scaleSettings") or {})) is not None:
        return errors.arm_error(400, "BadArgument", problem)
    resources = _resources(props)
    if resources is None:
        return None
    requests, limits = resources
    if requests.get("gpu") not in (None, "", 0, "0"):
        return errors.arm_error(
            400, "BadArgument", f"{GPU} can be specified only in the limits section of resources."
        )
    if gpu_count(limits.get("gpu")) is None:
        return errors.arm_error(400, "BadArgument", f"limits.{GPU} must be an integer.")
    for kind, parse in (("cpu", cpu_cores), ("memory", memory_gib)):
        request = parse(requests.get(kind))
        if not request:
            return errors.arm_error(
                400, "BadArgument", f"resources.requests.{kind} is required and can't be zero or empty."
            )
        limit = parse(limits.get(kind)) if limits.get(kind) not in (None, "") else None
        if limit is not None and request > limit + 1e-9:
            return errors.arm_error(
                400,
                "BadArgument",
                f"Resource requests greater than limits: requests.{kind} {requests[kind]} > limits.{kind} "
                f"{limits[kind]}. Requests for resources must be less than or equal to limits.",
            )
        type_limit = parse(chosen.limits.get(kind))
        if limit is not None and type_limit is not None and limit > type_limit + 1e-9:
            what = f"limits.{kind} {limits[kind]}"
            return _over_instance_type(instance_type, what, chosen.limits.get(kind))
    if (gpu_count(limits.get("gpu")) or 0) > chosen.gpus:
        return _over_instance_type(instance_type, f"limits.{GPU} {limits.get('gpu')}", chosen.gpus)
    return None


def _over_instance_type(instance_type: str, what: str, allowed: Any) -> Response:
    return errors.arm_error(
        400,
        "BadArgument",
        f"The deployment's resource {what} exceeds instance type {instance_type}'s limit ({allowed}): the "
        "resource limits must be less than the instance type limits.",
    )


def _scale_problem(scale: dict[str, Any]) -> str | None:
    kind = str(scale.get("scaleType") or "Default")
    if kind == "Default":
        return None
    if kind != "TargetUtilization":
        return f"Invalid scaleType {kind!r}: Default or TargetUtilization."
    low, high = int(scale.get("minInstances") or 1), int(scale.get("maxInstances") or 1)
    target = int(scale.get("targetUtilizationPercentage") or 70)
    if low < 1 or high < low:
        return f"scaleSettings: minInstances ({low}) must be at least 1 and at most maxInstances ({high})."
    if not 1 <= target <= 100:
        return f"scaleSettings: targetUtilizationPercentage ({target}) must be between 1 and 100."
    return None


# --- pods on nodes --------------------------------------------------------------------------------------


def pod_request(emu: AzureEmulator, d: OnlineDeployment) -> scheduler.PodRequest:
    """What one instance (pod) asks Kubernetes for: the resources section, else the instance type's."""
    ep = emu.v2.endpoints.get(d.endpoint)
    compute = compute_of(emu, ep) if ep is not None else None
    cluster = cluster_of(emu, compute.resource_id if compute else None)
    chosen = cluster.instance_types.get(d.instance_type) if cluster else None
    resources = _resources(d.properties)
    if resources is not None:
        requests, limits = resources
        gpus = gpu_count(limits.get("gpu")) or 0
        return scheduler.PodRequest(
            cpu_cores(requests.get("cpu")) or 0.0, memory_gib(requests.get("memory")) or 0.0, gpus
        )
    if chosen is None:
        chosen = DEFAULT
    cpu, memory = cpu_cores(chosen.requests.get("cpu")), memory_gib(chosen.requests.get("memory"))
    return scheduler.PodRequest(cpu or 0.0, memory or 0.0, chosen.gpus)


def pod_count(d: OnlineDeployment) -> int:
    scale = d.properties.get("scaleSettings") or {}
    if scale.get("scaleType") == "TargetUtilization":
        return int(scale.get("minInstances") or 1)
    return d.instance_count


def _cluster_id(emu: AzureEmulator, d: OnlineDeployment) -> str:
    ep = emu.v2.endpoints.get(d.endpoint)
    compute = compute_of(emu, ep) if ep is not None else None
    return (compute.resource_id or "").lower() if compute is not None else ""


def unschedulable_reason(emu: AzureEmulator, d: OnlineDeployment) -> str | None:
    """The scheduler's FailedScheduling message if this deployment's pods do not fit beside the pods of
    every other Kubernetes deployment running on the same cluster (whatever compute attached it)."""
    cluster_id = _cluster_id(emu, d)
    cluster = emu.v2.k8s_clusters.get(cluster_id)
    size = catalog.vm_size(cluster.vm_size) if cluster is not None else None
    if cluster is None or size is None:
        return None
    cpu, memory, gpu = catalog.allocatable(size)
    nodes = [scheduler.Node(cpu, memory, gpu) for _ in range(cluster.node_count)]
    for other in emu.v2.deployments.values():
        if other is d or not other.is_kubernetes or other.host is None:
            continue
        if _cluster_id(emu, other) != cluster_id:
            continue
        for _ in range(pod_count(other)):
            _place(nodes, pod_request(emu, other))
    pod = pod_request(emu, d)
    for _ in range(pod_count(d)):
        if (reason := _place(nodes, pod)) is not None:
            return reason
    return None


def _place(nodes: list[scheduler.Node], pod: scheduler.PodRequest) -> str | None:
    reasons: Counter[str] = Counter()
    for node in nodes:
        missing = node.shortfalls(pod)
        if not missing:
            node.take(pod)
            return None
        reasons.update(missing)
    return scheduler.failed_scheduling_message(len(nodes), reasons)


def unschedulable(reason: str) -> dict[str, Any]:
    """The deployment's error: the words of how-to-troubleshoot-online-endpoints ("Kubernetes quota")."""
    message = f"Kubernetes unschedulable. Details:{reason} {errors.TSG}outofquota"
    return errors.error_body("OutOfQuota", message)


def gpus_of(emu: AzureEmulator, d: OnlineDeployment) -> int:
    return pod_request(emu, d).gpu


# --- the data plane: http://<azureml-fe>/api/v1/endpoint/<name>/score -----------------------------------


def score(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    from . import scoring

    ep = emu.v2.endpoints.get(m["name"])
    if ep is None or not ep.is_kubernetes:
        return scoring.error(404, f"Endpoint {m['name']} not found.")
    return scoring.serve(emu, req, ep)


def swagger(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    from . import scoring

    ep = emu.v2.endpoints.get(m["name"])
    if ep is None or not ep.is_kubernetes:
        return scoring.error(404, f"Endpoint {m['name']} not found.")
    return scoring.swagger_of(ep)
