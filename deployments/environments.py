"""Entry-script and conda-environment defaults for new deployments, and checks for edited environments.

On Azure ML the conda file builds the image the entry script runs in. The local target does not build
anything: its replicas run in Lynx's own scoring runtime (this virtualenv), so the check also says which
packages the environment asks for that the runtime lacks, or has at another version.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

DEFAULT_ENTRY_SCRIPT = Path(__file__).resolve().parent.parent / "scoring" / "entry_scripts" / "score_tf2.py"
MAX_ENVIRONMENT_BYTES = 64 * 1024
MAX_ERRORS_SHOWN = 10
# azureml-defaults is a metapackage; for scoring what matters is the inference server it brings.
INFERENCE_SERVER_PACKAGES = ("azureml-defaults", "azureml-inference-server-http")
# Conda packages that are the platform rather than Python packages the runtime would import.
_NOT_PYTHON_PACKAGES = {
    "python",
    "pip",
    "setuptools",
    "wheel",
    "cudatoolkit",
    "cudnn",
    "cuda",
    "nccl",
    "libgcc",
}


def runtime_version(package: str) -> str:
    """The version of a package in Lynx's own scoring runtime (what local replicas run with)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


def default_entry_script() -> str:
    return DEFAULT_ENTRY_SCRIPT.read_text()


def default_environment_yaml(name: str = "lynx-inference", *, gpu: bool = False) -> str:
    """The how-to's conda file, with `tensorflow` in place of the removed `tensorflow-gpu`.

    For a GPU deployment TensorFlow comes with its `and-cuda` extra: since 2.15 its wheel loads CUDA 12 and
    cuDNN 9 from the nvidia-*-cu12 packages that extra brings, and without them it silently runs on the CPU.
    """
    tf = runtime_version("tensorflow")
    tensorflow = "tensorflow[and-cuda]" if gpu else "tensorflow"
    spec = {
        "name": name,
        "channels": ["conda-forge"],
        "dependencies": [
            "python=3.11",
            "pip",
            {
                "pip": [
                    "azureml-defaults",
                    "azureml-contrib-services",
                    f"{tensorflow}=={tf}" if tf else tensorflow,
                    "numpy",
                    "ujson",
                    "Pillow",
                ]
            },
        ],
    }
    return yaml.safe_dump(spec, sort_keys=False)


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@cache
def _installed() -> dict[str, str]:
    return {
        _normalize(d.metadata["Name"] or ""): d.version
        for d in metadata.distributions()
        if d.metadata["Name"]
    }


@dataclass(frozen=True)
class Package:
    name: str  # normalised (PEP 503)
    spec: str  # as written
    specifier: str  # e.g. "==2.2.0", "" when unpinned
    source: str  # "conda" | "pip"
    extras: tuple[str, ...] = ()  # pip extras, e.g. ("and-cuda",)


@dataclass
class EnvironmentCheck:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    packages: list[Package] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


_CONDA_SPEC = re.compile(r"^(?:[\w.-]+::)?(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)\s*(?P<version>.*)$")


def _conda_package(spec: str) -> Package | None:
    match = _CONDA_SPEC.match(spec.strip())
    if not match:
        return None
    version = match["version"].strip()
    # conda writes "numpy=1.19" (a prefix match) or "numpy 1.19 py38_0"; keep it comparable.
    if version and version[0] not in "=<>!~":
        version = "=" + version.split()[0]
    return Package(_normalize(match["name"]), spec, version, "conda")


def _pip_package(spec: str) -> Package | None:
    spec = spec.strip()
    if not spec or spec.startswith(("-", "git+", "http:", "https:", "file:", ".", "/")):
        return None  # options, URLs and paths: nothing to compare
    try:
        requirement = Requirement(spec)
    except InvalidRequirement:
        return None
    extras = tuple(sorted(_normalize(e) for e in requirement.extras))
    return Package(_normalize(requirement.name), spec, str(requirement.specifier), "pip", extras)


