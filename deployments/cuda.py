"""CUDA: a GPU deployment's base image and the framework in its environment must agree.

On Azure ML a GPU deployment's image is built FROM a CUDA base image. A framework whose wheel was built for
another CUDA major cannot load its GPU libraries there and silently runs on the CPU, while the service still
goes Healthy (docs/shared reference azure-2026.md, 1.1). azureml-core's DEFAULT_GPU_IMAGE is CUDA 11.8 /
cuDNN 8; TensorFlow has needed CUDA 12 since 2.15. Sources: the AzureML-Containers repository (images) and
each TensorFlow release's tested build configurations (tensorflow/python/platform/build_info.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from deployments.environments import EnvironmentCheck, Package, check_environment, runtime_version

# azureml-core 1.61's DEFAULT_GPU_IMAGE (untagged): CUDA 11.8, cuDNN 8.
AZUREML_DEFAULT_GPU_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04"
# What Lynx builds GPU deployments on: CUDA 12, which TensorFlow >= 2.15 and current PyTorch builds use.
GPU_BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi5.0-cuda12.4-ubuntu22.04"

# GPU base image → its CUDA major version.
GPU_IMAGE_CUDA: dict[str, int] = {
    AZUREML_DEFAULT_GPU_IMAGE: 11,
    "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.1-cudnn8-ubuntu20.04": 11,
    "mcr.microsoft.com/azureml/openmpi5.0-cuda12.4-ubuntu22.04": 12,
    "mcr.microsoft.com/azureml/openmpi5.0-cuda12.5-ubuntu22.04": 12,
    "mcr.microsoft.com/azureml/openmpi5.0-cuda12.6-ubuntu24.04": 12,
}

# TensorFlow release → the CUDA major its GPU build needs, newest first (build_info.py of each release).
TENSORFLOW_CUDA: tuple[tuple[str, int], ...] = (
    (">=2.15", 12),  # 2.15: CUDA 12.2; 2.18-2.21: CUDA 12.5, cuDNN 9
    (">=2.4,<2.15", 11),  # 2.4: 11.0; 2.5-2.11: 11.2; 2.12-2.14: 11.8
    (">=2.1,<2.4", 10),  # 10.1
    (">=1.13,<2.1", 10),  # 10.0
    (">=1.5,<1.13", 9),  # 9.0 (the how-to's tensorflow-gpu 1.12)
)
# TensorFlow's releases with a GPU build (minor versions, 1.5 to 2.21): what a specifier such as
# `tensorflow>=2.10` or `tensorflow<2.15` resolves against, as pip would pick the highest it allows.
TENSORFLOW_RELEASES: tuple[Version, ...] = tuple(
    Version(v) for v in [*(f"1.{minor}" for minor in range(5, 16)), *(f"2.{minor}" for minor in range(0, 22))]
)
# The extra that brings TensorFlow's own CUDA libraries (nvidia-*-cu12); with it, the image's CUDA does not
# matter, only the node's driver.
TENSORFLOW_CUDA_EXTRA = "and-cuda"
_TORCH_BUILD = re.compile(r"\+(?P<build>cu(?P<cuda>\d{2,3})|cpu)\b")


def image_cuda_major(image: str) -> int | None:
    """The CUDA major of a GPU base image: the table's word, else what its name says (…-cuda12.4-…)."""
    if image in GPU_IMAGE_CUDA:
        return GPU_IMAGE_CUDA[image]
    match = re.search(r"cuda(\d+)\.\d+", image)
    return int(match.group(1)) if match else None


def _pip_specifier(package: Package) -> SpecifierSet:
    """The package's version constraint as a pip SpecifierSet; conda's `=1.12` (a prefix match) becomes
    `==1.12.*`. Raises InvalidSpecifier when it reads as neither."""
    parts = []
    for part in package.specifier.replace(" ", "").split(","):
        if package.source == "conda" and re.fullmatch(r"=\d+(\.\d+)*", part):
            part = f"={part}.*"
        parts.append(part)
    return SpecifierSet(",".join(parts))


