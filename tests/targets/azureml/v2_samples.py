"""Microsoft's managed online endpoint sample (vendored in v2_sample/) and small entry scripts for v2 tests.

`sample_model_dir` trains the sample's model under its own file name; the scripts below are the failure modes
a user's score.py can have, each as small as it can be.
"""

from __future__ import annotations

from pathlib import Path

SAMPLE_DIR = Path(__file__).resolve().with_name("v2_sample")
SAMPLE_SCORING_DIR = SAMPLE_DIR / "onlinescoring"
SAMPLE_CONDA_FILE = SAMPLE_DIR / "environment" / "conda.yaml"
SAMPLE_REQUEST = SAMPLE_DIR / "sample-request.json"
SAMPLE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest"  # what the notebook names
CPU_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"
GPU_IMAGE = "mcr.microsoft.com/azureml/openmpi5.0-cuda12.4-ubuntu22.04:latest"

# The smallest environment that builds: the inference server and nothing else.
SERVER_ONLY_CONDA = """\
name: server-only
channels:
  - conda-forge
dependencies:
  - python=3.10
  - pip
  - pip:
    - azureml-inference-server-http
"""

# tensorflow-gpu 1.x has no wheel for Python 3.10: the image build fails as Azure's does.
TF1_ON_PY310_CONDA = """\
name: tf1
channels:
  - conda-forge
dependencies:
  - python=3.10
  - pip
  - pip:
    - azureml-inference-server-http
    - tensorflow-gpu==1.15.5
"""

# Answers which deployment's container served it and what GPUs its container was given.
WHOAMI_SCORE_PY = """\
import json
import os


def init():
    pass


def run(raw_data):
    return {
        "nvidia_visible_devices": os.environ.get("NVIDIA_VISIBLE_DEVICES", ""),
        "model_dir": os.path.basename(os.environ.get("AZUREML_MODEL_DIR", "")),
    }
"""

CRASHING_INIT_PY = """\
def init():
    raise ValueError("the model files are not where init() looks for them")


def run(raw_data):
    return raw_data
"""

SLOW_INIT_PY = """\
import time


def init():
    time.sleep(120)


def run(raw_data):
    return raw_data
"""


def sample_model_dir(root: Path) -> Path:
    """The sample's model: a LinearRegression on scikit-learn's bundled diabetes data, as the sample trained
    it, under the sample's file name (the sample's 1.2.2 pickle cannot predict under scikit-learn 1.9)."""
    import joblib
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import LinearRegression

    features, target = load_diabetes(return_X_y=True)
    folder = root / "model"
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(LinearRegression().fit(features, target), folder / "sklearn_regression_model.pkl")
    return folder


def code_dir(root: Path, script: str, folder: str = "code") -> Path:
    path = root / folder
    path.mkdir(parents=True, exist_ok=True)
    (path / "score.py").write_text(script)
    return path


def tiny_model_dir(root: Path) -> Path:
    path = root / "weights"
    path.mkdir(parents=True, exist_ok=True)
    (path / "weights.bin").write_bytes(b"\x00" * 64)
    return path
