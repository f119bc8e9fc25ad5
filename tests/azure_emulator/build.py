"""The image build MMS runs for an AKS web service: solve the environment, or fail the way Azure's build does.

The emulator's own table of what can be installed where (never Lynx's: a mistake in Lynx's table must not be
mirrored here). It is small on purpose: the Python version, the packages whose Python range or CUDA needs
decide whether an image builds and whether its framework can use the node's GPU, and the inference server
the image must contain. Unknown packages are assumed to install.

The result carries the build log (what `operationLog` and `get_logs()` show) and, for a CUDA base image,
whether the pinned GPU framework can use it: an image whose CUDA the framework does not support still
BUILDS (as on Azure) and the framework silently runs on the CPU; the scoring host models that.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

# What azureml-core 1.61 writes into a conda file it creates (CondaDependencies.PYTHON_DEFAULT_VERSION).
SDK_DEFAULT_PYTHON = (3, 10)
INFERENCE_SERVER_PACKAGES = ("azureml-defaults", "azureml-inference-server-http")

# tensorflow X.Y → (oldest Python, newest Python, CUDA major of its GPU build or None for CPU-only).
# From tensorflow.org/install/source#gpu ("Tested build configurations"); 2.21 per the pip metadata.
TENSORFLOW: dict[tuple[int, int], tuple[tuple[int, int], tuple[int, int], int | None]] = {
    (1, 12): ((3, 3), (3, 6), 9),
    (1, 13): ((3, 3), (3, 7), 10),
    (1, 14): ((3, 3), (3, 7), 10),
    (1, 15): ((3, 3), (3, 7), 10),
    (2, 0): ((3, 5), (3, 7), 10),
    (2, 1): ((3, 5), (3, 7), 10),
    (2, 2): ((3, 5), (3, 8), 10),
    (2, 3): ((3, 5), (3, 8), 10),
    (2, 4): ((3, 6), (3, 8), 11),
    (2, 5): ((3, 6), (3, 9), 11),
    (2, 6): ((3, 6), (3, 9), 11),
    (2, 7): ((3, 7), (3, 9), 11),
    (2, 8): ((3, 7), (3, 10), 11),
    (2, 9): ((3, 7), (3, 10), 11),
    (2, 10): ((3, 7), (3, 10), 11),
    (2, 11): ((3, 7), (3, 10), 11),
    (2, 12): ((3, 8), (3, 11), 11),
    (2, 13): ((3, 8), (3, 11), 11),
    (2, 14): ((3, 9), (3, 11), 11),
    (2, 15): ((3, 9), (3, 11), 12),
    (2, 16): ((3, 9), (3, 12), 12),
    (2, 17): ((3, 9), (3, 12), 12),
    (2, 18): ((3, 9), (3, 12), 12),
    (2, 19): ((3, 9), (3, 12), 12),
    (2, 20): ((3, 9), (3, 13), 12),
    (2, 21): ((3, 10), (3, 13), 12),
}
LATEST_TENSORFLOW = max(TENSORFLOW)
# tensorflow-gpu 1.x wheels stop at Python 3.7 (the last one, 1.15); no channel has one for a newer Python.
TENSORFLOW_GPU_1X_NEWEST_PYTHON = (3, 7)
# torch X.Y → (oldest, newest Python). Its wheels bring their own CUDA libraries from pip (nvidia-*-cu12).
TORCH: dict[tuple[int, int], tuple[tuple[int, int], tuple[int, int]]] = {
    (1, 13): ((3, 7), (3, 10)),
    (2, 0): ((3, 8), (3, 11)),
    (2, 1): ((3, 8), (3, 11)),
    (2, 2): ((3, 8), (3, 12)),
    (2, 3): ((3, 8), (3, 12)),
    (2, 4): ((3, 8), (3, 12)),
    (2, 5): ((3, 9), (3, 13)),
    (2, 6): ((3, 9), (3, 13)),
    (2, 7): ((3, 9), (3, 13)),
    (2, 8): ((3, 9), (3, 13)),
    (2, 9): ((3, 10), (3, 14)),
}

_REQUIREMENT = re.compile(
    r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(?:(==|=|>=|~=|<=|<|>)\s*([^\s,;]+))?"
)
_CUDA_IN_IMAGE = re.compile(r"cuda[-_]?(\d+)(?:\.(\d+))?", re.IGNORECASE)


@dataclass(frozen=True)
class Package:
    name: str  # normalised: lower case, dashes
    extras: frozenset[str]
    version: tuple[int, ...] | None  # the pinned X.Y[.Z], None when unpinned or only bounded
    spec: str  # as written
    source: str  # "conda" | "pip"


@dataclass
class BuildResult:
    """One image build: whether it succeeded, its log, and what the node's GPU will look like inside it."""

    digest: str
    ok: bool
    python: tuple[int, int]
    base_image: str
    log: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None
    cuda_major: int | None = None  # of the base image
    gpu_usable: bool = False  # the framework can use the image's CUDA (or brings its own)
    gpu_note: str = ""  # why not, for the logs


