"""An inference-schema scoring script, as Azure ML's AutoML writes them.

`@input_schema` names run()'s keyword arguments and their sample values; the server parses the
JSON body and calls `run(Inputs=..., GlobalParameters=...)`, and inference-schema turns each
value into its declared type (here `Inputs["data"]` becomes a numpy array). A missing argument
without a default is the server's 400; `GlobalParameters` has a default and may be left out.
The same decorators give the server its `GET /swagger.json`.

Modelled on the AutoML-generated `score.py` and azureml-examples'
cli/endpoints/online/managed/inference-schema samples.
"""

import json
import os

import numpy as np
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema

model = None

data_sample = NumpyParameterType(np.array([[1.0, 2.0, 3.0]]))
inputs_sample = StandardPythonParameterType({"data": data_sample})
method_sample = StandardPythonParameterType("predict")
global_parameters_sample = StandardPythonParameterType({"method": method_sample})
results_sample = NumpyParameterType(np.array([5.5]))
output_sample = StandardPythonParameterType({"Results": results_sample})


def init():
    global model
    with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.json"), encoding="utf-8") as f:
        model = json.load(f)


@input_schema("GlobalParameters", global_parameters_sample, convert_to_provided_type=False)
@input_schema("Inputs", inputs_sample)
@output_schema(output_sample)
def run(Inputs, GlobalParameters={"method": "predict"}):  # noqa: B006, N803 - AutoML's names
    data = Inputs["data"]  # a numpy array: inference-schema converted it
    scores = np.asarray(data, dtype=np.float64) @ np.asarray(model["weights"]) + model["bias"]
    if GlobalParameters.get("method") == "predict_proba":
        scores = 1.0 / (1.0 + np.exp(-scores))
    return {"Results": scores.round(6).tolist()}
