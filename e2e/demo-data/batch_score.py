# Batch scoring script with Azure ML's contract: init() once per worker, run(mini_batch) per
# mini-batch of file paths, one result row per file. Scores a "digit image" (a line of numbers)
# by the sum of its pixels modulo 10.
import os

model = None


def init():
    global model
    model = {"modulus": 10, "dir": os.environ.get("AZUREML_MODEL_DIR", "")}


def run(mini_batch):
    rows = []
    for path in mini_batch:
        with open(path) as f:
            pixels = [int(x) for x in f.read().split()]
        rows.append([os.path.basename(path), sum(pixels) % model["modulus"]])
    return rows