def environment_digest(environment: dict[str, Any]) -> str:
    """Azure reuses an image whose environment definition hashes the same."""
    return hashlib.sha256(json.dumps(environment, sort_keys=True).encode()).hexdigest()[:16]


def _version(text: str | None) -> tuple[int, ...] | None:
    if not text or not re.match(r"^\d+(\.\d+)*", text):
        return None
    return tuple(int(p) for p in re.findall(r"\d+", text.split("*")[0])[:3])


def _package(spec: str, source: str) -> Package | None:
    if spec.strip().startswith("-"):  # pip options (--extra-index-url …)
        return None
    found = _REQUIREMENT.match(spec)
    if found is None:
        return None
    name, extras, op, version = found.groups()
    pinned = _version(version) if op in ("==", "=", "~=") else None
    return Package(
        name=re.sub(r"[-_.]+", "-", name).lower(),
        extras=frozenset(e.strip().lower() for e in (extras or "").strip("[]").split(",") if e.strip()),
        version=pinned,
        spec=spec.strip(),
        source=source,
    )


def packages(environment: dict[str, Any]) -> list[Package]:
    """Conda and pip packages of an MMS environment (`python.condaDependencies`)."""
    conda = ((environment.get("python") or {}).get("condaDependencies")) or {}
    found: list[Package] = []
    for item in conda.get("dependencies") or []:
        if isinstance(item, str):
            pkg = _package(item, "conda")
            if pkg:
                found.append(pkg)
        elif isinstance(item, dict):
            for spec in item.get("pip") or []:
                pkg = _package(str(spec), "pip")
                if pkg:
                    found.append(pkg)
    return found


def python_version(pkgs: list[Package]) -> tuple[int, int]:
    for pkg in pkgs:
        if pkg.name == "python" and pkg.version and len(pkg.version) >= 2:
            return pkg.version[0], pkg.version[1]
    return SDK_DEFAULT_PYTHON


def cuda_major(base_image: str) -> int | None:
    """The CUDA major version an image name says (`openmpi4.1.0-cuda11.8-cudnn8-…`, `…cuda12.4…`)."""
    found = _CUDA_IN_IMAGE.search(base_image or "")
    return int(found.group(1)) if found else None


def _py(v: tuple[int, ...]) -> str:
    return ".".join(map(str, v))


def _unsolvable(pkg: Package, python: tuple[int, int]) -> list[str] | None:
    """The solver's own words when `pkg` has no build for this Python, else None."""
    xy = pkg.version[:2] if pkg.version and len(pkg.version) >= 2 else None
    supported: tuple[tuple[int, int], tuple[int, int]] | None = None
    if pkg.name == "tensorflow-gpu" and xy and xy[0] == 1:
        supported = ((3, 3), TENSORFLOW_GPU_1X_NEWEST_PYTHON)
    elif pkg.name in ("tensorflow", "tensorflow-gpu", "tensorflow-cpu") and xy in TENSORFLOW:
        low, high, _cuda = TENSORFLOW[xy]
        supported = (low, high)
    elif pkg.name == "torch" and xy in TORCH:
        supported = TORCH[xy]
    if supported is None or supported[0] <= python <= supported[1]:
        return None
    if pkg.source == "conda":
        return [
            "Solving environment: ...working... failed",
            "",
            "ResolvePackageNotFound: ",
            f"  - {pkg.spec}",
            "",
        ]
    return [
        f"ERROR: Ignored the versions that require a different python version: {pkg.spec.split('=')[-1]} "
        f"Requires-Python >={_py(supported[0])},<{supported[1][0]}.{supported[1][1] + 1}",
        f"ERROR: Could not find a version that satisfies the requirement {pkg.spec} (from versions: none)",
        f"ERROR: No matching distribution found for {pkg.spec}",
        "",
        "Pip subprocess error:",
        f"ERROR: No matching distribution found for {pkg.spec}",
        "CondaEnvException: Pip failed",
    ]


