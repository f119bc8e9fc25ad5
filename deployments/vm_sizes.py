"""Azure VM sizes Lynx can put behind an AKS cluster: specs, retirement dates, East US prices.

Pure data and functions (no Django, no I/O). Source: docs/shared reference "azure-gpu-vm-sizes.md"
(Microsoft Learn size pages and retirement lists; prices are East US Linux pay-as-you-go from the
SkyPilot v6 catalog, roughly August 2024). Numbers are copied as the docs give them.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

# Azure ML: "If your cluster has less than 12 virtual CPUs, you will need to specify 'DevTest'", and
# production (FastProd) clusters "must contain at least 3 nodes".
FAST_PROD_MIN_VCPUS = 12
FAST_PROD_MIN_NODES = 3
CLUSTER_PURPOSES = ("DevTest", "FastProd")
# Azure ML's compute name rule: 3 to 24 characters, starting with a letter, letters, digits and hyphens,
# ending with a letter or digit (COMPUTE_NAME_PATTERN, which local clusters follow too, so a name moves
# between targets); and, for Azure, not ending in a hyphen followed by digits only (`gpu-1`). That last part
# is Azure's own message for a refused compute instance name (quoted in MicrosoftDocs/pipelines-azureml#19,
# "cpu-cluster-1"): "Numbers cannot be the ending of the name if the previous character is a minus symbol".
COMPUTE_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]$"
COMPUTE_NAME_RULE = (
    "A compute name is 3 to 24 letters, digits or hyphens, starting with a letter and ending with a letter "
    "or digit (Azure ML's rule)."
)
AZURE_NAME_HYPHEN_DIGITS_END = r"-[0-9]+$"
AZURE_NAME_HYPHEN_DIGITS_RULE = (
    "Azure ML refuses a compute name that ends in a hyphen followed by digits only (like gpu-1): end it with "
    "a letter (gpu-1a) or drop the hyphen (gpu1)."
)


def compute_name_problem(name: str) -> str:
    """Why Azure ML would refuse this compute target name ("" when it would not)."""
    name = name or ""
    if not re.match(COMPUTE_NAME_PATTERN, name):
        return f"{name!r}: {COMPUTE_NAME_RULE}"
    if re.search(AZURE_NAME_HYPHEN_DIGITS_END, name):
        return f"{name!r}: {AZURE_NAME_HYPHEN_DIGITS_RULE}"
    return ""


@dataclass(frozen=True)
class VmSize:
    vm_size: str  # as Azure spells it
    vcpus: int
    memory_gb: float
    gpu_count: float  # fractional for A10 partitions (1/6, 1/3, 1/2 of a GPU)
    gpu_kind: str  # "" for CPU sizes
    gpu_memory_gb: float = 0  # per GPU (or per partition)
    price_eastus_per_hour: float | None = None
    retired_on: dt.date | None = None  # the size can no longer be deployed from this date
    retirement_announced_on: dt.date | None = None
    retirement_planned_on: dt.date | None = None
    replacement: str = ""  # a current size to suggest instead, for retired/retiring sizes
    note: str = ""

    @property
    def is_gpu(self) -> bool:
        return self.gpu_count > 0

    def retirement_date(self) -> dt.date | None:
        return self.retired_on or self.retirement_planned_on

    def is_retired(self, today: dt.date) -> bool:
        when = self.retirement_date()
        return when is not None and when <= today

    @property
    def gpu_label(self) -> str:
        if not self.is_gpu:
            return "no GPU"
        count = f"{self.gpu_count:g}" if self.gpu_count >= 1 else f"1/{round(1 / self.gpu_count)}"
        return f"{count}× {self.gpu_kind}"

    @property
    def label(self) -> str:
        price = f"${self.price_eastus_per_hour:g}/h East US" if self.price_eastus_per_hour else "price n/a"
        return f"{self.vm_size} — {self.gpu_label}, {self.vcpus} vCPU, {self.memory_gb:g} GB, {price}"


def _d(value: str) -> dt.date:
    return dt.date.fromisoformat(value)


_K80_RETIRED = _d("2023-09-06")  # NC, NCv2, ND and NV v1: "extended by one year" to 6 September 2023
_NCV3_RETIRED = _d("2025-09-30")
_NC24RS_V3_RETIRED = _d("2025-03-31")  # earlier than the rest of NCv3 (retired-sizes-list)
_NVV3_ANNOUNCED, _NVV3_PLANNED = _d("2026-04-15"), _d("2026-09-30")
_DSV2_ANNOUNCED, _DSV2_PLANNED = _d("2025-03-31"), _d("2028-05-01")

GPU_SIZES: tuple[VmSize, ...] = (
    VmSize("Standard_NC4as_T4_v3", 4, 28, 1, "NVIDIA T4", 16, 0.526),
    VmSize("Standard_NC8as_T4_v3", 8, 56, 1, "NVIDIA T4", 16, 0.752),
    VmSize("Standard_NC16as_T4_v3", 16, 110, 1, "NVIDIA T4", 16, 1.204),
    VmSize("Standard_NC64as_T4_v3", 64, 440, 4, "NVIDIA T4", 16, 4.352),
    VmSize(
        "Standard_NC24ads_A100_v4",
        24,
        220,
        1,
        "NVIDIA A100 PCIe",
        80,
        3.673,
        note="Microsoft only adds new NC capacity for the NCads H100 v5 series.",
    ),
    VmSize(
        "Standard_NC48ads_A100_v4",
        48,
        440,
        2,
        "NVIDIA A100 PCIe",
        80,
        7.346,
        note="Microsoft only adds new NC capacity for the NCads H100 v5 series.",
    ),
    VmSize(
        "Standard_NC96ads_A100_v4",
        96,
        880,
        4,
        "NVIDIA A100 PCIe",
        80,
        14.692,
        note="Microsoft only adds new NC capacity for the NCads H100 v5 series.",
    ),
    VmSize("Standard_NC40ads_H100_v5", 40, 320, 1, "NVIDIA H100 NVL", 94, 6.98),
    VmSize("Standard_NC80adis_H100_v5", 80, 640, 2, "NVIDIA H100 NVL", 94, 13.96),
    VmSize("Standard_ND96asr_v4", 96, 900, 8, "NVIDIA A100", 40, 27.197),
    VmSize(
        "Standard_ND96amsr_A100_v4",
        96,
        1900,
        8,
        "NVIDIA A100",
        80,
        32.77,
        note="The price catalog lists 1800 GiB memory; the docs say 1900 GB.",
    ),
    VmSize(
        "Standard_ND96isr_H100_v5",
        96,
        1900,
        8,
        "NVIDIA H100",
        80,
        98.32,
        note="640 GB GPU memory in total; the price catalog wrongly says 12 GPUs.",
    ),
    VmSize("Standard_NV6ads_A10_v5", 6, 55, 1 / 6, "NVIDIA A10 (partition)", 4, None),
    VmSize("Standard_NV12ads_A10_v5", 12, 110, 1 / 3, "NVIDIA A10 (partition)", 8, 0.908),
    VmSize("Standard_NV18ads_A10_v5", 18, 220, 1 / 2, "NVIDIA A10 (partition)", 12, None),
    VmSize("Standard_NV36ads_A10_v5", 36, 440, 1, "NVIDIA A10", 24, 3.20),
    VmSize("Standard_NV36adms_A10_v5", 36, 880, 1, "NVIDIA A10", 24, 4.52),
    VmSize("Standard_NV72ads_A10_v5", 72, 880, 2, "NVIDIA A10", 24, 6.52),
    VmSize("Standard_ND40rs_v2", 40, 672, 8, "NVIDIA V100 32GB", 32, 22.032),
    # NVv3 (Tesla M60): retirement announced 2026-04-15, planned 2026-09-30; migrate to NVads A10 v5.
    *(
        VmSize(
            name,
            cpu,
            mem,
            gpus,
            "NVIDIA Tesla M60",
            8,
            price,
            retirement_announced_on=_NVV3_ANNOUNCED,
            retirement_planned_on=_NVV3_PLANNED,
            replacement=repl,
        )
        for name, cpu, mem, gpus, price, repl in (
            ("Standard_NV12s_v3", 12, 112, 1, 1.14, "Standard_NV36ads_A10_v5"),
            ("Standard_NV24s_v3", 24, 224, 2, 2.28, "Standard_NV72ads_A10_v5"),
            ("Standard_NV48s_v3", 48, 448, 4, 4.56, "Standard_NV72ads_A10_v5"),
        )
    ),
    # NCv3 (V100): retired 2025-09-30, NC24rs_v3 already on 2025-03-31.
    *(
        VmSize(name, cpu, mem, gpus, "NVIDIA V100", 16, price, retired_on=retired, replacement=repl)
        for name, cpu, mem, gpus, price, retired, repl in (
            ("Standard_NC6s_v3", 6, 112, 1, 3.06, _NCV3_RETIRED, "Standard_NC24ads_A100_v4"),
            ("Standard_NC12s_v3", 12, 224, 2, 6.12, _NCV3_RETIRED, "Standard_NC48ads_A100_v4"),
            ("Standard_NC24s_v3", 24, 448, 4, 12.24, _NCV3_RETIRED, "Standard_NC96ads_A100_v4"),
            ("Standard_NC24rs_v3", 24, 448, 4, 13.46, _NC24RS_V3_RETIRED, "Standard_NC96ads_A100_v4"),
        )
    ),
    # First-generation sizes, all retired 6 September 2023 (no East US price any more).
    *(
        VmSize(name, cpu, mem, gpus, kind, gmem, None, retired_on=_K80_RETIRED, replacement=repl)
        for name, cpu, mem, gpus, kind, gmem, repl in (
            ("Standard_NC6", 6, 56, 1, "NVIDIA Tesla K80", 12, "Standard_NC4as_T4_v3"),
            ("Standard_NC12", 12, 112, 2, "NVIDIA Tesla K80", 12, "Standard_NC16as_T4_v3"),
            ("Standard_NC24", 24, 224, 4, "NVIDIA Tesla K80", 12, "Standard_NC64as_T4_v3"),
            ("Standard_NC24r", 24, 224, 4, "NVIDIA Tesla K80", 12, "Standard_NC64as_T4_v3"),
            ("Standard_NC6s_v2", 6, 112, 1, "NVIDIA Tesla P100", 16, "Standard_NC24ads_A100_v4"),
            ("Standard_NC12s_v2", 12, 224, 2, "NVIDIA Tesla P100", 16, "Standard_NC48ads_A100_v4"),
            ("Standard_NC24s_v2", 24, 448, 4, "NVIDIA Tesla P100", 16, "Standard_NC96ads_A100_v4"),
            ("Standard_NC24rs_v2", 24, 448, 4, "NVIDIA Tesla P100", 16, "Standard_NC96ads_A100_v4"),
            ("Standard_ND6s", 6, 112, 1, "NVIDIA Tesla P40", 24, "Standard_NC24ads_A100_v4"),
            ("Standard_ND12s", 12, 224, 2, "NVIDIA Tesla P40", 24, "Standard_NC48ads_A100_v4"),
            ("Standard_ND24s", 24, 448, 4, "NVIDIA Tesla P40", 24, "Standard_NC96ads_A100_v4"),
            ("Standard_ND24rs", 24, 448, 4, "NVIDIA Tesla P40", 24, "Standard_NC96ads_A100_v4"),
            # The reference counts NV v1 GPUs in M60 cards: NV6 has half a card.
            ("Standard_NV6", 6, 56, 0.5, "NVIDIA Tesla M60", 8, "Standard_NV12ads_A10_v5"),
            ("Standard_NV12", 12, 112, 1, "NVIDIA Tesla M60", 8, "Standard_NV36ads_A10_v5"),
            ("Standard_NV24", 24, 224, 2, "NVIDIA Tesla M60", 8, "Standard_NV72ads_A10_v5"),
        )
    ),
)

CPU_SIZES: tuple[VmSize, ...] = (
    VmSize(
        "Standard_D3_v2",
        4,
        14,
        0,
        "",
        0,
        0.293,
        retirement_announced_on=_DSV2_ANNOUNCED,
        retirement_planned_on=_DSV2_PLANNED,
        replacement="Standard_D4s_v5",
        note="azureml-core's default AKS agent size; capacity limited and restricted on new subscriptions.",
    ),
    VmSize(
        "Standard_DS3_v2",
        4,
        14,
        0,
        "",
        0,
        0.293,
        retirement_announced_on=_DSV2_ANNOUNCED,
        retirement_planned_on=_DSV2_PLANNED,
        replacement="Standard_D4s_v5",
    ),
    VmSize("Standard_D4s_v5", 4, 16, 0, "", 0, 0.192),
    VmSize(
        "Standard_DS4_v2",
        8,
        28,
        0,
        "",
        0,
        0.585,
        retirement_announced_on=_DSV2_ANNOUNCED,
        retirement_planned_on=_DSV2_PLANNED,
        replacement="Standard_D4s_v5",
    ),
)

_BY_NAME: dict[str, VmSize] = {s.vm_size.lower(): s for s in (*GPU_SIZES, *CPU_SIZES)}


def vm_size_info(name: str) -> VmSize | None:
    """The size as Lynx knows it; Azure's names are case-insensitive."""
    return _BY_NAME.get((name or "").strip().lower())


