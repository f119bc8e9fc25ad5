"""The default entry script, loaded in-process as the inference server loads it: batched answers are the
unbatched answers, and an image that cannot be decoded fails alone."""

from __future__ import annotations

import importlib.util
import io
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from werkzeug.test import EnvironBuilder

from scoring.demo_model import render_digit

from .conftest import DEFAULT_ENTRY_SCRIPT

pytestmark = pytest.mark.slow  # TensorFlow in this process


@pytest.fixture(scope="module")
def entry(demo_model_dir, tmp_path_factory):
    pytest.importorskip("tensorflow")
    # Laid out as AKS mounts a registered model: <root>/azureml-models/<name>/<version>/<files>.
    version_dir = tmp_path_factory.mktemp("aml") / "azureml-models" / "digits" / "2"
    version_dir.mkdir(parents=True)
    (version_dir / "digits").symlink_to(demo_model_dir)
    saved = {
        name: os.environ.get(name)
        for name in ("AZUREML_MODEL_DIR", "LYNX_MAX_BATCH_SIZE", "LYNX_MAX_BATCH_WAIT_MS")
    }
    os.environ.update(
        AZUREML_MODEL_DIR=str(version_dir), LYNX_MAX_BATCH_SIZE="16", LYNX_MAX_BATCH_WAIT_MS="20"
    )
    spec = importlib.util.spec_from_file_location("score_tf2_under_test", DEFAULT_ENTRY_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        module.init()
        yield module
    finally:
        if module.batcher is not None:
            module.batcher.close()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def noise_images(count: int, seed: int = 5) -> list[bytes]:
    """Random pixels of random sizes, as PNG, JPEG, GIF and BMP, grey and colour."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        height, width = rng.integers(3, 300, size=2)
        mode, channels = (("L", None), ("RGB", 3))[index % 2]
        shape = (height, width) if channels is None else (height, width, channels)
        image = Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode)
        buffer = io.BytesIO()
        image.save(buffer, format=("PNG", "JPEG", "GIF", "BMP")[index % 4])
        images.append(buffer.getvalue())
    return images


def request(body: bytes):
    return EnvironBuilder(method="POST", data=body).get_request()


def test_batched_answers_equal_unbatched_on_digits_and_noise_failures_included(entry, heldout_digits):
    x_test, _ = heldout_digits
    digits = [
        render_digit(x, fmt=("PNG", "JPEG")[i % 2], size=32 + 8 * (i % 20), color=bool(i % 3 == 0))
        for i, x in enumerate(x_test[:64])
    ]
    images = digits + noise_images(32)

    def alone(image: bytes):
        try:
            return entry.predict([image])[0]
        except Exception as error:  # noqa: BLE001 - e.g. a 3x290 image cannot be resized to 8x8 with its aspect
            return error

    def together(image: bytes):
        try:
            return entry.batcher.submit_with_info(image)
        except Exception as error:  # noqa: BLE001
            return error

    unbatched = [alone(image) for image in images]
    with ThreadPoolExecutor(max_workers=16) as pool:
        batched = list(pool.map(together, images))

    failed = [i for i, outcome in enumerate(unbatched) if isinstance(outcome, Exception)]
    assert [i for i, outcome in enumerate(batched) if isinstance(outcome, Exception)] == failed
    assert 1 <= len(failed) < 8 and not any(
        i < 64 for i in failed
    )  # every digit scores; a few noise images not
    scored = [i for i in range(len(images)) if i not in failed]
    assert max(batched[i][1].size for i in scored) > 1, (
        "the images were scored one by one: nothing was batched"
    )
    expected = np.stack([unbatched[i] for i in scored])
    actual = np.stack([batched[i][0] for i in scored])
    assert expected.shape == (len(scored), 10)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
    assert (actual.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_an_undecodable_image_gets_its_own_400_and_its_neighbours_are_batched(entry, heldout_digits):
    x_test, y_test = heldout_digits
    good = [render_digit(x) for x in x_test[:15]]
    bodies = good[:7] + [b"\x89PNG\r\n\x1a\n not really a png"] + good[7:]
    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(lambda body: entry.run(request(body)), bodies))
    statuses = [response.status_code for response in responses]
    assert statuses == [200] * 7 + [400] + [200] * 8
    assert "decoded" in responses[7].get_json()["message"]
    ok = [r for r in responses if r.status_code == 200]
    assert max(int(r.headers["X-Lynx-Batch-Size"]) for r in ok) > 1  # the good ones shared calls
    assert "X-Lynx-Batch-Size" not in responses[7].headers  # the bad one never reached the model
    right = sum(
        r.get_json()["predictions"][0]["class"] == label for r, label in zip(ok, y_test[:15], strict=True)
    )
    assert right >= 13


def test_the_script_reads_its_batch_limits_from_the_environment(entry):
    assert (entry.batcher.max_batch_size, entry.batcher.max_wait_s) == (16, 0.02)
    assert entry.DEFAULT_MAX_BATCH_SIZE == 32 and entry.DEFAULT_MAX_BATCH_WAIT_MS == 50
