"""A tiny Azure ML scoring script: a linear model read from AZUREML_MODEL_DIR/model.json."""

import json
import os

model = None


def init():
    global model
    with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.json")) as f:
        model = json.load(f)


def run(raw_data):
    data = json.loads(raw_data)["data"]
    return {"model": model["name"], "prediction": [model["weight"] * x + model["bias"] for x in data]}