def _gpu_support(pkgs: list[Package], image_cuda: int | None) -> tuple[bool, str]:
    """Whether the GPU framework the environment pins can use this image's CUDA (rule: the framework's CUDA
    major must match the image's unless the framework brings its own libraries from pip)."""
    if image_cuda is None:
        return False, "the base image has no CUDA"
    for pkg in pkgs:
        if pkg.name == "torch":
            return True, "torch brings its CUDA libraries from pip (nvidia-*-cu12)"
        if pkg.name not in ("tensorflow", "tensorflow-gpu"):
            continue
        xy = pkg.version[:2] if pkg.version and len(pkg.version) >= 2 else LATEST_TENSORFLOW
        if xy not in TENSORFLOW:
            return True, f"{pkg.spec}: not in the emulator's table, assumed to match the image"
        needs = TENSORFLOW[xy][2]
        if needs == 12 and "and-cuda" in pkg.extras:
            return True, f"{pkg.spec} brings CUDA 12 libraries from pip (the and-cuda extra)"
        if needs == image_cuda:
            return True, f"{pkg.spec} was built for CUDA {needs}, the image has CUDA {image_cuda}"
        return False, (
            f"{pkg.spec} was built for CUDA {needs} and the image has CUDA {image_cuda}: TensorFlow cannot "
            "load its GPU libraries and runs on the CPU"
        )
    return True, "no GPU framework pinned"


def build_failed_error(log_uri: str) -> dict[str, Any]:
    """MMS's error for a failed image build (v1); the details are in the build log at `log_uri`."""
    return {
        "code": "EnvironmentBuildFailed",
        "statusCode": 400,
        "message": "Failed Building the Environment.",
        "details": [{"code": "BuildLog", "message": f"Build log: {log_uri}"}] if log_uri else [],
    }


def build_image(environment: dict[str, Any], *, log_uri: str = "", stamp: str = "") -> BuildResult:
    """Build (in the emulator's mind) the image for an MMS `environmentImageRequest.environment`."""
    pkgs = packages(environment)
    python = python_version(pkgs)
    base_image = ((environment.get("docker") or {}).get("baseImage")) or ""
    image_cuda = cuda_major(base_image)
    result = BuildResult(
        digest=environment_digest(environment),
        ok=True,
        python=python,
        base_image=base_image,
        cuda_major=image_cuda,
    )
    conda_specs = [p.spec for p in pkgs if p.source == "conda"]
    pip_specs = [p.spec for p in pkgs if p.source == "pip"]
    result.log += [
        f"{stamp}Step 1/6 : FROM {base_image}",
        f"{stamp}Step 2/6 : conda env create -p /azureml-envs/azureml_{result.digest} "
        "-f conda_dependencies.yml",
        f"{stamp}Collecting package metadata (repodata.json): ...working... done",
        f"{stamp}Python {_py(python)}; conda: {', '.join(conda_specs) or '-'}; "
        f"pip: {', '.join(pip_specs) or '-'}",
    ]
    for pkg in pkgs:
        failure = _unsolvable(pkg, python)
        if failure:
            return _fail(result, [stamp + line for line in failure], log_uri)
    names = {p.name for p in pkgs}
    if not names & set(INFERENCE_SERVER_PACKAGES):
        return _fail(
            result,
            [
                f"{stamp}Step 5/6 : RUN /azureml-envs/azureml_{result.digest}/bin/python -c "
                "'import azureml_inference_server_http'",
                f"{stamp}ModuleNotFoundError: No module named 'azureml_inference_server_http'",
                f"{stamp}The environment contains neither azureml-defaults nor "
                "azureml-inference-server-http: "
                'please make sure the "azureml-defaults" pip package is included in your environment.',
            ],
            log_uri,
        )
    result.gpu_usable, result.gpu_note = _gpu_support(pkgs, image_cuda)
    result.log += [
        f"{stamp}Step 6/6 : ENV AZUREML_CONDA_ENVIRONMENT_PATH=/azureml-envs/azureml_{result.digest}",
        f"{stamp}Successfully built {result.digest}",
        f"{stamp}Image build succeeded",
    ]
    return result


def _fail(result: BuildResult, lines: list[str], log_uri: str) -> BuildResult:
    result.ok = False
    result.log += lines + [
        "The command '/bin/sh -c conda env create' returned a non-zero code: 1",
        "Build failed",
    ]
    result.error = build_failed_error(log_uri)
    return result
