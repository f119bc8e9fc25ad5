"""The benchmark model: ResNet-50 (Keras applications, `weights=None`: random weights, nothing downloaded),
exported with the demo model's image-bytes signature so that the default entry script serves it unchanged:

    image_bytes  tf.string [None]       each an encoded JPEG/PNG/GIF/BMP of any size, colour or grey
    -> classes       int64 [None]
       probabilities float32 [None, 1000]
       labels        string [None]      the top class name ("class_0" .. "class_999")

Each image is decoded, resized to 224x224 (bilinear) and normalised as Keras' ResNet-50 expects ("caffe":
BGR, ImageNet channel means subtracted), all inside the graph. The predictions mean nothing (the weights are
random); the cost per image is the real one: about 4 billion multiply-adds.

    python -m scoring.resnet_model build --out DIR    # DIR/model (SavedModel, ~100 MB), DIR/labels.txt
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

IMAGE_SIZE = 224
CLASSES = 1000
SEED = 20240601
# Keras' ResNet-50 preprocessing ("caffe" mode): BGR order, ImageNet means subtracted, no scaling.
BGR_MEANS = (103.939, 116.779, 123.68)
MULTIPLY_ADDS_PER_IMAGE = 3.86e9  # ResNet-50 at 224x224, as the Keras and torchvision model cards count it


def labels() -> list[str]:
    return [f"class_{i}" for i in range(CLASSES)]


def _preprocess_one(encoded):
    import tensorflow as tf

    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image = tf.image.resize(tf.cast(image, tf.float32), [IMAGE_SIZE, IMAGE_SIZE], method="bilinear")
    return image[..., ::-1] - tf.constant(BGR_MEANS, tf.float32)


def _serving_module(model, label_names: list[str]):
    from scoring.serving_signature import image_bytes_module

    return image_bytes_module(
        model,
        label_names=label_names,
        preprocess_one=_preprocess_one,
        image_shape=[IMAGE_SIZE, IMAGE_SIZE, 3],
    )


def build(out_dir: Path) -> dict[str, Any]:
    """Export `out_dir/model/` (SavedModel) and `out_dir/labels.txt`; returns a small description."""
    import keras
    import tensorflow as tf

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    keras.utils.set_random_seed(SEED)
    model = keras.applications.ResNet50(
        weights=None, include_top=True, input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), classes=CLASSES
    )
    names = labels()
    module = _serving_module(model, names)
    tf.saved_model.save(module, str(out_dir / "model"), signatures={"serving_default": module.serve})
    (out_dir / "labels.txt").write_text("\n".join(names) + "\n")
    info = {
        "architecture": "ResNet50",
        "weights": None,
        "parameters": int(model.count_params()),
        "input": [IMAGE_SIZE, IMAGE_SIZE, 3],
        "classes": CLASSES,
        "multiply_adds_per_image": MULTIPLY_ADDS_PER_IMAGE,
        "seed": SEED,
        "build_seconds": round(time.monotonic() - started, 1),
    }
    (out_dir / "model.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scoring.resnet_model", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="export the ResNet-50 SavedModel")
    build_parser.add_argument("--out", type=Path, required=True, help="output directory")
    args = parser.parse_args(argv)
    print(json.dumps(build(args.out), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
