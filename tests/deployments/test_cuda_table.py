"""The CUDA table: GPU base images and frameworks agree on CUDA, or a GPU deployment is refused with what to
change (a TensorFlow that cannot load its CUDA libraries silently runs on the CPU)."""

from __future__ import annotations

import pytest
import yaml
from packaging.version import Version

from deployments.cuda import (
    AZUREML_DEFAULT_GPU_IMAGE,
    GPU_BASE_IMAGE,
    TENSORFLOW_RELEASES,
    check_gpu_environment,
    image_cuda_major,
    resolved_version,
    tensorflow_cuda_major,
)
from deployments.environments import check_environment, default_environment_yaml, runtime_version


def environment(*pip: str, conda: tuple[str, ...] = ("python=3.11",)) -> str:
    return yaml.safe_dump(
        {"name": "env", "dependencies": [*conda, "pip", {"pip": ["azureml-defaults", *pip]}]}, sort_keys=False
    )


@pytest.mark.parametrize(
    ("image", "cuda"),
    [
        (AZUREML_DEFAULT_GPU_IMAGE, 11),
        ("mcr.microsoft.com/azureml/openmpi5.0-cuda12.4-ubuntu22.04", 12),
        ("mcr.microsoft.com/azureml/openmpi5.0-cuda12.6-ubuntu24.04", 12),
        ("myregistry.azurecr.io/base:cuda12.8-runtime", 12),  # not in the table: its name says it
        ("mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04", None),  # a CPU image
    ],
)
def test_each_gpu_image_has_its_cuda_major(image, cuda) -> None:
    assert image_cuda_major(image) == cuda


@pytest.mark.parametrize(
    ("version", "cuda"),
    [
        ("2.21.0", 12),
        ("2.15.0", 12),
        ("2.14.1", 11),
        ("2.12.0", 11),
        ("2.4.0", 11),  # TensorFlow 2.4 was built with CUDA 11.0
        ("2.3.0", 10),
        ("1.12.0", 9),
        (None, 12),
    ],
)
def test_each_tensorflow_release_needs_its_cuda_major(version, cuda) -> None:
    assert tensorflow_cuda_major(Version(version) if version else None) == cuda


def test_lynx_builds_gpu_deployments_on_a_cuda_12_image_not_the_sdks_cuda_11_default() -> None:
    assert image_cuda_major(GPU_BASE_IMAGE) == 12
    assert image_cuda_major(AZUREML_DEFAULT_GPU_IMAGE) == 11


def test_the_default_gpu_environment_asks_for_tensorflow_with_its_own_cuda_libraries() -> None:
    spec = yaml.safe_load(default_environment_yaml(gpu=True))
    pip = next(item["pip"] for item in spec["dependencies"] if isinstance(item, dict))
    assert f"tensorflow[and-cuda]=={runtime_version('tensorflow')}" in pip
    assert check_gpu_environment(default_environment_yaml(gpu=True)).errors == []


def test_tensorflow_2_21_without_and_cuda_on_the_sdks_cuda_11_image_is_refused() -> None:
    check = check_gpu_environment(environment("tensorflow==2.21.0"), AZUREML_DEFAULT_GPU_IMAGE)

    assert len(check.errors) == 1
    assert "needs CUDA 12" in check.errors[0] and "has CUDA 11" in check.errors[0]
    assert "tensorflow[and-cuda]==" in check.errors[0]  # what to change


def test_tensorflow_with_and_cuda_runs_on_any_gpu_image() -> None:
    assert check_gpu_environment(environment("tensorflow[and-cuda]==2.21.0"), AZUREML_DEFAULT_GPU_IMAGE).ok


def test_an_edited_environment_pinning_a_cuda_11_tensorflow_is_refused_on_the_cuda_12_image() -> None:
    check = check_gpu_environment(environment("tensorflow==2.12.0"))
    assert not check.ok and "tensorflow==2.12.0 needs CUDA 11" in check.errors[0]


def test_the_how_tos_tensorflow_gpu_1_12_is_refused_for_a_gpu_deployment() -> None:
    text = environment(conda=("python=3.10", "tensorflow-gpu=1.12"))
    check = check_gpu_environment(text)
    assert not check.ok and "tensorflow-gpu=1.12 needs CUDA 9" in check.errors[0]


