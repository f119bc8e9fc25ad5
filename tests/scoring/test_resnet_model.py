"""The benchmark model: ResNet-50 with the demo model's image-bytes signature, built by a command."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("resnet50")
    keras_home = tmp_path_factory.mktemp("keras-home")  # where Keras would put downloaded weights
    subprocess.run(
        [sys.executable, "-m", "scoring.resnet_model", "build", "--out", str(out)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=600,
        env={**os.environ, "KERAS_HOME": str(keras_home)},
    )
    out.joinpath(".keras-home").write_text(str(keras_home))
    return out


def test_build_exports_resnet50_with_the_image_bytes_signature(built):
    tf = pytest.importorskip("tensorflow")
    from PIL import Image

    info = json.loads((built / "model.json").read_text())
    assert info["architecture"] == "ResNet50" and info["classes"] == 1000 and info["input"] == [224, 224, 3]
    assert 25_000_000 < info["parameters"] < 26_000_000  # ResNet-50's 25.6 M
    assert len((built / "labels.txt").read_text().split()) == 1000

    signature = tf.saved_model.load(str(built / "model")).signatures["serving_default"]
    assert list(signature.structured_input_signature[1]) == ["image_bytes"]
    assert signature.structured_outputs["probabilities"].shape.as_list() == [None, 1000]

    images = []
    for size, fmt in (((640, 480), "JPEG"), ((50, 90), "PNG")):  # any size: resized in the graph
        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(1).integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(
            buffer, fmt
        )
        images.append(buffer.getvalue())
    out = signature(image_bytes=tf.constant(images))
    probabilities = out["probabilities"].numpy()
    assert probabilities.shape == (2, 1000) and np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-4)
    labels = [label.decode() for label in out["labels"].numpy()]
    assert labels == [f"class_{c}" for c in out["classes"].numpy()]


def test_building_downloads_no_weights(built):
    keras_home = Path((built / ".keras-home").read_text())
    files = [p for p in keras_home.rglob("*") if p.is_file()]
    assert [p for p in files if p.suffix in (".h5", ".keras", ".weights")] == []
    assert not (keras_home / "models").exists()
