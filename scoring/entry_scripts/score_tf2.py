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

Optional micro-batching: the server answers requests on several threads; with LYNX_MAX_BATCH_SIZE > 1,
requests that arrive within LYNX_MAX_BATCH_WAIT_MS of each other share one model call (worth it on a GPU;
the price is that a request arriving alone waits that long for company).
"""

from __future__ import annotations  # Azure images may run Python 3.9

import os
import queue
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import tensorflow as tf
from azureml.contrib.services.aml_request import rawhttp
from azureml.contrib.services.aml_response import AMLResponse

TOP_K = 5

model_signature = None  # the SavedModel's serving_default signature, set by init()
labels: list[str] = []
model_info: dict = {}
batcher = None  # a MicroBatcher when batching is on


def init():
    """Load the model once per worker process, before any request is served."""
    global model_signature, labels, model_info, batcher

    model_root = Path(os.environ["AZUREML_MODEL_DIR"])
    saved_model_dir = find_saved_model(model_root)
    model_signature = tf.saved_model.load(str(saved_model_dir)).signatures["serving_default"]
    labels = read_labels(saved_model_dir, model_root)
    model_info = model_identity(model_root)
    # The first call builds the graph's kernels (~0.1 s): pay for it here, not in the first request.
    predict([tf.io.encode_png(tf.zeros([8, 8, 3], tf.uint8)).numpy()])

    max_batch_size = int(os.environ.get("LYNX_MAX_BATCH_SIZE", "1"))
    if max_batch_size > 1:
        max_wait_s = float(os.environ.get("LYNX_MAX_BATCH_WAIT_MS", "5")) / 1000
        batcher = MicroBatcher(predict, max_batch_size, max_wait_s)
    print(f"Loaded {saved_model_dir} ({len(labels)} labels), model {model_info}, batch size {max_batch_size}")


@rawhttp
def run(request):
    """Score the image in the request body."""
    if request.method != "POST":
        return error_response(405, "POST the raw bytes of an image to score it.", {"Allow": "POST"})

    image = request.get_data(cache=False)
    if not image:
        return error_response(400, "The request body is empty: send the raw bytes of an image.")
    try:
        probabilities = batcher.submit(image) if batcher else predict([image])[0]
    except tf.errors.InvalidArgumentError:
        return error_response(400, "The body is not an image that can be decoded (JPEG, PNG, GIF or BMP).")

    best_first = np.argsort(probabilities)[::-1][:TOP_K]
    predictions = [
        {"class": int(i), "label": label_for(int(i)), "probability": round(float(probabilities[i]), 6)}
        for i in best_first
    ]
    return AMLResponse({"predictions": predictions, "model": model_info}, 200, json_str=True)


def predict(images: list[bytes]) -> np.ndarray:
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


class MicroBatcher:
    """Groups images from concurrent requests into one model call, each caller getting its own row back."""

    def __init__(self, predict_batch, max_size: int, max_wait_s: float):
        self.predict_batch = predict_batch
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self.pending: queue.Queue = queue.Queue()
        threading.Thread(target=self._loop, name="micro-batcher", daemon=True).start()

    def submit(self, image: bytes) -> np.ndarray:
        future: Future = Future()
        self.pending.put((image, future))
        return future.result()

    def _loop(self) -> None:
        while True:
            batch = [self.pending.get()]
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_size:
                try:
                    batch.append(self.pending.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            self._score(batch)

    def _score(self, batch: list) -> None:
        try:
            rows = self.predict_batch([image for image, _ in batch])
        except tf.errors.InvalidArgumentError as error:
            if len(batch) == 1:
                batch[0][1].set_exception(error)
                return
            # One undecodable image fails the whole call: score them one by one so only its sender gets a 400.
            for item in batch:
                self._score([item])
            return
        except Exception as error:  # anything else fails every request of this batch (500), not the thread
            for _, future in batch:
                future.set_exception(error)
            return
        for (_, future), row in zip(batch, rows, strict=True):
            future.set_result(row)
