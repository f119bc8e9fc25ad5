"""Tiny SavedModels exported the TF1 way (tf.compat.v1 graph + SavedModelBuilder), built in a subprocess so
the test process does not load TensorFlow, and cached under var/ by the hash of the recipe below.

- "digits-tf1": a nearest-centroid classifier of scikit-learn's 8x8 digits; input `images` float32
  [None, 8, 8] (values 0..16, as load_digits), output `probabilities` float32 [None, 10]. ~2 KB.
- "two-inputs": serving_default takes `x` and `y`.
- "no-serving-default": only a `predict` signature.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

RECIPE = r"""
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import tensorflow as tf
from scoring.demo_model import load_split

v1 = tf.compat.v1
out = sys.argv[1]


def export(path, build):
    with tf.Graph().as_default() as graph, v1.Session(graph=graph) as session:
        signatures = build()
        session.run(v1.global_variables_initializer())
        builder = v1.saved_model.Builder(path)
        builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map=signatures)
        builder.save()


def info(tensor):
    return v1.saved_model.utils.build_tensor_info(tensor)


def signature(inputs, outputs):
    return v1.saved_model.signature_def_utils.build_signature_def(
        inputs={k: info(v) for k, v in inputs.items()}, outputs={k: info(v) for k, v in outputs.items()},
        method_name=v1.saved_model.signature_constants.PREDICT_METHOD_NAME)


x_train, y_train, _, _ = load_split()
centroids = np.stack(
    [x_train[y_train == k].reshape(-1, 64).mean(axis=0) for k in range(10)]
).astype(np.float32)


def digits():
    images = v1.placeholder(tf.float32, [None, 8, 8], name="images")
    flat = tf.reshape(images, [-1, 64])
    c = tf.Variable(centroids, name="centroids")
    # Nearest centroid as a softmax over negative squared distances (scaled so it is not one-hot).
    distances = tf.reduce_sum(tf.square(flat[:, None, :] - c[None, :, :]), axis=2)
    probabilities = tf.nn.softmax(-distances / 40.0, name="probabilities")
    return {"serving_default": signature({"images": images}, {"probabilities": probabilities})}


def two_inputs():
    x = v1.placeholder(tf.float32, [None, 4], name="x")
    y = v1.placeholder(tf.float32, [None, 4], name="y")
    w = tf.Variable(np.ones([4, 2], np.float32), name="w")
    return {"serving_default": signature({"x": x, "y": y}, {"scores": tf.matmul(x + y, w)})}


def predict_only():
    x = v1.placeholder(tf.float32, [None, 4], name="x")
    w = tf.Variable(np.ones([4, 2], np.float32), name="w")
    return {"predict": signature({"x": x}, {"scores": tf.matmul(x, w)})}


export(os.path.join(out, "digits-tf1"), digits)
export(os.path.join(out, "two-inputs"), two_inputs)
export(os.path.join(out, "no-serving-default"), predict_only)
with open(os.path.join(out, "digits-tf1", "labels.txt"), "w") as f:
    f.write(
        "\n".join(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]) + "\n"
    )
"""

REPO = Path(__file__).resolve().parents[2]


def build_tf1_savedmodels(cache: Path) -> Path:
    """Build (once per recipe) and return the folder holding the three SavedModels."""
    digest = hashlib.sha256(RECIPE.encode() + (REPO / "scoring" / "demo_model.py").read_bytes()).hexdigest()[
        :12
    ]
    built = cache / digest
    if (built / "no-serving-default" / "saved_model.pb").exists():
        return built
    scratch = cache / f".{digest}.{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    subprocess.run(
        [sys.executable, "-c", RECIPE, str(scratch)], cwd=REPO, check=True, timeout=300, capture_output=True
    )
    try:
        os.rename(scratch, built)
    except OSError:
        shutil.rmtree(scratch, ignore_errors=True)  # another session built it first
    return built