def resolved_version(package: Package, releases: tuple[Version, ...]) -> Version | None:
    """The highest version the package's constraint allows among the known `releases` and the versions it
    names itself (so `==2.14.1` is 2.14.1), as pip or conda would pick it: `>=2.10` → the newest,
    `<2.15` → 2.14, `!=2.0` → the newest. Unconstrained or unreadable: the newest release. None when
    nothing known satisfies it (no release with a GPU build)."""
    try:
        specifier = _pip_specifier(package)
    except InvalidSpecifier:
        return max(releases)
    named = {Version(spec.version.removesuffix(".*")) for spec in specifier if _is_version(spec.version)}
    allowed = [v for v in {*releases, *named} if specifier.contains(v, prereleases=True)]
    return max(allowed) if allowed else None


def _is_version(text: str) -> bool:
    try:
        Version(text.removesuffix(".*"))
    except InvalidVersion:
        return False
    return True


def tensorflow_cuda_major(version: Version | None) -> int | None:
    """The CUDA major a TensorFlow release's GPU build needs; unpinned means the newest (CUDA 12)."""
    if version is None:
        return TENSORFLOW_CUDA[0][1]
    for specifier, cuda in TENSORFLOW_CUDA:
        if version in SpecifierSet(specifier):
            return cuda
    return None  # older than anything with a GPU build Lynx knows


@dataclass(frozen=True)
class FrameworkCuda:
    """What a framework in the environment needs from the GPU base image."""

    package: Package
    cuda_major: int | None  # the CUDA its wheel was built for; None: no GPU build at all
    brings_own_cuda: bool  # its own CUDA libraries come with it (pip extra, bundled wheel)


def framework_cuda(package: Package) -> FrameworkCuda | None:
    """The CUDA a GPU framework's wheel needs; None for packages that are not GPU frameworks."""
    if package.name in ("tensorflow", "tensorflow-gpu"):
        own = TENSORFLOW_CUDA_EXTRA in package.extras
        version = resolved_version(package, TENSORFLOW_RELEASES)
        return FrameworkCuda(package, tensorflow_cuda_major(version) if version else None, own)
    if package.name == "torch":
        build = _TORCH_BUILD.search(package.specifier)
        if build and build["build"] == "cpu":
            return FrameworkCuda(package, None, False)
        cuda = int(build["cuda"][:2]) if build else 12  # PyPI's Linux wheels: CUDA 12 since torch 2.1
        # PyTorch wheels carry their CUDA runtime (bundled, or as nvidia-* dependencies): only the driver
        # must be new enough.
        return FrameworkCuda(package, cuda, True)
    return None


def check_gpu_environment(text: str, image: str = GPU_BASE_IMAGE) -> EnvironmentCheck:
    """Whether a GPU deployment's frameworks can use the CUDA of `image`: errors refuse the deployment (it
    would run on the CPU or not at all), each saying what to change; warnings are worth reading."""
    check = check_environment(text)
    if not check.ok:
        return check
    check.warnings = []  # check_environment's warnings are shown by the form already
    image_cuda = image_cuda_major(image)
    for framework in filter(None, map(framework_cuda, check.packages)):
        _check_framework_cuda(framework, image, image_cuda, check)
    return check


def _check_framework_cuda(
    framework: FrameworkCuda, image: str, image_cuda: int | None, check: EnvironmentCheck
) -> None:
    spec = framework.package.spec
    if framework.cuda_major is None:
        check.errors.append(
            f"{spec} has no GPU build for CUDA {image_cuda or '?'} ({image}): the deployment would run on "
            "the CPU. Ask for a CUDA build instead (tensorflow[and-cuda]>=2.15, or torch without +cpu)."
        )
        return
    if framework.brings_own_cuda:
        if framework.package.name == "tensorflow" and framework.cuda_major < 12:
            check.errors.append(
                f"{spec}: its and-cuda extra brings CUDA {framework.cuda_major} libraries before TensorFlow "
                "2.15; ask for tensorflow[and-cuda]>=2.15 (CUDA 12)."
            )
        return
    if image_cuda is not None and framework.cuda_major != image_cuda:
        newest = runtime_version("tensorflow") or "2.21.0"
        check.errors.append(
            f"{spec} needs CUDA {framework.cuda_major}, but the GPU image {image} has CUDA {image_cuda}: "
            f"TensorFlow would not find its GPU libraries and would run on the CPU. Ask for "
            f"tensorflow[and-cuda]=={newest} (it brings its own CUDA 12 libraries) instead of {spec}."
        )
    elif framework.package.name == "tensorflow":
        check.warnings.append(
            f"{spec} without the and-cuda extra relies on the image's CUDA {image_cuda} and cuDNN libraries; "
            f"tensorflow[and-cuda] brings the exact ones it was built with."
        )