def _long_date(value: dt.date) -> str:
    return f"{value.day} {value:%B %Y}"


def gpu_sizes(today: dt.date | None = None) -> list[VmSize]:
    """GPU sizes that can still be created (for form choices), smallest GPU first."""
    today = today or dt.date.today()
    current = [s for s in GPU_SIZES if not s.is_retired(today)]
    return sorted(current, key=lambda s: (s.gpu_count, s.vcpus, s.vm_size))


def retirement_notice(vm_size: str, today: dt.date) -> str:
    """A warning for a size whose retirement is announced but not yet reached ("" otherwise)."""
    info = vm_size_info(vm_size)
    if info is None or info.is_retired(today) or info.retirement_planned_on is None:
        return ""
    return (
        f"{info.vm_size} is scheduled for retirement on {_long_date(info.retirement_planned_on)}"
        f" (announced {_long_date(info.retirement_announced_on)}); plan a move to {info.replacement}."
        if info.retirement_announced_on
        else f"{info.vm_size} is scheduled for retirement on {_long_date(info.retirement_planned_on)}."
    )


def validate_aks_cluster(vm_size: str, node_count: int, cluster_purpose: str, today: dt.date) -> list[str]:
    """Every reason Azure ML would refuse (or Lynx advises against) this AKS cluster; [] when fine."""
    errors: list[str] = []
    if node_count < 1:
        errors.append(f"An AKS cluster needs at least 1 node (got {node_count}).")
    if cluster_purpose not in CLUSTER_PURPOSES:
        errors.append(f"Cluster purpose must be DevTest or FastProd (got {cluster_purpose!r}).")
    info = vm_size_info(vm_size)
    if info is None:
        suggestion = gpu_sizes(today)[0].vm_size
        errors.append(f"Unknown VM size {vm_size!r}. Use a size Azure offers for AKS, e.g. {suggestion}.")
        return errors
    if info.is_retired(today):
        when = info.retirement_date()
        assert when is not None
        replacement = vm_size_info(info.replacement)
        instead = ""
        if replacement is not None:
            detail = f" ({replacement.gpu_label})" if replacement.is_gpu else ""
            instead = f" Use {replacement.vm_size}{detail} instead."
        kind = f" ({info.gpu_kind})" if info.gpu_kind else ""
        errors.append(
            f"{info.vm_size}{kind} was retired on {_long_date(when)} and can no longer be created.{instead}"
        )
    if cluster_purpose == "FastProd" and node_count >= 1:
        errors += _fast_prod_problems(info, node_count)
    return errors


def _fast_prod_problems(info: VmSize, node_count: int) -> list[str]:
    """FastProd needs at least 12 vCPUs in all AND at least 3 nodes."""
    vcpus = node_count * info.vcpus
    if node_count >= FAST_PROD_MIN_NODES and vcpus >= FAST_PROD_MIN_VCPUS:
        return []
    nodes_needed = max(FAST_PROD_MIN_NODES, -(-FAST_PROD_MIN_VCPUS // info.vcpus))
    return [
        f"FastProd clusters need at least {FAST_PROD_MIN_VCPUS} vCPUs and at least {FAST_PROD_MIN_NODES} "
        f"nodes; {node_count} × {info.vm_size} ({info.vcpus} vCPUs each) gives {vcpus} vCPUs on "
        f"{node_count} node{'s' if node_count != 1 else ''}. Use DevTest, or at least {nodes_needed} nodes."
    ]
