"""Entry script for a TensorFlow 2 SavedModel image classifier, Azure ML style: init() once, run() per call.

The same file runs on Azure ML (AKS) and on Lynx's local target; both run Microsoft's inference server.

Send the raw bytes of one image (JPEG, PNG, GIF or BMP, any size, colour or grey) to /score:

    curl -H "Authorization: Bearer $KEY" --data-binary @digit.png $SCORING_URI

and get the five most likely classes back:

    {"predictions": [{"class": 7, "label": "seven", "probability": 0.97}, ...],
     "model": {"name": "digits", "version": "1"}}

What it expects of the model: a SavedModel somewhere under AZUREML_MODEL_DIR whose `serving_default`
signature takes `image_bytes` (tf.string, shape [None], encoded images) and returns `probabilities`
(float [None, classes]).
Class names come from a `labels.txt` (one per line) next to the SavedModel or in a folder above it.

Dynamic batching: the server answers requests on several threads, and requests that arrive together share
one model call (scoring.batching): up to LYNX_MAX_BATCH_SIZE images (default 32), gathered after the model
becomes free for a tenth of a recent model call (at least 5 ms, at most LYNX_MAX_BATCH_WAIT_MS, default 50),
and only while more requests are expected, so a lone client never waits. LYNX_MAX_BATCH_SIZE=1 turns it off
(one model call per request).
Each image is decoded on its own request thread first: one that cannot be decoded gets its own 400 and never
joins a batch. Every answer carries `X-Lynx-Batch-Size`, the size of the model call that produced it; the
local target's front proxy averages it into the deployment's stats.
"""

from __future__ import annotations  # Azure images may run Python 3.9

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
from azureml.contrib.services.aml_request import rawhttp
from azureml.contrib.services.aml_response import AMLResponse

try:
    from scoring.batching import Batcher  # Lynx's local target puts its scoring package on the path
except ImportError:
    try:
        from batching import Batcher  # Azure ML: scoring/batching.py shipped next to this file
    except ImportError:
        Batcher = None  # neither: one model call per request


def _import_tensorflow():
    """`import tensorflow`, without the eager import of Keras that comes with it.

    With Keras 3 installed, `import tensorflow` imports all of Keras, and through Keras's scikit-learn wrapper
    scikit-learn and SciPy: about 80 MB more in every replica, for nothing that tf.saved_model.load uses
    (Keras 3 registers nothing with TensorFlow's SavedModel loader). This script never uses Keras, so
    TF_USE_LEGACY_KERAS, which skips that import, is set only while TensorFlow initialises: tf.keras reads it
    again on first use, so other code in the process still gets Keras 3 there. Not done when TensorFlow is
    already imported, when the variable is set already, or when tf_keras is installed (the variable would
    then route `tensorflow.keras` imports to it).
    """
    if (
        "tensorflow" in sys.modules
        or "TF_USE_LEGACY_KERAS" in os.environ
        or importlib.util.find_spec("tf_keras") is not None
    ):
        import tensorflow

        return tensorflow
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    try:
        import tensorflow
    finally:
        del os.environ["TF_USE_LEGACY_KERAS"]
    return tensorflow


tf = _import_tensorflow()

TOP_K = 5
DEFAULT_MAX_BATCH_SIZE = 32  # the same defaults as a Lynx deployment's
DEFAULT_MAX_BATCH_WAIT_MS = 50
UNDECODABLE = "The body is not an image that can be decoded (JPEG, PNG, GIF or BMP)."

model_signature = None  # the SavedModel's serving_default signature, set by init()
labels: list[str] = []
model_info: dict = {}
batcher = None  # a Batcher, set by init()


def init():
    """Load the model once per worker process, before any request is served."""
    global model_signature, labels, model_info, batcher

    require_gpu_if_asked()
    model_root = Path(os.environ["AZUREML_MODEL_DIR"])
    saved_model_dir = find_saved_model(model_root)
    model_signature = tf.saved_model.load(str(saved_model_dir)).signatures["serving_default"]
    labels = read_labels(saved_model_dir, model_root)
    model_info = model_identity(model_root)
    # The first call builds the graph's kernels (~0.1 s): pay for it here, not in the first request.
    predict([tf.io.encode_png(tf.zeros([8, 8, 3], tf.uint8)).numpy()])

    max_batch_size = int(os.environ.get("LYNX_MAX_BATCH_SIZE", DEFAULT_MAX_BATCH_SIZE))
    max_wait_ms = float(os.environ.get("LYNX_MAX_BATCH_WAIT_MS", DEFAULT_MAX_BATCH_WAIT_MS))
    if Batcher is None:
        max_batch_size = 1
    else:
        batcher = Batcher(predict, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms)
    print(
        f"Loaded {saved_model_dir} ({len(labels)} labels), model {model_info}, "
        f"max batch size {max_batch_size}, max wait {max_wait_ms:g} ms"
    )


