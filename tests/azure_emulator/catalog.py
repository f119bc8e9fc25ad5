"""What the emulated Azure knows on its own: VM sizes, retirements, AKS node reservations and Azure's pace.

The emulator must not read Lynx's tables (`deployments.vm_sizes` …): a mistake copied from Lynx would be
mirrored instead of caught. Every figure here comes from ../shared/reference/azure-gpu-vm-sizes.md and
azure-2026.md (Microsoft's size pages and retired-sizes list); "unverified" marks what no source settles.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

# AKS's default Kubernetes version for a cluster the v1 RP creates ("uses the default version", no choice).
# A plausible 2026 default (AKS supports N-2 minors); the exact patch is unverified.
DEFAULT_KUBERNETES_VERSION = "1.33.3"

NC_RETIRED = dt.date(2023, 9, 6)  # NC (K80), NCv2 (P100), ND (P40), NV (M60): "Retired 9/6/23"
NCV3_RETIRED = dt.date(2025, 9, 30)
NC24RS_V3_RETIRED = dt.date(2025, 3, 31)
NVV3_NVV4_RETIRED = dt.date(2026, 9, 30)  # announced 2026-04-15
DV2_DSV2_RETIREMENT = dt.date(2028, 5, 1)  # announced 2025-03-31; still deployable, capacity limited


@dataclass(frozen=True)
class VmSize:
    """One Azure VM size as Azure describes it. `gpus` is fractional for GPU partitions (NVads A10 v5)."""

    name: str
    vcpus: int
    memory_gib: float
    gpus: float = 0
    gpu_kind: str | None = None
    retired_on: dt.date | None = None
    retirement_announced_for: dt.date | None = (
        None  # deployable until then, "restrictions on new subscriptions"
    )

    def is_retired(self, today: dt.date) -> bool:
        return self.retired_on is not None and self.retired_on <= today

    @property
    def nvidia_gpus_per_node(self) -> int:
        """What the NVIDIA device plugin advertises as `nvidia.com/gpu`: whole GPUs; a partition counts as 1.

        (AKS CUDA support for the A10 partitions, which run the GRID driver, is unverified; AMD MI25
        partitions of NVv4 are not NVIDIA GPUs at all.)
        """
        if not self.gpus or not (self.gpu_kind or "").startswith("NVIDIA"):
            return 0
        return max(1, math.floor(self.gpus))


def _sizes(*sizes: VmSize) -> dict[str, VmSize]:
    # Azure compares VM size names case-insensitively (the RP's own examples say "STANDARD_NC6").
    return {size.name.lower(): size for size in sizes}


_T4, _A100, _H100, _A10 = "NVIDIA T4", "NVIDIA A100 PCIe", "NVIDIA H100 NVL", "NVIDIA A10"
_K80, _P100, _P40, _M60, _V100 = (
    "NVIDIA Tesla K80",
    "NVIDIA Tesla P100",
    "NVIDIA Tesla P40",
    "NVIDIA Tesla M60",
    "NVIDIA V100",
)

VM_SIZES: dict[str, VmSize] = _sizes(
    # --- current GPU sizes ---------------------------------------------------------------------
    VmSize("Standard_NC4as_T4_v3", 4, 28, 1, _T4),
    VmSize("Standard_NC8as_T4_v3", 8, 56, 1, _T4),
    VmSize("Standard_NC16as_T4_v3", 16, 110, 1, _T4),
    VmSize("Standard_NC64as_T4_v3", 64, 440, 4, _T4),
    VmSize("Standard_NC24ads_A100_v4", 24, 220, 1, _A100),
    VmSize("Standard_NC48ads_A100_v4", 48, 440, 2, _A100),
    VmSize("Standard_NC96ads_A100_v4", 96, 880, 4, _A100),
    VmSize("Standard_NC40ads_H100_v5", 40, 320, 1, _H100),
    VmSize("Standard_NC80adis_H100_v5", 80, 640, 2, _H100),
    VmSize("Standard_ND96asr_v4", 96, 900, 8, "NVIDIA A100 40GB"),
    VmSize("Standard_ND96amsr_A100_v4", 96, 1900, 8, "NVIDIA A100 80GB"),
    VmSize("Standard_ND96isr_H100_v5", 96, 1900, 8, "NVIDIA H100"),
    VmSize("Standard_ND40rs_v2", 40, 672, 8, "NVIDIA V100 32GB"),
    VmSize("Standard_NV6ads_A10_v5", 6, 55, 1 / 6, _A10),
    VmSize("Standard_NV12ads_A10_v5", 12, 110, 1 / 3, _A10),
    VmSize("Standard_NV18ads_A10_v5", 18, 220, 1 / 2, _A10),
    VmSize("Standard_NV36ads_A10_v5", 36, 440, 1, _A10),
    VmSize("Standard_NV36adms_A10_v5", 36, 880, 1, _A10),
    VmSize("Standard_NV72ads_A10_v5", 72, 880, 2, _A10),
    # --- retired GPU sizes ---------------------------------------------------------------------
    VmSize("Standard_NV12s_v3", 12, 112, 1, _M60, NVV3_NVV4_RETIRED),
    VmSize("Standard_NV24s_v3", 24, 224, 2, _M60, NVV3_NVV4_RETIRED),
    VmSize("Standard_NV48s_v3", 48, 448, 4, _M60, NVV3_NVV4_RETIRED),
    VmSize("Standard_NV4as_v4", 4, 14, 1 / 8, "AMD Radeon Instinct MI25", NVV3_NVV4_RETIRED),
    VmSize("Standard_NV8as_v4", 8, 28, 1 / 4, "AMD Radeon Instinct MI25", NVV3_NVV4_RETIRED),
    VmSize("Standard_NV16as_v4", 16, 56, 1 / 2, "AMD Radeon Instinct MI25", NVV3_NVV4_RETIRED),
    VmSize("Standard_NV32as_v4", 32, 112, 1, "AMD Radeon Instinct MI25", NVV3_NVV4_RETIRED),
    VmSize("Standard_NC6s_v3", 6, 112, 1, _V100, NCV3_RETIRED),
    VmSize("Standard_NC12s_v3", 12, 224, 2, _V100, NCV3_RETIRED),
    VmSize("Standard_NC24s_v3", 24, 448, 4, _V100, NCV3_RETIRED),
    VmSize("Standard_NC24rs_v3", 24, 448, 4, _V100, NC24RS_V3_RETIRED),
    VmSize("Standard_NC6", 6, 56, 1, _K80, NC_RETIRED),
    VmSize("Standard_NC12", 12, 112, 2, _K80, NC_RETIRED),
    VmSize("Standard_NC24", 24, 224, 4, _K80, NC_RETIRED),
    VmSize("Standard_NC24r", 24, 224, 4, _K80, NC_RETIRED),
    VmSize("Standard_NC6s_v2", 6, 112, 1, _P100, NC_RETIRED),
    VmSize("Standard_NC12s_v2", 12, 224, 2, _P100, NC_RETIRED),
    VmSize("Standard_NC24s_v2", 24, 448, 4, _P100, NC_RETIRED),
    VmSize("Standard_NC24rs_v2", 24, 448, 4, _P100, NC_RETIRED),
    VmSize("Standard_ND6s", 6, 112, 1, _P40, NC_RETIRED),
    VmSize("Standard_ND12s", 12, 224, 2, _P40, NC_RETIRED),
    VmSize("Standard_ND24s", 24, 448, 4, _P40, NC_RETIRED),
    VmSize("Standard_ND24rs", 24, 448, 4, _P40, NC_RETIRED),
    VmSize("Standard_NV6", 6, 56, 1, _M60, NC_RETIRED),
    VmSize("Standard_NV12", 12, 112, 2, _M60, NC_RETIRED),
    VmSize("Standard_NV24", 24, 224, 4, _M60, NC_RETIRED),
    # --- CPU sizes (AKS system/default nodes; what Lynx's forms and tests use) ------------------
    VmSize("Standard_D2_v2", 2, 7, retirement_announced_for=DV2_DSV2_RETIREMENT),
    VmSize("Standard_D3_v2", 4, 14, retirement_announced_for=DV2_DSV2_RETIREMENT),
    VmSize("Standard_D4_v2", 8, 28, retirement_announced_for=DV2_DSV2_RETIREMENT),
    VmSize("Standard_D5_v2", 16, 56, retirement_announced_for=DV2_DSV2_RETIREMENT),
    VmSize("Standard_DS2_v2", 2, 7, retirement_announced_for=DV2_DSV2_RETIREMENT),
    VmSize("Standard_DS3_v2", 4, 14, retirement_announced_for=DV2_DSV2_RETIREMENT),
    VmSize("Standard_DS4_v2", 8, 28, retirement_announced_for=DV2_DSV2_RETIREMENT),
    VmSize("Standard_DS5_v2", 16, 56, retirement_announced_for=DV2_DSV2_RETIREMENT),
    VmSize("Standard_D2s_v3", 2, 8),
    VmSize("Standard_D4s_v3", 4, 16),
    VmSize("Standard_D8s_v3", 8, 32),
    VmSize("Standard_D2s_v5", 2, 8),
    VmSize("Standard_D4s_v5", 4, 16),
    VmSize("Standard_D8s_v5", 8, 32),
    VmSize("Standard_D16s_v5", 16, 64),
    VmSize("Standard_D32s_v5", 32, 128),
    VmSize("Standard_D2as_v5", 2, 8),
    VmSize("Standard_D4as_v5", 4, 16),
    VmSize("Standard_D8as_v5", 8, 32),
    VmSize("Standard_D16as_v5", 16, 64),
)


def vm_size(name: str | None) -> VmSize | None:
    """The size Azure knows by that name (case-insensitive), or None for a size Azure has never offered."""
    return VM_SIZES.get((name or "").lower())


def deployable_size_names(today: dt.date) -> list[str]:
    """What Azure lists as available, in the order its VMSizeNotSupported message lists them."""
    return sorted(size.name for size in VM_SIZES.values() if not size.is_retired(today))


# --- AKS node reservations: what Kubernetes can schedule on a node ------------------------------------
# AKS "Node resource reservations": kube-reserved CPU by core count, and (the rule AKS used before 1.29,
# kept here because it is the more conservative one) memory = 750 Mi eviction threshold + 25 % of the first
# 4 GiB + 20 % of the next 4 + 10 % of the next 8 + 6 % of the next 112 + 2 % above 128 GiB. The 1.29+ rule
# (20 MB per max pod + 50 MB, 100 Mi eviction) reserves less for large nodes; which applies is unverified.
_KUBE_RESERVED_CPU = ((1, 0.06), (2, 0.10), (4, 0.14), (8, 0.18), (16, 0.26), (32, 0.42), (64, 0.74))
_MEMORY_TIERS_GIB = ((4, 0.25), (4, 0.20), (8, 0.10), (112, 0.06), (math.inf, 0.02))
EVICTION_THRESHOLD_GIB = 0.75


def reserved_cpu(vcpus: int) -> float:
    reserved = _KUBE_RESERVED_CPU[0][1]
    for cores, cpu in _KUBE_RESERVED_CPU:
        if vcpus >= cores:
            reserved = cpu
    return reserved


def reserved_memory_gib(memory_gib: float) -> float:
    reserved, left = EVICTION_THRESHOLD_GIB, memory_gib
    for tier, share in _MEMORY_TIERS_GIB:
        portion = min(left, tier)
        reserved += portion * share
        left -= portion
        if left <= 0:
            break
    return reserved


def allocatable(size: VmSize) -> tuple[float, float, int]:
    """(cpu cores, memory GiB, nvidia.com/gpu) that pods may request on one node of this size."""
    return (
        size.vcpus - reserved_cpu(size.vcpus),
        size.memory_gib - reserved_memory_gib(size.memory_gib),
        size.nvidia_gpus_per_node,
    )


# --- Azure's pace ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    seconds: float
    source: str


PACE: dict[str, Step] = {
    "aks_create": Step(
        600, "azure-2026.md §1.2: 'Real AKS creation takes ~10 min or more' (a floor, not an upper bound)."
    ),
    "aks_attach": Step(
        90, "unverified: attach installs azureml-fe on the existing cluster; a guess of 1.5 min."
    ),
    "compute_delete": Step(300, "unverified: deleting the AKS resource and its node resource group; ~5 min."),
    "compute_update": Step(
        120, "unverified: an SSL update reconfigures azureml-fe and (Auto) requests a certificate; ~2 min."
    ),
    "image_build": Step(240, "unverified: an ACR build of the inference image with a conda solve; ~4 min."),
    "rollout": Step(90, "unverified: pulling the image and starting the pods of one revision; ~1.5 min."),
    "service_delete": Step(30, "unverified: deleting the Kubernetes deployment and its routes."),
    "mms_deployment_timeout": Step(
        1200, "azure-2026.md §1.2: 'MMS gives a deployment 20 min before DeploymentTimedOut'."
    ),
}


def azure_seconds(step: str) -> float:
    """How long Azure takes for `step` (a key of PACE), before the emulator's time scale."""
    return PACE[step].seconds


