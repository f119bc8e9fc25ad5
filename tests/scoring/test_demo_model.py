import json

import numpy as np
import pytest

from scoring.demo_model import LABELS, predict_encoded, render_digit


@pytest.fixture(scope="module")
def signature(demo_model_dir):
    tf = pytest.importorskip("tensorflow")
    return tf.saved_model.load(str(demo_model_dir / "model")).signatures["serving_default"]


def test_exported_signature_takes_image_bytes_and_returns_classes_probabilities_labels(signature):
    import tensorflow as tf

    (spec,) = signature.structured_input_signature[1].values()
    assert list(signature.structured_input_signature[1]) == ["image_bytes"]
    assert spec.dtype == tf.string and spec.shape.as_list() == [None]
    outputs = signature.structured_outputs
    assert outputs["classes"].dtype == tf.int64 and outputs["classes"].shape.as_list() == [None]
    assert outputs["probabilities"].dtype == tf.float32 and outputs["probabilities"].shape.as_list() == [
        None,
        10,
    ]
    assert outputs["labels"].dtype == tf.string


def test_heldout_accuracy_through_the_saved_model_on_png_images_is_at_least_90_percent(
    signature, heldout_digits, demo_model_dir
):
    x_test, y_test = heldout_digits
    predicted = predict_encoded(signature, [render_digit(x, fmt="PNG") for x in x_test])
    accuracy = float(np.mean(predicted == y_test))
    assert accuracy >= 0.9
    # metrics.json reports the same measurement
    assert json.loads((demo_model_dir / "metrics.json").read_text())["accuracy"] == pytest.approx(
        accuracy, abs=0.01
    )


def test_colour_jpegs_of_any_size_and_aspect_decode_to_the_right_digit(signature, heldout_digits):
    import tensorflow as tf

    x_test, y_test = heldout_digits
    sizes = range(9, 400, 10)  # 9x9 to 399x399 pixels
    images = [
        render_digit(x, fmt="JPEG", color=True, size=n) for x, n in zip(x_test[:40], sizes, strict=True)
    ]
    out = signature(image_bytes=tf.constant(images))
    assert np.mean(out["classes"].numpy() == y_test[:40]) >= 0.9
    top_labels = [label.decode() for label in out["labels"].numpy()]
    assert top_labels == [LABELS[c] for c in out["classes"].numpy()]
    np.testing.assert_allclose(out["probabilities"].numpy().sum(axis=1), 1.0, rtol=1e-4)


def test_labels_file_lists_the_ten_class_names(demo_model_dir):
    assert (demo_model_dir / "labels.txt").read_text().split() == list(LABELS)
