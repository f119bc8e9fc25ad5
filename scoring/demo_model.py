"""The demo model: a small Keras CNN trained on scikit-learn's bundled handwritten digits.

`build(out_dir)` trains it (a few seconds on two CPU cores, fixed seed, held-out split) and exports a TF2
SavedModel whose `serving_default` signature takes encoded images, so a client can POST a JPEG or PNG as-is:

    image_bytes  tf.string [None]       each an encoded JPEG/PNG/GIF/BMP of any size, colour or grey
    -> classes       int64 [None]
       probabilities float32 [None, 10]
       labels        string [None]      the top class name

The held-out accuracy reported in metrics.json is measured through that exported signature on PNG-encoded
held-out images, so it covers the in-graph decoding and resizing too.

    python -m scoring.demo_model build --out DIR
"""

from __future__ import annotations

import os

# Before TensorFlow is imported anywhere: its C++ start-up chatter is noise here.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import hashlib
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

LABELS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SEED = 20240601
DIGIT_SIZE = 8  # load_digits images are 8x8 ...
DIGIT_MAX = 16.0  # ... with values 0..16 (counts of ink pixels in 4x4 blocks of a 32x32 bitmap)
EPOCHS = 20


def recipe_digest() -> str:
    """Names a build of the demo model: it changes whenever the code that trains or exports it changes."""
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in ("demo_model.py", "serving_signature.py"):
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:12]


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The digits as (x_train, y_train, x_test, y_test), x float32 [n, 8, 8] in 0..16; stratified, seeded."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.images.astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=SEED, stratify=y)
    return x_train, y_train, x_test, y_test