# --- Managed online endpoints (Azure ML v2) ----------------------------------------------------------
# Microsoft's "Managed online endpoints SKU list" (azure-ai-docs
# reference-managed-online-endpoints-vm-sku-list,
# 2025-10-18): the only instance types a managed online deployment may use, their quota family, cores, GPUs
# and whether Azure skips its 20 % upgrade reservation for them. The list still names NCv2/NCv3, which are
# retired (VM_SIZES says when): they are refused as retired, not as unknown. A subset: the families Lynx and
# the tests use, and every GPU family.


@dataclass(frozen=True)
class ManagedSku:
    name: str  # Azure's spelling (the doc writes it in capitals; Azure compares case-insensitively)
    family: str  # the quota family, as usages name it
    cores: int
    gpus: float = 0
    skip_reservation: bool = False  # "Skip 20% Reservation: Yes"

    @property
    def is_gpu(self) -> bool:
        return self.gpus > 0


_DSV2, _FSV2, _DASV4, _ESV3 = (
    "standardDSv2Family",
    "standardFSv2Family",
    "standardDASv4Family",
    "standardESv3Family",
)
_T4F, _A100F, _H100F, _A10F = (
    "standard NCASv3_T4 Family",
    "standardNCADSA100v4Family",
    "standardNCADSH100v5Family",
    "standardNVADSA10v5Family",
)
MANAGED_ONLINE_SKUS: dict[str, ManagedSku] = {
    sku.name.lower(): sku
    for sku in (
        ManagedSku("Standard_DS1_v2", _DSV2, 1),
        ManagedSku("Standard_DS2_v2", _DSV2, 2),
        ManagedSku("Standard_DS3_v2", _DSV2, 4),
        ManagedSku("Standard_DS4_v2", _DSV2, 8),
        ManagedSku("Standard_DS5_v2", _DSV2, 16),
        ManagedSku("Standard_F2s_v2", _FSV2, 2),
        ManagedSku("Standard_F4s_v2", _FSV2, 4),
        ManagedSku("Standard_F8s_v2", _FSV2, 8),
        ManagedSku("Standard_F16s_v2", _FSV2, 16),
        ManagedSku("Standard_F32s_v2", _FSV2, 32),
        ManagedSku("Standard_D2as_v4", _DASV4, 2),
        ManagedSku("Standard_D4as_v4", _DASV4, 4),
        ManagedSku("Standard_D8as_v4", _DASV4, 8),
        ManagedSku("Standard_D16as_v4", _DASV4, 16),
        ManagedSku("Standard_E2s_v3", _ESV3, 2),
        ManagedSku("Standard_E4s_v3", _ESV3, 4),
        ManagedSku("Standard_E8s_v3", _ESV3, 8),
        ManagedSku("Standard_E16s_v3", _ESV3, 16),
        ManagedSku("Standard_NC4as_T4_v3", _T4F, 4, 1),
        ManagedSku("Standard_NC8as_T4_v3", _T4F, 8, 1),
        ManagedSku("Standard_NC16as_T4_v3", _T4F, 16, 1),
        ManagedSku("Standard_NC64as_T4_v3", _T4F, 64, 4),
        ManagedSku("Standard_NC24ads_A100_v4", _A100F, 24, 1, True),
        ManagedSku("Standard_NC48ads_A100_v4", _A100F, 48, 2, True),
        ManagedSku("Standard_NC96ads_A100_v4", _A100F, 96, 4, True),
        ManagedSku("Standard_NC40ads_H100_v5", _H100F, 40, 1, True),
        ManagedSku("Standard_NC80adis_H100_v5", _H100F, 80, 2, True),
        ManagedSku("Standard_ND96amsr_A100_v4", "standard NDAMSv4_A100Family", 96, 8, True),
        ManagedSku("Standard_ND96asr_v4", "standard NDASv4_A100 Family", 96, 8, True),
        ManagedSku("Standard_ND40rs_v2", "standardNDSv2Family", 40, 8, True),
        ManagedSku("Standard_ND96isr_H100_v5", "standardNDv5H100Family", 96, 8, True),
        ManagedSku("Standard_NV6ads_A10_v5", _A10F, 6, 1 / 6),
        ManagedSku("Standard_NV12ads_A10_v5", _A10F, 12, 1 / 3),
        ManagedSku("Standard_NV18ads_A10_v5", _A10F, 18, 1 / 2),
        ManagedSku("Standard_NV36ads_A10_v5", _A10F, 36, 1),
        ManagedSku("Standard_NV36adms_A10_v5", _A10F, 36, 1),
        ManagedSku("Standard_NV72ads_A10_v5", _A10F, 72, 2),
        # Listed by the doc, retired since (VM_SIZES has the dates): refused as retired.
        ManagedSku("Standard_NC6s_v2", "standardNCSv2Family", 6, 1),
        ManagedSku("Standard_NC12s_v2", "standardNCSv2Family", 12, 2),
        ManagedSku("Standard_NC24s_v2", "standardNCSv2Family", 24, 4),
        ManagedSku("Standard_NC6s_v3", "standardNCSv3Family", 6, 1),
        ManagedSku("Standard_NC12s_v3", "standardNCSv3Family", 12, 2),
        ManagedSku("Standard_NC24s_v3", "standardNCSv3Family", 24, 4),
    )
}

