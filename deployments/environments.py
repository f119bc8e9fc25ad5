"""Entry-script and conda-environment defaults for new deployments."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import yaml

DEFAULT_ENTRY_SCRIPT = Path(__file__).resolve().parent.parent / "scoring" / "entry_scripts" / "score_tf2.py"


def runtime_version(package: str) -> str:
    """The version of a package in Lynx's own scoring runtime (what local replicas run with)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


def default_entry_script() -> str:
    return DEFAULT_ENTRY_SCRIPT.read_text()


def default_environment_yaml(name: str = "lynx-inference") -> str:
    """The how-to's conda file, with `tensorflow` in place of the removed `tensorflow-gpu`."""
    tf = runtime_version("tensorflow")
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
                    f"tensorflow=={tf}" if tf else "tensorflow",
                    "numpy",
                    "ujson",
                    "Pillow",
                ]
            },
        ],
    }
    return yaml.safe_dump(spec, sort_keys=False)
