"""The how-to's entry script, for comparison: one model call per request, written the way the Azure ML how-to
writes its score.py (`@rawhttp`, the raw body straight into the model, AMLResponse). It answers the same JSON
as scoring/entry_scripts/score_tf2.py (the top five classes), but scores every request on its own.
"""

import json
import os

import numpy as np
import tensorflow as tf
from azureml.contrib.services.aml_request import rawhttp
from azureml.contrib.services.aml_response import AMLResponse


def init():
    global signature, labels
    model_dir = os.getenv("AZUREML_MODEL_DIR")
    for directory, _, files in os.walk(model_dir, followlinks=True):
        if "saved_model.pb" in files:
            signature = tf.saved_model.load(directory).signatures["serving_default"]
        if "labels.txt" in files:
            with open(os.path.join(directory, "labels.txt")) as handle:
                labels = [line.strip() for line in handle if line.strip()]


@rawhttp
def run(request):
    if request.method == "POST":
        reqBody = request.get_data(False)
        try:
            probabilities = signature(image_bytes=tf.constant([reqBody]))["probabilities"].numpy()[0]
        except tf.errors.InvalidArgumentError:
            return AMLResponse(json.dumps({"message": "not an image"}), 400)
        best = np.argsort(probabilities)[::-1][:5]
        predictions = [
            {"class": int(i), "label": labels[i], "probability": round(float(probabilities[i]), 6)}
            for i in best
        ]
        return AMLResponse(json.dumps({"predictions": predictions}), 200)
    if request.method == "GET":
        return AMLResponse("GET is not supported", 405)
    return AMLResponse("bad request", 500)