def test_tensorflow_without_the_extra_on_a_cuda_12_image_passes_with_a_warning() -> None:
    check = check_gpu_environment(environment("tensorflow==2.21.0"))
    assert check.ok and "and-cuda" in check.warnings[0]


@pytest.mark.parametrize(
    ("torch", "ok"),
    [
        ("torch==2.5.1+cu124", True),
        ("torch==2.1.0+cu118", True),
        ("torch==2.5.1", True),
        ("torch==2.5.1+cpu", False),
    ],
)
def test_torch_builds_bring_their_cuda_runtime_except_the_cpu_ones(torch, ok) -> None:
    check = check_gpu_environment(environment(torch))
    assert check.ok is ok
    if not ok:
        assert "no GPU build" in check.errors[0]


def test_a_cpu_only_environment_has_nothing_to_agree_on() -> None:
    assert check_gpu_environment(environment("numpy", "Pillow")).ok


# --- specifiers resolve to the highest release they allow, as pip would pick it ---------------------------


@pytest.mark.parametrize(
    ("requirement", "resolved"),
    [
        ("tensorflow>=2.10", "2.21"),
        ("tensorflow<2.15", "2.14"),
        ("tensorflow!=2.0", "2.21"),
        ("tensorflow>=2.10,<2.13", "2.12"),
        ("tensorflow==2.14.1", "2.14.1"),
        ("tensorflow~=2.12", "2.21"),
        ("tensorflow", "2.21"),
    ],
)
def test_a_tensorflow_specifier_resolves_to_the_highest_release_it_allows(requirement, resolved) -> None:
    check = check_environment(environment(requirement))
    (package,) = [p for p in check.packages if p.name == "tensorflow"]
    assert resolved_version(package, TENSORFLOW_RELEASES) == Version(resolved)


def test_a_conda_prefix_pin_resolves_within_its_prefix() -> None:
    check = check_environment(environment(conda=("python=3.7", "tensorflow-gpu=1.12")))
    (package,) = [p for p in check.packages if p.name == "tensorflow-gpu"]
    assert resolved_version(package, TENSORFLOW_RELEASES) == Version("1.12")


def test_tensorflow_at_least_2_10_is_cuda_12_and_accepted_on_the_cuda_12_image_or_with_and_cuda() -> None:
    assert check_gpu_environment(environment("tensorflow>=2.10")).ok
    assert check_gpu_environment(environment("tensorflow[and-cuda]>=2.10"), AZUREML_DEFAULT_GPU_IMAGE).ok


def test_tensorflow_at_least_2_10_is_not_read_as_2_10_so_the_cuda_11_image_is_refused() -> None:
    check = check_gpu_environment(environment("tensorflow>=2.10"), AZUREML_DEFAULT_GPU_IMAGE)
    assert not check.ok and "tensorflow>=2.10 needs CUDA 12" in check.errors[0]


def test_tensorflow_below_2_15_is_cuda_11_and_refused_on_the_cuda_12_image() -> None:
    check = check_gpu_environment(environment("tensorflow<2.15"))
    assert not check.ok and "tensorflow<2.15 needs CUDA 11" in check.errors[0]


def test_tensorflow_below_2_15_with_and_cuda_is_refused_as_it_brings_cuda_11() -> None:
    check = check_gpu_environment(environment("tensorflow[and-cuda]<2.15"))
    assert not check.ok and "brings CUDA 11 libraries before TensorFlow 2.15" in check.errors[0]


def test_tensorflow_not_2_0_is_the_newest_release() -> None:
    assert check_gpu_environment(environment("tensorflow!=2.0")).ok
    check = check_gpu_environment(environment("tensorflow!=2.0"), AZUREML_DEFAULT_GPU_IMAGE)
    assert not check.ok and "needs CUDA 12" in check.errors[0]


def test_a_specifier_no_release_with_a_gpu_build_satisfies_is_refused() -> None:
    check = check_gpu_environment(environment("tensorflow<1.5"))
    assert not check.ok and "has no GPU build" in check.errors[0]