class _AliasFreeLoader(yaml.SafeLoader):
    """SafeLoader without anchors and aliases: a conda file never needs them, and nine nested aliases in a
    few hundred bytes ("billion laughs") make a structure whose every walk or repr runs to gigabytes."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise _AliasRefused()
        return super().compose_node(parent, index)


class _AliasRefused(yaml.YAMLError):
    pass


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _parse(text: str, check: EnvironmentCheck) -> dict | None:
    if len(text.encode()) > MAX_ENVIRONMENT_BYTES:
        check.errors.append(f"The environment file is over {MAX_ENVIRONMENT_BYTES // 1024} KiB.")
        return None
    try:
        data = yaml.load(text, Loader=_AliasFreeLoader)  # noqa: S506 - a SafeLoader, less aliases
    except _AliasRefused:
        check.errors.append(
            "The environment uses YAML aliases (*name): conda files do not need them; write the values out."
        )
        return None
    except RecursionError:
        check.errors.append("The environment is nested too deeply to be a conda file.")
        return None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        check.errors.append(f"The environment is not valid YAML ({where}{problem[:200]}).")
        return None
    if not isinstance(data, dict):
        check.errors.append("The environment must be a YAML mapping with name, channels and dependencies.")
        return None
    return data


def _collect(data: dict, check: EnvironmentCheck) -> None:
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        check.errors.append("The environment needs a `name` (a string), as conda requires.")
    dependencies = data.get("dependencies")
    if not isinstance(dependencies, list) or not dependencies:
        check.errors.append(
            "The environment needs `dependencies`: a list of conda packages and a `pip:` list."
        )
        return
    channels = data.get("channels")
    if channels is not None and not (
        isinstance(channels, list) and all(isinstance(c, str) for c in channels)
    ):
        check.errors.append("`channels` must be a list of channel names.")
    for item in dependencies:
        if isinstance(item, str):
            if package := _conda_package(item):
                check.packages.append(package)
        elif isinstance(item, dict) and set(item) == {"pip"} and isinstance(item["pip"], list):
            for spec in item["pip"]:
                if not isinstance(spec, str):
                    check.errors.append(f"A pip requirement must be a string, not {_short(spec)}.")
                elif package := _pip_package(spec):
                    check.packages.append(package)
        else:
            check.errors.append(
                f"Unexpected entry in dependencies: {_short(item)}. Use package strings and one `pip:` list."
            )


def _satisfies(installed: str, package: Package) -> bool:
    if not package.specifier:
        return True
    if package.source == "conda":
        wanted = package.specifier.lstrip("=").rstrip("*").rstrip(".")
        if package.specifier.startswith("=") and not package.specifier.startswith("=="):
            return installed == wanted or installed.startswith(wanted + ".")
        specifier = package.specifier
    else:
        specifier = package.specifier
    try:
        return Version(installed) in SpecifierSet(specifier)
    except (InvalidSpecifier, InvalidVersion):
        return True  # a spec we cannot evaluate: say nothing rather than something wrong


def _warn(check: EnvironmentCheck) -> None:
    names = {p.name for p in check.packages}
    for package in check.packages:
        if package.name == "tensorflow-gpu":
            check.warnings.append(
                f"{package.spec} is an empty stub now: TensorFlow stopped publishing it after 2.11, and "
                "its later releases only fail to install. `tensorflow` has included GPU support since 2.1: "
                "ask for `tensorflow` instead."
            )
    if not names & set(INFERENCE_SERVER_PACKAGES):
        check.warnings.append(
            "Neither azureml-defaults nor azureml-inference-server-http is listed: "
            "Azure ML's image needs the inference server to run score.py, "
            "and the deployment will not start without it. Add azureml-defaults."
        )
    installed, lacking, other_versions = _installed(), [], []
    for package in check.packages:
        if package.name in _NOT_PYTHON_PACKAGES or package.name in INFERENCE_SERVER_PACKAGES:
            continue
        if package.name == "tensorflow-gpu":
            continue  # warned above; the runtime's tensorflow stands in for it
        have = installed.get(package.name)
        if have is None:
            lacking.append(package.spec)
        elif not _satisfies(have, package):
            other_versions.append(f"{package.spec} (runtime: {have})")
    python = next((p for p in check.packages if p.name == "python"), None)
    runtime_python = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    if python is not None and not _satisfies(runtime_python, python):
        other_versions.append(f"{python.spec} (runtime: Python {runtime_python})")
    tf = runtime_version("tensorflow") or "not installed"
    if lacking:
        check.warnings.append(
            f"The local runtime lacks {', '.join(lacking)}. The local target runs Lynx's own scoring runtime "
            f"(TensorFlow {tf}), not this environment: a score.py that imports them fails there "
            "(Azure builds this environment and is not affected)."
        )
    if other_versions:
        check.warnings.append(
            f"The local runtime has other versions than asked for: {'; '.join(other_versions)}. "
            "Local replicas run with the runtime's versions."
        )


def check_environment(text: str) -> EnvironmentCheck:
    """Errors (the file cannot be used) and warnings (it can, but read this) for a conda environment file."""
    check = EnvironmentCheck()
    data = _parse(text, check)
    if data is None:
        return check
    _collect(data, check)
    if check.errors:
        if len(check.errors) > MAX_ERRORS_SHOWN:  # a file of 5 000 bad entries: the first few say it
            hidden = len(check.errors) - MAX_ERRORS_SHOWN
            check.errors[MAX_ERRORS_SHOWN:] = [f"…and {hidden} more errors like these."]
        return check
    _warn(check)
    return check
