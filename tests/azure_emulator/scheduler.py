"""Kubernetes' scheduling of a service's replicas onto an AKS compute's nodes.

Each node offers its allocatable resources: the catalogue's vCPUs and memory less AKS's reservations
(catalog.reserved_cpu / reserved_memory_gib: e.g. 0.14 cores and 3.15 GiB of a 4-vCPU, 14 GiB D3_v2) and its
whole NVIDIA GPUs (`nvidia.com/gpu`; an A10 partition counts as one). Each replica (pod) requests the
service's `containerResourceRequirements` (cpu, memoryInGB, gpu); an autoscaled service runs `minReplicas`
pods, a fixed one `numReplicas`. The pods of every service already on the compute are placed first, in the
order they were created, then the new service's; each pod goes on the first node it fits (first fit).
System pods (azureml-fe, kube-system) are not modelled beyond the reservations.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import catalog

if TYPE_CHECKING:
    from .emulator import AzureEmulator
    from .state import Service

# The SDK's defaults when a deploy configuration leaves them out (AksWebservice.deploy_configuration).
DEFAULT_CPU, DEFAULT_MEMORY_GB = 0.1, 0.5


@dataclass(frozen=True)
class PodRequest:
    cpu: float
    memory_gib: float
    gpu: int


@dataclass
class Node:
    cpu: float
    memory_gib: float
    gpu: int

    def shortfalls(self, pod: PodRequest) -> list[str]:
        """Kubernetes' words for what this node lacks for the pod (empty: it fits)."""
        missing = []
        if pod.cpu > self.cpu + 1e-9:
            missing.append("Insufficient cpu")
        if pod.memory_gib > self.memory_gib + 1e-9:
            missing.append("Insufficient memory")
        if pod.gpu > self.gpu:
            missing.append("Insufficient nvidia.com/gpu")
        return missing

    def take(self, pod: PodRequest) -> None:
        self.cpu -= pod.cpu
        self.memory_gib -= pod.memory_gib
        self.gpu -= pod.gpu


def pod_request(payload: dict[str, Any]) -> PodRequest:
    """What one replica of a service asks Kubernetes for."""
    resources = payload.get("containerResourceRequirements") or {}
    cpu = resources.get("cpu")
    memory = resources.get("memoryInGB")
    return PodRequest(
        cpu=float(DEFAULT_CPU if cpu is None else cpu),
        memory_gib=float(DEFAULT_MEMORY_GB if memory is None else memory),
        gpu=math.ceil(float(resources.get("gpu") or 0)),
    )


def replica_count(payload: dict[str, Any]) -> int:
    """Pods Kubernetes must place: minReplicas when autoscaled, else numReplicas (default 1)."""
    autoscaler = payload.get("autoScaler") or {}
    if autoscaler.get("autoscaleEnabled") and not payload.get("numReplicas"):
        return int(autoscaler.get("minReplicas") or 1)
    return int(payload.get("numReplicas") or 1)


def holds_capacity(svc: Service) -> bool:
    """Whether a service's pods occupy its nodes: not when it is going away or was never scheduled."""
    if svc.deleting or svc.state == "Unschedulable":
        return False
    details = (svc.error or {}).get("details") or []
    return not any(isinstance(d, dict) and d.get("code") == "Unschedulable" for d in details)


def unschedulable_reason(
    emu: AzureEmulator, compute_name: str, payload: dict[str, Any], replacing: str | None = None
) -> str | None:
    """Kubernetes' FailedScheduling message if the payload's replicas do not fit beside the compute's other
    services (`replacing`: the service being updated, whose old pods do not count), else None."""
    compute = emu.computes.get(compute_name)
    size = catalog.vm_size(compute.vm_size) if compute is not None else None
    if compute is None or size is None:
        return None  # no such compute or size: refused elsewhere, with Azure's own message
    cpu, memory, gpu = catalog.allocatable(size)
    nodes = [Node(cpu, memory, gpu) for _ in range(compute.agent_count)]
    own = payload.get("name")
    for svc in emu.services.values():
        if svc.name in (own, replacing) or svc.payload.get("computeName") != compute_name:
            continue
        if holds_capacity(svc):
            _place(nodes, pod_request(svc.payload), replica_count(svc.payload))
    pod = pod_request(payload)
    for _ in range(replica_count(payload)):
        if (reason := _place_one(nodes, pod)) is not None:
            return reason
    return None


def _place(nodes: list[Node], pod: PodRequest, count: int) -> None:
    for _ in range(count):
        _place_one(nodes, pod)  # an existing pod that no longer fits stays Pending; it takes nothing


def _place_one(nodes: list[Node], pod: PodRequest) -> str | None:
    reasons: Counter[str] = Counter()
    for node in nodes:
        missing = node.shortfalls(pod)
        if not missing:
            node.take(pod)
            return None
        reasons.update(missing)
    return failed_scheduling_message(len(nodes), reasons)


def failed_scheduling_message(node_count: int, reasons: Counter[str]) -> str:
    """The scheduler's event text, e.g. '0/3 nodes are available: 3 Insufficient cpu.' (reasons sorted)."""
    listed = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
    return (
        f"0/{node_count} nodes are available: {listed}. preemption: 0/{node_count} nodes are available: "
        f"{node_count} No preemption victims found for incoming pod."
    )
