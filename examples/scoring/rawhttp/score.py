"""A `@rawhttp` scoring script: run() gets the HTTP request itself and may answer any response.

Modelled on azureml-examples' cli/endpoints/online/managed/binary-payloads samples. POST takes a
binary payload (any bytes, e.g. an image) and answers a binary payload: the bytes reversed, as
application/octet-stream, with their SHA-256 in a header. GET answers the query parameters as
JSON. Other methods get a 405 from the script. Needs the azureml-inference-server-http package
(AMLRequest is a Flask request, AMLResponse a Flask response).
"""

import hashlib

from azureml_inference_server_http.api.aml_request import AMLRequest, rawhttp
from azureml_inference_server_http.api.aml_response import AMLResponse


def init():
    pass


@rawhttp
def run(request: AMLRequest):
    if request.method == "GET":
        return AMLResponse({"args": request.args.to_dict(flat=False), "path": request.full_path}, 200, json_str=True)
    if request.method == "POST":
        payload = request.get_data(cache=False)
        if not payload:
            return AMLResponse("empty payload: POST some bytes", 422)
        headers = {"Content-Type": "application/octet-stream", "x-payload-sha256": hashlib.sha256(payload).hexdigest()}
        return AMLResponse(payload[::-1], 200, headers)
    return AMLResponse(f"{request.method} is not supported", 405)
