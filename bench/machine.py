"""What the benchmark ran on: CPU, cores, memory, GPU (as nvidia-smi lists it), load, versions."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from typing import Any

# FP32 multiply-adds one core can retire per cycle: two 256-bit FMA units (AVX2: 2 x 8) or two 512-bit
# ones (AVX-512: 2 x 16). A peak, which convolutions on a CPU reach a fraction of.
FMA_PER_CYCLE = {"avx512f": 32, "avx2": 16}


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def _mem_total_gib() -> float | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def gpus() -> list[str]:
    """'name, memory' per NVIDIA GPU nvidia-smi lists; [] without a driver."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=15,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def describe() -> dict[str, Any]:
    cpu = _cpuinfo()
    cores = len(os.sched_getaffinity(0))
    flags = set(cpu.get("flags", "").split())
    vector = next((name for name in ("avx512f", "avx2") if name in flags), None)
    mhz = float(cpu.get("cpu MHz") or 0) or None
    peak_gflops = None
    if vector and mhz:
        # multiply-adds x 2 = FLOPs
        peak_gflops = round(cores * mhz / 1000 * FMA_PER_CYCLE[vector] * 2, 1)

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "cpu": cpu.get("model name", platform.processor() or "unknown")
        + (f" (family {cpu['cpu family']}, model {cpu['model']})" if "cpu family" in cpu else ""),
        "cores": cores,
        "cpu_mhz": mhz,
        "vector_extension": vector,
        "peak_fp32_gflops": peak_gflops,
        "memory_gib": round(_mem_total_gib() or 0, 1),
        "gpus": gpus(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "tensorflow": version("tensorflow"),
        "django": version("django"),
        "azureml_inference_server_http": version("azureml-inference-server-http"),
    }


def summary(machine: dict[str, Any]) -> str:
    peak = machine["peak_fp32_gflops"]
    lines = [
        f"machine: {machine['cpu']}, {machine['cores']} cores"
        + (f" at {machine['cpu_mhz']:.0f} MHz" if machine["cpu_mhz"] else "")
        + (f" ({machine['vector_extension']}: nominal FP32 peak {peak:.0f} GFLOP/s there)" if peak else "")
        + f", {machine['memory_gib']} GiB memory",
        f"gpu: {'; '.join(machine['gpus']) if machine['gpus'] else 'none (nvidia-smi finds no GPU)'}",
        f"load average at start: {' '.join(str(x) for x in machine['load_average'])}",
        f"software: Python {machine['python']}, TensorFlow {machine['tensorflow']}, "
        f"Django {machine['django']}, azureml-inference-server-http "
        f"{machine['azureml_inference_server_http']}, kernel {machine['kernel']}",
    ]
    return "\n".join(lines)
