"""An entry script written for AKS the how-to's way runs unchanged on the local target.

The script below does what the how-to's score.py does: `Model.get_model_path(name)` to find the model, TF1
loading through `tensorflow.compat.v1` (a Session and `saved_model.loader.load`), `@rawhttp` for the raw
request, `AMLResponse` for status and body, and 405 for GET. The model is a SavedModel exported the TF1 way
(a graph and SavedModelBuilder), registered in the layout Lynx gives registered models.
"""

from __future__ import annotations

import shutil

import pytest
import requests
from django.conf import settings

from scoring import control
from tests.conftest import digit_images, wait_for
from tests.deployments.savedmodels import build_tf1_savedmodels

MODEL_NAME = "digits-tf1"

SEED_STYLE_SCORE_PY = """\
import io
import json
import os

import numpy as np
import tensorflow as tf
from PIL import Image

from azureml.contrib.services.aml_request import AMLRequest, rawhttp
from azureml.contrib.services.aml_response import AMLResponse
from azureml.core.model import Model

MODEL_NAME = "digits-tf1"


def init():
    global session, input_tensor, output_tensor, labels, model_path

    # AKS mounts the registered model under AZUREML_MODEL_DIR; get_model_path finds the same folder.
    model_dir = os.getenv("AZUREML_MODEL_DIR")
    assert model_dir, "AZUREML_MODEL_DIR is not set"
    model_path = Model.get_model_path(MODEL_NAME)
    expected = os.path.join(model_dir, MODEL_NAME)
    assert os.path.realpath(model_path) == os.path.realpath(expected), (model_path, expected)

    session = tf.compat.v1.Session(graph=tf.Graph())
    meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], model_path)
    signature = meta_graph.signature_def["serving_default"]
    input_tensor = session.graph.get_tensor_by_name(signature.inputs["images"].name)
    output_tensor = session.graph.get_tensor_by_name(signature.outputs["probabilities"].name)
    with open(os.path.join(model_path, "labels.txt")) as handle:
        labels = [line.strip() for line in handle if line.strip()]


def preprocess(body):
    image = Image.open(io.BytesIO(body)).convert("L")
    pixels = np.asarray(image, dtype=np.float32)
    if pixels.mean() > 127.5:  # dark ink on a light page: the model was trained on light ink
        pixels = 255.0 - pixels
    small = Image.fromarray(pixels.astype(np.uint8)).resize((8, 8), Image.BOX)
    return np.asarray(small, dtype=np.float32)[None] * (16.0 / 255.0)


@rawhttp
def run(request):
    if request.method == "POST":
        reqBody = request.get_data(False)
        probabilities = session.run(output_tensor, feed_dict={input_tensor: preprocess(reqBody)})[0]
        best = np.argsort(probabilities)[::-1][:3]
        result = {
            "predictions": [
                {"class": int(i), "label": labels[i], "probability": float(probabilities[i])} for i in best
            ],
            "model_dir": os.getenv("AZUREML_MODEL_DIR"),
            "model_path": model_path,
        }
        return AMLResponse(json.dumps(result), 200)
    if request.method == "GET":
        respBody = str.encode("GET is not supported")
        return AMLResponse(respBody, 405)
    return AMLResponse("bad request", 500)
"""


@pytest.mark.slow
def test_a_how_to_style_entry_script_runs_unchanged_on_the_local_target(tmp_path, stop_local_replicas):
    built = build_tf1_savedmodels(settings.VAR_DIR / "cache" / "tf1-models")
    # The layout model_register gives version 1 of a registered model: <models>/<name>/<version>/<name>/.
    model_files = tmp_path / "models" / MODEL_NAME / "1" / MODEL_NAME
    shutil.copytree(built / MODEL_NAME, model_files)
    script = tmp_path / "score.py"
    script.write_text(SEED_STYLE_SCORE_PY)
    key_file = tmp_path / "keys.json"
    control.write_key_file(key_file, "seed-primary-key-0123456789", "seed-secondary-key-9876543210")
    state_dir = settings.LYNX_LOCAL_DIR / "services" / "seed-style-test"
    port = control.free_port()
    control.spawn(
        state_dir=state_dir,
        entry_script=script,
        model_path=model_files,
        model_name=MODEL_NAME,
        model_version=1,
        port=port,
        replicas=1,
        key_file=key_file,
        ready_timeout_s=90,
    )

    def ready():
        status = control.read_status(state_dir)
        assert status is not None, control.tail_logs(state_dir)
        dead = [r for r in status["replicas"] if r["state"] == "dead"]
        assert not dead, control.tail_logs(state_dir)
        return status["replicas"] and all(r["state"] == "ready" for r in status["replicas"])

    wait_for(ready, 120, message="the seed-style replica to be ready")
    uri = f"http://127.0.0.1:{port}/score"
    auth = {"Authorization": "Bearer seed-primary-key-0123456789"}

    top = []
    for image in digit_images(3, count=5):
        response = requests.post(uri, data=image, headers=auth, timeout=30)
        assert response.status_code == 200, response.text
        body = response.json()
        top.append(body["predictions"][0]["label"])
    assert top.count("three") >= 4, top  # nearest centroid is ~90 % right on held-out digits
    # The script saw AZUREML_MODEL_DIR as AKS sets it (<...>/azureml-models/<name>/<version>)
    # and found the model.
    assert body["model_dir"].endswith(f"/azureml-models/{MODEL_NAME}/1"), body
    assert body["model_path"].endswith(f"/azureml-models/{MODEL_NAME}/1/{MODEL_NAME}"), body

    get = requests.get(uri, headers=auth, timeout=10)
    assert get.status_code == 405 and get.text == "GET is not supported"
    assert (
        requests.post(uri, data=b"x", timeout=10).status_code == 401
    )  # the front proxy checks the key first
    secondary = {"Authorization": "Bearer seed-secondary-key-9876543210"}
    assert (
        requests.post(uri, data=digit_images(7, count=1)[0], headers=secondary, timeout=30).status_code == 200
    )
    assert control.stop(state_dir)
