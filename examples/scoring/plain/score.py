"""A plain Azure ML scoring script: init() loads the model, run() gets the request body as text.

Modelled on Azure ML's own online-endpoint sample (azureml-examples, cli/endpoints/online/model-1):
the body is JSON `{"data": [[x1, x2, x3], ...]}`; the answer is one score per row. A GET on /score
calls run() with the query parameters as a JSON object (azmlinfsrv's convention).

For the error-body check: `{"data": "boom"}` makes run() raise an exception whose message carries
the model's feature-store key. A server must log it and answer a generic 500 without it.
"""

import json
import logging
import os

import numpy as np

model = None


def init():
    """Loads the linear model from AZUREML_MODEL_DIR (once per worker process)."""
    global model
    path = os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.json")
    with open(path, encoding="utf-8") as f:
        model = json.load(f)
    model["weights"] = np.asarray(model["weights"], dtype=np.float64)
    logging.info("plain: model loaded from %s", path)


def run(raw_data):
    """Scores `{"data": [[...], ...]}`; returns {"scores": [...], "labels": [...]}."""
    request = json.loads(raw_data)
    data = request.get("data", [])
    if data == "boom":
        raise RuntimeError(f"feature store refused key {model['feature_store_key']}")
    rows = np.asarray(data, dtype=np.float64).reshape(-1, len(model["weights"]))
    scores = rows @ model["weights"] + model["bias"]
    labels = [model["labels"][int(s > 0)] for s in scores]
    return {"scores": scores.round(6).tolist(), "labels": labels}
