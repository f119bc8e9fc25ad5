"""Models and entry scripts for Azure tests, now that the emulator runs the deployed score.py for real.

The emulator builds the environment and runs the entry script with the registered model in Microsoft's
inference server, as AKS does. Lynx's default entry script (scoring/entry_scripts/score_tf2.py) loads a
TensorFlow SavedModel in init(), so with the `tiny_model` fixture's fake weights it fails at init(), as it
would on Azure. Tests that only need a service that answers use `ECHO_SCORE_PY` (no TensorFlow, starts in
about a second); tests that need the real thing deploy the default script with `digits_model`.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

# A raw-bytes (@rawhttp) entry script that needs no TensorFlow. init() fails, as a real script would, when the
# registered model's files are not under AZUREML_MODEL_DIR. run() answers:
#   POST JSON {"data": [[...], ...]} → {"scores": [row means], "model_files": [...]} (what the emulator's old
#   fixed scorer answered, so tests that checked its scores keep their meaning);
#   POST anything else → {"bytes": <length>, "content_type": ..., "model_files": [...]} (the raw body came);
#   GET → 405, as the how-to's script answers.
ECHO_SCORE_PY = """\
import json
import os

from azureml.contrib.services.aml_request import rawhttp
from azureml.contrib.services.aml_response import AMLResponse


def init():
    global model_files
    model_dir = os.environ["AZUREML_MODEL_DIR"]
    model_files = sorted(
        os.path.relpath(os.path.join(root, name), model_dir)
        for root, _dirs, names in os.walk(model_dir)
        for name in names
    )
    if not model_files:
        raise RuntimeError(f"no model files under {model_dir}")
    print(f"echo init: {len(model_files)} model file(s) under {model_dir}")


def _scores(body):
    try:
        data = json.loads(body).get("data")
    except (ValueError, AttributeError):
        return None
    rows = data if isinstance(data, list) and data and isinstance(data[0], list) else [data or []]
    return [sum(map(float, row)) / len(row) if row else 0.0 for row in rows]


@rawhttp
def run(request):
    if request.method != "POST":
        return AMLResponse("Method not allowed", 405)
    body = request.get_data(False)
    scores = _scores(body)
    if scores is not None:
        return AMLResponse({"scores": scores, "model_files": model_files}, 200, json_str=True)
    content_type = request.headers.get("Content-Type")
    answer = {"bytes": len(body), "content_type": content_type, "model_files": model_files}
    return AMLResponse(answer, 200, json_str=True)
"""


def write_echo_script(directory: Path) -> Path:
    """ECHO_SCORE_PY as `score.py` in its own source directory (all of which is uploaded to Azure)."""
    directory.mkdir(parents=True, exist_ok=True)
    entry = directory / "score.py"
    entry.write_text(ECHO_SCORE_PY)
    return entry


def digits_model(demo_model_files: Path, name: str | None = None) -> Any:
    """The demo digits SavedModel (tests.conftest's `demo_model_files`) registered in Lynx under a fresh name,
    for tests that deploy Lynx's default entry script and need it to load a real model."""
    from deployments.services.registered_models import model_register

    return model_register(
        user=None,
        name=name or f"digits-{uuid.uuid4().hex[:6]}",
        source_dir=demo_model_files / "model",
        labels=(demo_model_files / "labels.txt").read_text(),
    )