def render_digit(
    pixels: np.ndarray, *, fmt: str = "PNG", size: int = 64, color: bool = False, quality: int = 95
) -> bytes:
    """Encode one 8x8 digit (values 0..16) as an image, drawn the way people draw: dark ink on a light page.

    `size` is the output width and height in pixels (nearest-neighbour upscaling), `color` gives blue ink on a
    cream page in RGB instead of greyscale, `fmt` is any Pillow format name ("PNG", "JPEG", ...).
    """
    from PIL import Image

    ink = np.clip(np.asarray(pixels, dtype=np.float32) / DIGIT_MAX, 0.0, 1.0)[..., None]  # 1 = full ink
    if color:
        page, pen = np.array([250, 240, 200], np.float32), np.array([20, 40, 160], np.float32)
        image = Image.fromarray(np.rint(page * (1 - ink) + pen * ink).astype(np.uint8), "RGB")
    else:
        image = Image.fromarray(np.rint(255.0 * (1 - ink[..., 0])).astype(np.uint8), "L")
    image = image.resize((size, size), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    options = {"quality": quality} if fmt.upper() in ("JPEG", "JPG") else {}
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _build_network():
    import keras

    keras.utils.set_random_seed(SEED)
    model = keras.Sequential(
        [
            keras.Input(shape=(DIGIT_SIZE, DIGIT_SIZE, 1)),
            keras.layers.Rescaling(1.0 / DIGIT_MAX),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.3, seed=SEED),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(len(LABELS), activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    return model


def _serving_module(model):
    """Wrap the trained network in a tf.Module whose signature decodes and normalises images in the graph."""
    from scoring.serving_signature import image_bytes_module

    return image_bytes_module(
        model, label_names=LABELS, preprocess_one=_preprocess_one, image_shape=[DIGIT_SIZE, DIGIT_SIZE, 1]
    )


def _preprocess_one(encoded):
    """One encoded image -> [8, 8, 1] float32 scaled like load_digits (light ink on black, 0..16)."""
    import tensorflow as tf

    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    grey = tf.image.rgb_to_grayscale(tf.cast(image, tf.float32))
    # load_digits has light ink on a dark page; drawings and photos are mostly the opposite. The page
    # dominates the picture, so a bright mean means dark ink: invert those.
    grey = tf.cond(tf.reduce_mean(grey) > 127.5, lambda: 255.0 - grey, lambda: grey)
    # Pad to a square instead of stretching, then average down (area), which is how the digits were made.
    small = tf.image.resize_with_pad(grey, DIGIT_SIZE, DIGIT_SIZE, method="area")
    return small * (DIGIT_MAX / 255.0)


def predict_encoded(signature, encoded: list[bytes], batch_size: int = 128) -> np.ndarray:
    """Classes predicted through a loaded `serving_default` signature for a list of encoded images."""
    import tensorflow as tf

    classes = []
    for start in range(0, len(encoded), batch_size):
        batch = tf.constant(encoded[start : start + batch_size], dtype=tf.string)
        classes.append(signature(image_bytes=batch)["classes"].numpy())
    return np.concatenate(classes) if classes else np.zeros([0], np.int64)


def build(out_dir: Path) -> dict[str, Any]:
    """Train the demo CNN, export `out_dir/model/` (SavedModel), `labels.txt` and `metrics.json`.

    Returns the metrics; `accuracy` is the held-out accuracy through the exported signature on PNG images.
    """
    import keras
    import tensorflow as tf

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    x_train, y_train, x_test, y_test = load_split()

    model = _build_network()
    model.fit(x_train[..., None], y_train, epochs=EPOCHS, batch_size=32, shuffle=True, verbose=0)
    keras_accuracy = float(model.evaluate(x_test[..., None], y_test, verbose=0)[1])
    train_seconds = time.monotonic() - started

    model_dir = out_dir / "model"
    module = _serving_module(model)
    tf.saved_model.save(module, str(model_dir), signatures={"serving_default": module.serve})
    (out_dir / "labels.txt").write_text("\n".join(LABELS) + "\n")
    del module, model
    keras.backend.clear_session()

    # Measure through what was exported, not through the in-memory Keras model.
    signature = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    png_classes = predict_encoded(signature, [render_digit(x, fmt="PNG") for x in x_test])
    jpeg_classes = predict_encoded(signature, [render_digit(x, fmt="JPEG", color=True) for x in x_test])
    metrics: dict[str, Any] = {
        "accuracy": float(np.mean(png_classes == y_test)),
        "accuracy_jpeg_color": float(np.mean(jpeg_classes == y_test)),
        "keras_accuracy": keras_accuracy,
        "heldout_samples": len(y_test),
        "train_samples": len(y_train),
        "epochs": EPOCHS,
        "seed": SEED,
        "train_seconds": round(train_seconds, 2),
        "labels": list(LABELS),
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def build_cached(cache: Path, *, quiet: bool = False, timeout: float = 600) -> Path:
    """The demo model under cache/<recipe digest>/ (model/, labels.txt, metrics.json), built only when its
    recipe changed. It is built in a subprocess, so TensorFlow stays out of the caller (a web or Celery
    process), into a scratch folder renamed into place: a concurrent build, or one killed halfway, never
    leaves a half-written model where the next caller would take it. quiet: hide the build's output."""
    import shutil
    import subprocess

    digest = recipe_digest()
    built = Path(cache) / digest
    if not (built / "metrics.json").is_file():
        built.parent.mkdir(parents=True, exist_ok=True)
        scratch = built.parent / f".{digest}.{os.getpid()}"
        shutil.rmtree(scratch, ignore_errors=True)
        subprocess.run(
            [sys.executable, "-m", "scoring.demo_model", "build", "--out", str(scratch)],
            cwd=Path(__file__).resolve().parent.parent,
            check=True,
            timeout=timeout,
            capture_output=quiet,
        )
        try:
            os.rename(scratch, built)
        except OSError:  # another process got there first: its model is as good as ours
            shutil.rmtree(scratch, ignore_errors=True)
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scoring.demo_model", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="train and export the demo SavedModel")
    build_parser.add_argument("--out", type=Path, required=True, help="output directory")
    sample_parser = commands.add_parser(
        "sample", help="write a held-out handwritten digit as a PNG, to score"
    )
    sample_parser.add_argument("digit", type=int, choices=range(10))
    sample_parser.add_argument("--out", type=Path, default=Path("digit.png"), help="default: digit.png")
    args = parser.parse_args(argv)
    if args.command == "sample":
        _, _, x_test, y_test = load_split()
        args.out.write_bytes(render_digit(x_test[y_test == args.digit][0], fmt="PNG"))
        print(f"wrote a held-out {args.digit} to {args.out}", file=sys.stderr)
        return 0
    metrics = build(args.out)
    print(json.dumps(metrics, indent=2))
    print(f"held-out accuracy through the SavedModel (PNG): {metrics['accuracy']:.4f}", file=sys.stderr)
    return 0 if metrics["accuracy"] >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