def require_gpu_if_asked() -> None:
    """Fail init() when the deployment asked for a GPU (LYNX_REQUIRE_GPU=1, set by Lynx's Azure and local
    targets) and TensorFlow sees none.

    TensorFlow that cannot load its CUDA libraries (a CUDA 11 image under a CUDA 12 wheel, no and-cuda extra)
    silently runs on the CPU, and the service would still go Healthy; failing here makes the deployment fail
    with the reason instead.
    """
    gpus = tf.config.list_physical_devices("GPU")
    print(f"TensorFlow {tf.__version__} sees GPUs: {gpus}")
    if os.environ.get("LYNX_REQUIRE_GPU") != "1" or gpus:
        return
    build = tf.sysconfig.get_build_info()
    raise RuntimeError(
        "This deployment asked for a GPU but TensorFlow sees none: TensorFlow "
        f"{tf.__version__} was built for CUDA {build.get('cuda_version', '?')} and cuDNN "
        f"{build.get('cudnn_version', '?')} and could not load them. Use tensorflow[and-cuda] (it brings its "
        "own CUDA libraries) or a base image with that CUDA version, and check that the node has a GPU."
    )


@rawhttp
def run(request):
    """Score the image in the request body."""
    if request.method != "POST":
        return error_response(405, "POST the raw bytes of an image to score it.", {"Allow": "POST"})

    image = request.get_data(cache=False)
    if not image:
        return error_response(400, "The request body is empty: send the raw bytes of an image.")
    if not decodes(image):
        return error_response(400, UNDECODABLE)
    try:
        if batcher is not None:
            probabilities, info = batcher.submit_with_info(image)
            batch_size = info.size
        else:
            probabilities, batch_size = predict([image])[0], 1
    except tf.errors.InvalidArgumentError:  # it decodes, yet the model's own preprocessing refused it
        return error_response(400, "The model cannot prepare this image (its size or shape, e.g. 3x300).")

    best_first = np.argsort(probabilities)[::-1][:TOP_K]
    predictions = [
        {"class": int(i), "label": label_for(int(i)), "probability": round(float(probabilities[i]), 6)}
        for i in best_first
    ]
    return AMLResponse(
        {"predictions": predictions, "model": model_info},
        200,
        {"X-Lynx-Batch-Size": str(batch_size)},
        json_str=True,
    )


def decodes(image: bytes) -> bool:
    """Whether the image decodes the way the model's signature decodes it (checked alone, before batching)."""
    try:
        tf.io.decode_image(image, channels=3, expand_animations=False)
    except tf.errors.InvalidArgumentError:
        return False
    return True


def predict(images: list) -> np.ndarray:
    """Probabilities [len(images), classes] for encoded images, in one model call."""
    outputs = model_signature(image_bytes=tf.constant(images, dtype=tf.string))
    return outputs["probabilities"].numpy()


def error_response(status: int, message: str, headers: dict | None = None):
    return AMLResponse({"message": message}, status, headers or {}, json_str=True)


def label_for(index: int) -> str:
    return labels[index] if index < len(labels) else str(index)


def find_saved_model(root: Path) -> Path:
    # followlinks: the registered model is often a symlink into the model store.
    for directory, subdirectories, files in os.walk(root, followlinks=True):
        subdirectories.sort()
        if "saved_model.pb" in files:
            return Path(directory)
    raise FileNotFoundError(f"No saved_model.pb under AZUREML_MODEL_DIR={root}")


def read_labels(saved_model_dir: Path, model_root: Path) -> list[str]:
    directory = saved_model_dir
    while True:
        candidate = directory / "labels.txt"
        if candidate.is_file():
            return [line.strip() for line in candidate.read_text().splitlines() if line.strip()]
        if directory == model_root or directory == directory.parent:
            return []
        directory = directory.parent


def model_identity(model_root: Path) -> dict:
    # Azure ML (and Lynx) mount a registered model at .../azureml-models/<name>/<version>.
    if model_root.parent.parent.name == "azureml-models":
        return {"name": model_root.parent.name, "version": model_root.name}
    return {"name": model_root.name, "version": None}