# Dedicated cores per family a fresh subscription gets for Azure ML in one region. Unverified: Azure's
# defaults vary by subscription type and region (a trial showed 6 for standardFSv2Family); these are generous
# enough for the tests and small enough that a few large deployments run out. A test sets
# `emulator.v2.quota[family]`.
MANAGED_QUOTA_DEFAULT_CORES = 48
MANAGED_QUOTA_DEFAULTS: dict[str, int] = {_T4F: 48, _A100F: 48, _H100F: 80, _A10F: 72}
# "Azure Machine Learning reserves 20% of your compute resources for performing upgrades on some VM SKUs":
# ceil(1.2 × instances) × cores must fit ("10 instances of a Standard_DS3_v2 VM (4 cores) … 48 cores").
UPGRADE_RESERVATION = 1.2


def managed_sku(name: str | None) -> ManagedSku | None:
    """The managed online endpoint SKU of that name (case-insensitive); None if managed endpoints lack it."""
    return MANAGED_ONLINE_SKUS.get((name or "").lower())


def managed_cores_needed(sku: ManagedSku, instance_count: int) -> int:
    """Cores a deployment of `instance_count` instances takes from its family's quota."""
    instances = instance_count if sku.skip_reservation else math.ceil(instance_count * UPGRADE_RESERVATION)
    return instances * sku.cores


PACE.update(
    {
        "endpoint_create": Step(
            90, "unverified: a managed online endpoint's identity, role assignments and routes; ~1.5 min."
        ),
        "endpoint_update": Step(30, "unverified: a traffic or key change reaches the endpoint's front end."),
        "endpoint_delete": Step(60, "unverified: deleting an endpoint and its deployments' VMs; ~1 min."),
        "managed_provision": Step(
            180, "unverified: allocating the instances and pulling the image of a managed deployment; ~3 min."
        ),
        "managed_deployment_timeout": Step(
            3600,
            "unverified: how long a managed deployment may take to become ready before the operation fails.",
        ),
        "kubernetes_deployment_timeout": Step(
            1200, "azure-2026.md §3: a Kubernetes online deployment's 20-min in-cluster timeout."
        ),
    }
)
