#!/usr/bin/env python3
"""mlcompute scoring server: Azure ML's online scoring contract, Python standard library only.

It serves an Azure ML scoring script (``init()`` and ``run()``) the way Azure ML's inference
server, azmlinfsrv 1.5.1 (package azureml-inference-server-http), does: the same routes, the
same bodies and status codes, the same request-id headers. Any image with python3 can serve a
plain script this way; no pip install is needed. The operator runs azmlinfsrv instead when the
image has it (see src/contract/scoring_server.rs); tests/scoring_oracle.rs checks that both answer
alike.

Workers: ``WORKER_COUNT`` worker processes (Azure ML's meaning: gunicorn sync workers), forked
after the listening socket is bound, each importing the script and calling its own ``init()``,
each running one ``run()`` at a time, and answering each request with one write, with
TCP_NODELAY. With one worker, client connections stay open (keep-alive: the router pools them);
with more, each answer closes its connection, as gunicorn's sync workers do, so that every
request is accepted by a free worker (a kept connection would wait on its busy worker while
others idle). A worker that fails to import the
script or whose init() raises stops the server (exit code 1, one line on stderr); a worker that
dies later is replaced.

Routes (as azmlinfsrv):
  GET  /              liveness and readiness: "Healthy" once a worker has run init()
  GET  /swagger.json  ?version=2|3|3.1: the script's swagger, from swagger<N>.json in the app root
                      or built from its inference-schema decorators (needs the inference_schema
                      package; without it, 404 with azmlinfsrv's message)
  POST /score         run(): the body as text for a plain script; keyword arguments from the JSON
                      body for an ``@input_schema`` script (415/400 on other bodies, azmlinfsrv's
                      messages); the request itself for an ``@rawhttp`` script
  GET  /score         run() with the query parameters (as a JSON object for a plain script)
  OPTIONS /score      200 with an empty body (an ``@rawhttp`` script's run() answers it instead)
Answers: run()'s result as JSON (``None`` as ``{}``), or the response a ``@rawhttp`` script
returns. Headers: ``x-request-id`` (the caller's, else a new UUID; 431 over 100 characters),
``x-ms-request-id`` / ``x-ms-client-request-id`` (azmlinfsrv's rules), ``x-ms-run-fn-exec-ms``,
``x-ms-run-function-failed``.

Errors: bodies are ``{"message": ...}`` with azmlinfsrv's generic text; the exception and its
traceback go to the log (stderr) only. An exception in run() is a 500 "An unexpected error
occurred in scoring script. Check the logs for more info."; a run() longer than
``SCORING_TIMEOUT_MS`` is a 500 "Scoring timeout after N ms". A script that fails to import,
lacks init()/run(), or whose init() raises stops the server at start with exit code 1 and a
one-line reason (Azure ML's UserScriptImportError, UserScriptFunctionNotFound,
UserScriptInitFailed); so does an ``@rawhttp`` script when azureml-inference-server-http is
not installed (the line names the missing package).

Configuration (flag, else environment, else default):
  --entry-script  AZUREML_ENTRY_SCRIPT   path of the scoring script (required)
  --model-dir     AZUREML_MODEL_DIR      exported to the script as AZUREML_MODEL_DIR
  --port          AZUREML_SERVING_PORT   5001
  --host          MLCOMPUTE_SCORING_HOST 0.0.0.0 (tests pass 127.0.0.1)
  --workers       WORKER_COUNT           1: worker processes, each with its own init()
                  SCORING_TIMEOUT_MS     3600000: run()'s time limit, as azmlinfsrv
                  AML_APP_ROOT           the working directory: where swagger files are looked for
                  SERVICE_NAME, SERVICE_VERSION, SERVICE_PATH_PREFIX: swagger fields, as azmlinfsrv
                  MLCOMPUTE_SCORING_ACCESS_LOG  set: one log line per request

This file is shipped inside the mlcompute binary (crate::contract::scoring_server::SCORING_SERVER_PY)
and written into deployment pods by the operator.
"""

import argparse
import importlib.util
import inspect
import io
import json
import os
import selectors
import signal
import socket
import sys
import time
import traceback
import uuid
from http import HTTPStatus
from urllib.parse import parse_qsl, unquote_to_bytes

DEFAULT_PORT = 5001
SERVER_NAME = "mlcompute_scoring_server"
MAX_BODY_BYTES = 100 * 1024 * 1024
MAX_HEAD_BYTES = 64 * 1024
LISTEN_BACKLOG = 2048  # gunicorn's default; the kernel caps it at net.core.somaxconn
KEEPALIVE_SECONDS = 120  # idle client connections close after this
HEADER_LIMIT = 100  # azmlinfsrv's limit on request-id headers
DEFAULT_SCORING_TIMEOUT_MS = 3600 * 1000
BOOT_FAILED = 3  # a worker's exit code when the script cannot be served (gunicorn's)

# azmlinfsrv's messages, word for word.
MSG_NOT_FOUND = (
    "The requested URL was not found on the server. If you entered the URL manually please check your "
    "spelling and try again."
)
MSG_METHOD_NOT_ALLOWED = "The method is not allowed for the requested URL."
MSG_RUN_FAILED = "An unexpected error occurred in scoring script. Check the logs for more info."
MSG_INTERNAL = "An unexpected internal error occurred. Check the logs for more info."

# azmlinfsrv's swagger templates (server/swagger2_template.json, swagger3_template.json), compact.
SWAGGER2_TEMPLATE = (
    '{"swagger": "2.0", "info": {"title": "$SERVICE_NAME$", "description": "API specification for the Azure '
    'Machine Learning service $SERVICE_NAME$", "version": "$SERVICE_VERSION$"}, "schemes": ["https"], "consumes": '
    '["application/json"], "produces": ["application/json"], "securityDefinitions": {"Bearer": {"type": "apiKey", '
    '"name": "Authorization", "in": "header", "description": "For example: Bearer abc123"}}, "paths": '
    '{"$PATH_PREFIX$/": {"get": {"operationId": "ServiceHealthCheck", "description": "Simple health check endpoint '
    'to ensure the service is up at any given point.", "responses": {"200": {"description": "If service is up and '
    "running, this response will be returned with the content 'Healthy'\", \"schema\": {\"type\": \"string\"}, "
    '"examples": {"application/json": "Healthy"}}, "default": {"description": "The service failed to execute due '
    'to an error.", "schema": {"$ref": "#/definitions/ErrorResponse"}}}}}, "$PATH_PREFIX$/score": {"post": '
    '{"operationId": "RunMLService", "description": "Run web service\'s model and get the prediction output", '
    '"security": [{"Bearer": []}], "parameters": [{"name": "serviceInputPayload", "in": "body", "description": '
    '"The input payload for executing the real-time machine learning service.", "schema": {"$ref": '
    '"#/definitions/ServiceInput"}}], "responses": {"200": {"description": "The service processed the input '
    'correctly and provided a result prediction, if applicable.", "schema": {"$ref": "#/definitions/ServiceOutput"}}, '
    '"default": {"description": "The service failed to execute due to an error.", "schema": {"$ref": '
    '"#/definitions/ErrorResponse"}}}}}, "$PATH_PREFIX$/swagger.json": {"get": {"operationId": "GetSwaggerSpec", '
    '"description": "Get the Swagger specification.", "parameters": [{"name": "version", "in": "query", '
    '"required": false, "type": "integer", "enum": [2, 3]}], "responses": {"200": {"description": "The Swagger '
    'specification.", "schema": {"type": "string"}}, "default": {"description": "The service failed to execute due '
    'to an error.", "schema": {"$ref": "#/definitions/ErrorResponse"}}}}}}, "definitions": {"ServiceInput": '
    '{"type": "object", "properties": {"param": {"type": "object", "additionalProperties": {"type": "object"}}}}, '
    '"ServiceOutput": {"type": "object", "additionalProperties": {"type": "object"}}, "ErrorResponse": {"type": '
    '"object", "properties": {"message": {"type": "string"}}}}}'
)
SWAGGER3_TEMPLATE = (
    '{"openapi": "3.0.3", "info": {"title": "$SERVICE_NAME$", "description": "API specification for the Azure '
    'Machine Learning service $SERVICE_NAME$", "version": "$SERVICE_VERSION$"}, "security": [{"Bearer": []}], '
    '"paths": {"$PATH_PREFIX$/": {"get": {"operationId": "ServiceHealthCheck", "description": "Simple health check '
    'endpoint to ensure the service is up at any given point.", "responses": {"200": {"description": "If service is '
    "up and running, this response will be returned with the content 'Healthy'\", \"content\": {\"text/plain\": "
    '{"schema": {"type": "string", "example": "Healthy"}}}}, "default": {"description": "The service failed to '
    'execute due to an error.", "content": {"application/json": {"schema": {"$ref": '
    '"#/components/schemas/ErrorResponse"}}}}}}}, "$PATH_PREFIX$/score": {"post": {"operationId": "RunMLService", '
    '"description": "Run web service\'s model and get the prediction output", "security": [{"Bearer": []}], '
    '"requestBody": {"description": "The input payload for executing the real-time machine learning service.", '
    '"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ServiceInput"}}}}, "responses": '
    '{"200": {"description": "The service processed the input correctly and provided a result prediction, if '
    'applicable.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ServiceOutput"}}}}, '
    '"default": {"description": "The service failed to execute due to an error.", "content": {"application/json": '
    '{"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}}}}, "$PATH_PREFIX$/swagger.json": {"get": '
    '{"operationId": "GetSwaggerSpec", "description": "Get the Swagger specification.", "parameters": [{"name": '
    '"version", "in": "query", "required": false, "schema": {"type": "integer", "enum": [2, 3]}}], "responses": '
    '{"200": {"description": "The Swagger specification.", "content": {"text/plain": {"schema": {"type": '
    '"string"}}}}, "default": {"description": "The service failed to execute due to an error.", "content": '
    '{"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}}}}}, "components": '
    '{"schemas": {"ServiceInput": {"type": "object", "properties": {"param": {"type": "object", '
    '"additionalProperties": {"type": "object"}}}}, "ServiceOutput": {"type": "object", "additionalProperties": '
    '{"type": "object"}}, "ErrorResponse": {"type": "object", "properties": {"message": {"type": "string"}}}}, '
    '"securitySchemes": {"Bearer": {"type": "apiKey", "name": "Authorization", "in": "header", "description": '
    '"For example: Bearer abc123"}}}}'
)


def log(message):
    sys.stderr.write(f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} [{os.getpid()}] {SERVER_NAME} - {message}\n")
    sys.stderr.flush()


class ScriptError(Exception):
    """The scoring script cannot be served; the message is Azure ML's error code and reason."""


class BadInput(Exception):
    """A 400 (or 415) with azmlinfsrv's message."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


# ---------------------------------------------------------------------------------------------
# The scoring script


class Script:
    """The imported script: its init() and run(), and how run() wants its input."""

    def __init__(self, path, app_root):
        self.path = os.path.abspath(path)
        self.app_root = app_root
        self.module = None
        self.run = None
        self.kind = "text"  # "text" (plain), "object" (@input_schema) or "raw" (@rawhttp)
        self.parameters = []  # run()'s parameters other than request_headers
        self.wants_headers = False
        self.flask = None  # the flask module, for @rawhttp scripts
        self.swagger = {}  # version alias -> swagger dict
        self.swagger_versions = []

    def load(self):
        """Imports the script (as azmlinfsrv does) and decides how to call run()."""
        if not os.path.isfile(self.path):
            raise ScriptError(f"UserScriptImportError: no scoring script at {self.path}")
        for folder in (self.app_root, os.path.dirname(self.path)):
            if folder not in sys.path:
                sys.path.append(folder)
        spec = importlib.util.spec_from_file_location("entry_module", self.path)
        if spec is None or spec.loader is None:
            raise ScriptError(f"UserScriptImportError: cannot load {self.path}")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except ModuleNotFoundError as error:
            missing = (error.name or "").split(".")[0]
            if missing in ("azureml_inference_server_http", "azureml", "flask"):
                raise ScriptError(
                    f"UserScriptImportError: {self.path} imports {error.name}, which is not installed: "
                    "@rawhttp scripts (AMLRequest, AMLResponse) need the azureml-inference-server-http package "
                    "in the image (pip install azureml-inference-server-http)"
                ) from error
            traceback.print_exc()
            raise ScriptError(f"UserScriptImportError: {type(error).__name__}: {error}") from error
        except BaseException as error:  # noqa: BLE001 - any import failure is the user's
            traceback.print_exc()
            raise ScriptError(f"UserScriptImportError: {type(error).__name__}: {error}") from error
        for name in ("init", "run"):
            if not callable(getattr(module, name, None)):
                raise ScriptError(f"UserScriptFunctionNotFound: {self.path} has no {name}() function")
        self.module = module
        self.run = module.run
        driver = getattr(module, "driver_module", None)  # Azure SDK proxy scripts, as azmlinfsrv
        if driver is not None and inspect.ismodule(driver) and hasattr(driver, "run"):
            self.run = driver.run
        self._analyze_run()

    def _analyze_run(self):
        params = list(inspect.signature(self.run).parameters.values())
        if any(p.kind not in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params):
            raise ScriptError("UserScriptError: run() cannot accept positional-only arguments, *args, or **kwargs.")
        self.wants_headers = any(p.name == "request_headers" for p in params)
        self.parameters = [p for p in params if p.name != "request_headers"]
        if not self.parameters:
            raise ScriptError("UserScriptError: run() needs to accept an argument for input data.")
        raw_module = sys.modules.get("azureml_inference_server_http.api.aml_request")
        raw = bool(getattr(raw_module, "_rawHttpRequested", False))
        decorated = schema_decorated(self.run)
        if raw and decorated:
            raise ScriptError("UserScriptError: run() cannot be decorated with both @rawhttp and @input_schema")
        if raw:
            self.kind = "raw"
            import flask  # noqa: PLC0415 - present: the script imported azureml_inference_server_http

            self.flask = flask
        elif decorated:
            self.kind = "object"

    def init(self):
        try:
            self.module.init()
        except BaseException as error:  # noqa: BLE001
            traceback.print_exc()
            raise ScriptError(f"UserScriptInitFailed: {type(error).__name__}: {error}") from error
        self._build_swagger()

    # Swagger, as azmlinfsrv's server/swagger.py builds it.
    BUILDERS = (("2", ("2", "2.0")), ("3", ("3", "3.0")), ("3.1", ("3.1",)))

    def _build_swagger(self):
        for version, aliases in self.BUILDERS:
            try:
                spec = self._read_user_swagger(version) or self._generate_swagger(version, aliases)
            except Exception:  # noqa: BLE001 - a swagger is optional; say why in the log
                log(f"swagger {version} could not be built:\n{traceback.format_exc()}")
                spec = None
            if spec is not None:
                for alias in aliases:
                    self.swagger[alias] = spec
                self.swagger_versions.append(version)
        self.swagger_versions.sort()

    def _read_user_swagger(self, version):
        names = ["swagger.json", "swagger2.json"] if version == "2" else [f"swagger{version}.json"]
        for name in names:
            try:
                with open(os.path.join(self.app_root, name), encoding="utf-8") as f:
                    return json.load(f)
            except FileNotFoundError:
                continue
        return None

    def _generate_swagger(self, version, aliases):
        try:
            from inference_schema.schema_util import (  # noqa: PLC0415
                get_input_schema,
                get_output_schema,
                get_supported_versions,
                is_schema_decorated,
            )
        except ImportError:
            return None
        if all(alias not in get_supported_versions(self.run) for alias in aliases):
            return None
        if is_schema_decorated(self.run):
            input_schema, output_schema = get_input_schema(self.run), get_output_schema(self.run)
        else:
            input_schema = output_schema = {"type": "object", "example": {}}
        prefix = os.environ.get("SERVICE_PATH_PREFIX", "")
        text = (
            (SWAGGER2_TEMPLATE if version == "2" else SWAGGER3_TEMPLATE)
            .replace("$SERVICE_NAME$", os.environ.get("SERVICE_NAME", "ML service"))
            .replace("$SERVICE_VERSION$", os.environ.get("SERVICE_VERSION", "1.0"))
            .replace("$PATH_PREFIX$", f"/{prefix.strip('/')}" if prefix else "")
        )
        spec = json.loads(text)
        if version == "2":
            spec["definitions"]["ServiceInput"] = input_schema
            spec["definitions"]["ServiceOutput"] = output_schema
        else:
            spec["components"]["schemas"]["ServiceInput"] = input_schema
            spec["components"]["schemas"]["ServiceOutput"] = output_schema
            if version == "3.1":
                spec["openapi"] = "3.1.0"
        return spec

    def get_swagger(self, version):
        """(status, message or spec) for GET /swagger.json?version=..."""
        supported = ", ".join(sorted(self.swagger_versions))
        if version not in ("2", "2.0", "3", "3.0", "3.1"):
            return 404, f"Swagger version [{version}] is not valid. Supported versions: [{supported}]."
        spec = self.swagger.get(version)
        if not spec:
            return 404, (
                f"Swagger version [{version}] is not supported for the scoring script. "
                f"Supported swagger versions: [{supported}]."
            )
        return 200, spec


def schema_decorated(run):
    if "inference_schema" not in sys.modules:
        return False
    from inference_schema.schema_util import is_schema_decorated  # noqa: PLC0415

    return is_schema_decorated(run)


# ---------------------------------------------------------------------------------------------
# Requests and responses


class Request:
    __slots__ = ("method", "target", "path", "query", "version", "headers", "body", "peer")

    def header(self, name, default=""):
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return default

    def mimetype(self):
        return self.header("content-type").split(";", 1)[0].strip().lower()

    def keep_alive(self):
        connection = self.header("connection").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection


class Response:
    __slots__ = ("status", "body", "headers")

    def __init__(self, status, body=b"", content_type="application/json", failed=None):
        self.status = status
        self.body = body
        self.headers = [("Content-Type", content_type)]
        if failed is not None:
            self.headers.append(("x-ms-run-function-failed", "True" if failed else "False"))


def json_response(status, value, failed=False):
    """azmlinfsrv's AMLResponse(value, status, json_str=True)."""
    return Response(status, json.dumps(value).encode(), "application/json", failed)


def error_response(status, message, failed=False):
    """azmlinfsrv's ErrorResponse: {"message": ...}."""
    return json_response(status, {"message": message}, failed)


def title_case(name):
    return "-".join(part.capitalize() for part in name.split("-"))


class Scorer:
    """Answers one parsed request: azmlinfsrv's routes, hooks and error handlers."""

    def __init__(self, script, timeout_ms, workers, port):
        self.script = script
        self.timeout_ms = timeout_ms
        self.workers = workers
        self.port = port
        self.access_log = bool(os.environ.get("MLCOMPUTE_SCORING_ACCESS_LOG"))

    def answer(self, request):
        started = time.perf_counter()
        response = self._route(request)
        if self.access_log:
            took = (time.perf_counter() - started) * 1000
            log(f"{request.method} {request.target} {response.status} {took:0.3f}ms {len(response.body)}")
        return response

    def _route(self, request):
        routes = {"/": ("GET", "HEAD", "OPTIONS"), "/swagger.json": ("GET", "HEAD", "OPTIONS"),
                  "/score": ("GET", "HEAD", "POST", "OPTIONS")}
        allowed = routes.get(request.path)
        if allowed is None:
            return error_response(404, MSG_NOT_FOUND)
        if request.method not in allowed:
            return error_response(405, MSG_METHOD_NOT_ALLOWED)
        # The blueprint's before_request: request ids.
        ids, refused = self._request_ids(request)
        if refused is not None:
            response = refused
        elif request.path == "/score":
            response = self._score(request)
        elif request.method == "OPTIONS":  # Flask's automatic OPTIONS
            response = Response(200, b"", "text/html; charset=utf-8")
            response.headers.append(("Allow", "GET, HEAD, OPTIONS"))
        elif request.path == "/":
            response = Response(200, b"Healthy", "text/html; charset=utf-8")
        else:
            response = self._swagger(request)
        # The blueprint's after_request: server version, ids, TraceId.
        response.headers.append(("x-ms-server-version", SERVER_NAME))
        response.headers.extend(ids)
        trace = request.header("traceid", None)
        if trace is not None:
            response.headers.append(("TraceId", trace))
        return response

    @staticmethod
    def _request_ids(request):
        """azmlinfsrv's _init_headers: (response headers, a 431 response or None)."""
        request_id = request.header("x-request-id", None)
        if request_id is None:
            request_id = str(uuid.uuid4())
        if len(request_id) > HEADER_LIMIT:
            return [], error_response(431, f"x-request-id must not exceed {HEADER_LIMIT} characters")
        legacy = request.header("x-ms-request-id")
        client = request.header("x-ms-client-request-id")
        if legacy:
            if not client:
                client = legacy
        else:
            legacy = client or request_id
        ids = [("x-request-id", request_id)] if request_id else []
        if len(legacy) > HEADER_LIMIT or len(client) > HEADER_LIMIT:
            refused = error_response(
                431, f"x-ms-request-id and x-ms-client-request-id must not exceed {HEADER_LIMIT} characters"
            )
            return ids, refused
        if legacy:
            ids.append(("x-ms-request-id", legacy))
        if client:
            ids.append(("x-ms-client-request-id", client))
        return ids, None

    def _swagger(self, request):
        version = "2"
        for key, value in parse_qsl(request.query, keep_blank_values=True):
            if key == "version":
                version = value
                break
        status, answer = self.script.get_swagger(version)
        if status != 200:
            return error_response(status, answer)
        return json_response(200, answer)

    def _arguments(self, request):
        """azmlinfsrv's input parsers: run()'s keyword arguments, or BadInput / None (unsupported method)."""
        script = self.script
        if script.kind == "raw":
            return {script.parameters[0].name: self._flask_request(request)}
        if request.method == "GET":
            parsed = {}
            for key, value in parse_qsl(request.query, keep_blank_values=True):
                value = parse_json_or_text(value)
                if key in parsed:
                    if not isinstance(parsed[key], _Multi):
                        parsed[key] = _Multi([parsed[key]])
                    parsed[key].append(value)
                else:
                    parsed[key] = value
            parsed = {k: list(v) if isinstance(v, _Multi) else v for k, v in parsed.items()}
            if script.kind == "text":
                return {script.parameters[0].name: json.dumps(parsed)}
            return self._extract(parsed)
        if request.method != "POST":
            return None
        if script.kind == "text":
            mimetype = request.mimetype()
            # Werkzeug's request.data: a form body is parsed as a form, leaving no data.
            body = b"" if mimetype in ("application/x-www-form-urlencoded", "multipart/form-data") else request.body
            try:
                return {script.parameters[0].name: str(body, "utf-8")}
            except UnicodeDecodeError as error:
                raise BadInput(400, f"Input cannot be decoded as UTF-8: {error}") from None
        mimetype = request.mimetype()
        if not (mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))):
            raise BadInput(415, "Expects Content-Type to be application/json")
        try:
            body = json.loads(request.body)
        except json.JSONDecodeError as error:
            if request.body:
                raise BadInput(400, f"POST body could not be decoded as JSON: {error}") from None
            raise BadInput(400, "POST body is empty. Expecting a JSON dictionary.") from None
        if not isinstance(body, dict):
            raise BadInput(400, "POST body should be a JSON dictionary.")
        return self._extract(body)

    def _extract(self, body):
        arguments = {}
        for parameter in self.script.parameters:
            value = body.get(parameter.name, parameter.default)
            if value is inspect.Parameter.empty:
                raise BadInput(400, f"A value is not provided for the {parameter.name!r} parameter.")
            arguments[parameter.name] = value
        return arguments

    def _score(self, request):
        try:
            arguments = self._arguments(request)
        except BadInput as error:
            return error_response(error.status, error.message)
        except Exception:  # noqa: BLE001 - azmlinfsrv's unhandled-exception handler
            log(f"Encountered Exception: {traceback.format_exc()}")
            return error_response(500, MSG_INTERNAL)
        if arguments is None:
            if request.method == "OPTIONS":
                return Response(200, b"", "text/html; charset=utf-8", failed=False)
            return error_response(405, "Method not allowed")
        if self.script.wants_headers:
            arguments["request_headers"] = {title_case(k): v for k, v in request.headers}
        started = time.perf_counter()
        timer = signal.setitimer(signal.ITIMER_REAL, self.timeout_ms / 1000) if self.timeout_ms > 0 else None
        try:
            output = self.script.run(**arguments)
        except ScoringTimeout:
            log(f"Encountered Exception: {traceback.format_exc()}")
            return error_response(500, f"Scoring timeout after {self.timeout_ms} ms", failed=True)
        except Exception:  # noqa: BLE001 - the user's exception goes to the log, not the caller
            log(f"Encountered Exception: {traceback.format_exc()}")
            return error_response(500, MSG_RUN_FAILED, failed=True)
        finally:
            if timer is not None:
                signal.setitimer(signal.ITIMER_REAL, 0)
        elapsed_ms = (time.perf_counter() - started) * 1000
        try:
            response = self._encode(output, request)
        except Exception:  # noqa: BLE001 - e.g. a result json cannot encode
            log(f"Encountered Exception: {traceback.format_exc()}")
            return error_response(500, MSG_INTERNAL)
        response.headers.append(("x-ms-run-fn-exec-ms", f"{elapsed_ms:.3f}"))
        return response

    def _encode(self, output, request):
        flask = self.script.flask
        if flask is not None and isinstance(output, flask.Response):
            app_iter, status, headers = output.get_wsgi_response(self._environ(request))
            try:
                body = b"".join(app_iter)
            finally:
                if hasattr(app_iter, "close"):
                    app_iter.close()
            response = Response(int(status.split(" ", 1)[0]))
            response.body = body
            response.headers = [
                (k, v) for k, v in headers if k.lower() not in ("content-length", "connection", "transfer-encoding")
            ]
            if response.status >= 500:
                response.headers = [(k, v) for k, v in response.headers if k.lower() != "x-ms-run-function-failed"]
                response.headers.append(("x-ms-run-function-failed", "True"))
            return response
        if output is None:
            return json_response(200, {})
        return json_response(200, output)

    def _environ(self, request):
        environ = {
            "REQUEST_METHOD": request.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(request.path).decode("latin-1"),
            "QUERY_STRING": request.query,
            "RAW_URI": request.target,
            "REQUEST_URI": request.target,
            "SERVER_NAME": "0.0.0.0",
            "SERVER_PORT": str(self.port),
            "SERVER_PROTOCOL": request.version,
            "REMOTE_ADDR": request.peer[0] if request.peer else "",
            "REMOTE_PORT": str(request.peer[1]) if request.peer else "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(request.body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": self.workers > 1,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
            "CONTENT_LENGTH": str(len(request.body)),
        }
        for key, value in request.headers:
            name = key.upper().replace("-", "_")
            if name == "CONTENT_TYPE":
                environ["CONTENT_TYPE"] = value
            elif name != "CONTENT_LENGTH":
                field = "HTTP_" + name
                environ[field] = f"{environ[field]},{value}" if field in environ else value
        return environ

    def _flask_request(self, request):
        return self.script.flask.Request(self._environ(request))


class _Multi(list):
    """A query parameter given more than once."""


def parse_json_or_text(value):
    try:
        return json.loads(value)
    except ValueError:
        return value


class ScoringTimeout(Exception):
    pass


def _alarm(_signum, _frame):
    raise ScoringTimeout


# ---------------------------------------------------------------------------------------------
# HTTP/1.1 over one worker's connections


class Connection:
    __slots__ = ("sock", "peer", "buffer", "last_active", "continued")

    def __init__(self, sock, peer):
        self.sock = sock
        self.peer = peer
        self.buffer = bytearray()
        self.last_active = time.monotonic()
        self.continued = False


class Incomplete(Exception):
    """More bytes are needed."""


class Malformed(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def parse_request(conn):
    """Takes one complete request off conn.buffer, or raises Incomplete / Malformed."""
    buffer = conn.buffer
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_HEAD_BYTES:
            raise Malformed(431, "Request header fields too large")
        raise Incomplete
    head = bytes(buffer[:end]).decode("latin-1")
    lines = head.split("\r\n")
    while lines and not lines[0]:  # stray CRLF between requests
        lines.pop(0)
    if not lines:
        del buffer[: end + 4]
        raise Incomplete
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise Malformed(400, "Bad request line")
    request = Request()
    request.method, request.target, request.version = parts
    request.peer = conn.peer
    request.headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise Malformed(400, "Bad header line")
        request.headers.append((name, value.strip()))
    path, _, query = request.target.partition("?")
    if path.startswith("http://") or path.startswith("https://"):  # absolute form
        path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
    request.path, request.query = path, query
    start = end + 4
    if "chunked" in request.header("transfer-encoding").lower():
        body, consumed = parse_chunked(buffer, start)
        request.body = body
        total = consumed
    else:
        length = request.header("content-length", "0") or "0"
        if not length.isdigit():
            raise Malformed(400, "Bad Content-Length")
        length = int(length)
        if length > MAX_BODY_BYTES:
            raise Malformed(413, "Request body too large")
        if len(buffer) - start < length:
            if not conn.continued and request.header("expect").lower() == "100-continue":
                conn.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                conn.continued = True
            raise Incomplete
        request.body = bytes(buffer[start : start + length])
        total = start + length
    del buffer[:total]
    conn.continued = False
    return request


def parse_chunked(buffer, position):
    body = bytearray()
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            raise Incomplete
        size_text = bytes(buffer[position:line_end]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise Malformed(400, "Bad chunk size") from None
        position = line_end + 2
        if size == 0:
            trailer_end = buffer.find(b"\r\n\r\n", position - 2)
            if trailer_end < 0:
                raise Incomplete
            return bytes(body), trailer_end + 4
        if len(buffer) < position + size + 2:
            raise Incomplete
        body += buffer[position : position + size]
        if len(body) > MAX_BODY_BYTES:
            raise Malformed(413, "Request body too large")
        position += size + 2


def serialize(response, head_only, keep_alive):
    reason = HTTPStatus(response.status).phrase if response.status in HTTPStatus._value2member_map_ else "Unknown"
    lines = [f"HTTP/1.1 {response.status} {reason}", f"Server: {SERVER_NAME}", f"Content-Length: {len(response.body)}"]
    lines.extend(f"{k}: {v}" for k, v in response.headers)
    if not keep_alive:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body


class Worker:
    """One worker process: init(), then serves its connections one request at a time."""

    def __init__(self, listener, scorer, keep_alive):
        self.listener = listener
        self.scorer = scorer
        self.keep_alive = keep_alive
        self.selector = selectors.DefaultSelector()
        self.connections = {}
        self.stopping = False
        self.parent = os.getppid()

    def stop(self, _signum=None, _frame=None):
        self.stopping = True

    def serve(self):
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        self.selector.register(self.listener, selectors.EVENT_READ)
        next_sweep = time.monotonic() + 5
        while not self.stopping:
            for key, _ in self.selector.select(timeout=0.5):
                if key.fileobj is self.listener:
                    self.accept()
                else:
                    self.read(key.fileobj)
            if os.getppid() != self.parent:  # the server process died (e.g. SIGKILL): stop too
                break
            now = time.monotonic()
            if now >= next_sweep:
                next_sweep = now + 5
                for conn in [c for c in self.connections.values() if now - c.last_active > KEEPALIVE_SECONDS]:
                    self.close(conn)
        for conn in list(self.connections.values()):
            self.close(conn)

    def accept(self):
        # One worker takes what is waiting; of several, each takes one connection and serves it
        # before listening again, so connections spread over the free workers.
        if not self.keep_alive and self.connections:
            return
        for _ in range(64 if self.keep_alive else 1):
            try:
                sock, peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return  # another worker took it
            except OSError as error:  # e.g. EMFILE: leave it in the backlog for now
                log(f"accept failed: {error}")
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(60)
            conn = Connection(sock, peer)
            self.connections[sock.fileno()] = conn
            self.selector.register(sock, selectors.EVENT_READ)
            if not self.keep_alive:  # one connection at a time: the others go to free workers
                self.selector.unregister(self.listener)
                return

    def close(self, conn):
        self.connections.pop(conn.sock.fileno(), None)
        try:
            self.selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()
        if not self.keep_alive and not self.connections and not self.stopping:
            self.selector.register(self.listener, selectors.EVENT_READ)

    def read(self, sock):
        conn = self.connections.get(sock.fileno())
        if conn is None:
            return
        try:
            data = sock.recv(262144)
        except (BlockingIOError, InterruptedError, socket.timeout):
            return
        except OSError:
            self.close(conn)
            return
        if not data:
            self.close(conn)
            return
        conn.buffer += data
        conn.last_active = time.monotonic()
        while conn.buffer:
            try:
                request = parse_request(conn)
            except Incomplete:
                return
            except Malformed as error:
                self.send(conn, serialize(error_response(error.status, error.message), False, False))
                self.close(conn)
                return
            keep_alive = self.keep_alive and request.keep_alive() and not self.stopping
            response = self.scorer.answer(request)
            if not self.send(conn, serialize(response, request.method == "HEAD", keep_alive)) or not keep_alive:
                self.close(conn)
                return

    def send(self, conn, data):
        try:
            conn.sock.sendall(data)  # one write: head and body together
            return True
        except OSError:
            return False


# ---------------------------------------------------------------------------------------------
# The process


def parse_args(argv):
    env = os.environ.get
    parser = argparse.ArgumentParser(description="Serve an Azure ML scoring script (init/run) as azmlinfsrv does.")
    parser.add_argument("entry", nargs="?", help="the scoring script (same as --entry-script)")
    parser.add_argument("--entry-script", default=env("AZUREML_ENTRY_SCRIPT"))
    parser.add_argument("--model-dir", default=env("AZUREML_MODEL_DIR"))
    parser.add_argument("--port", type=int, default=int(env("AZUREML_SERVING_PORT", DEFAULT_PORT)))
    parser.add_argument("--host", default=env("MLCOMPUTE_SCORING_HOST", "0.0.0.0"))
    parser.add_argument("--workers", type=int, default=int(env("WORKER_COUNT", "1")))
    args = parser.parse_args(argv)
    args.entry_script = args.entry or args.entry_script
    if not args.entry_script:
        parser.error("no scoring script: pass --entry-script or set AZUREML_ENTRY_SCRIPT")
    if args.workers < 1:
        parser.error(f"WORKER_COUNT must be at least 1, not {args.workers}")
    return args


def worker_main(listener, args, timeout_ms):
    """In a forked worker: load the script, init(), serve. Never returns."""
    code = 0
    try:
        signal.signal(signal.SIGALRM, _alarm)
        script = Script(args.entry_script, os.environ.get("AML_APP_ROOT") or os.getcwd())
        try:
            script.load()
            script.init()
        except ScriptError as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
            code = BOOT_FAILED
        else:
            log(f"worker ready: {script.kind} run() of {script.path}")
            Worker(listener, Scorer(script, timeout_ms, args.workers, args.port), args.workers == 1).serve()
    except BaseException:  # noqa: BLE001 - a worker never returns into the parent's code
        traceback.print_exc()
        code = code or 1
    finally:
        sys.stderr.flush()
        os._exit(code)


def main(argv=None):
    args = parse_args(argv)
    if args.model_dir:
        os.environ["AZUREML_MODEL_DIR"] = args.model_dir
    timeout_ms = int(os.environ.get("SCORING_TIMEOUT_MS", DEFAULT_SCORING_TIMEOUT_MS))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.listen(LISTEN_BACKLOG)
    listener.setblocking(False)
    host, port = listener.getsockname()[:2]
    log(
        f"the shipped scoring server (python/{SERVER_NAME}.py, Python {sys.version.split()[0]}) serves "
        f"{args.entry_script} on {host}:{port} with {args.workers} worker(s)"
    )
    stopping = []
    workers = {}

    def spawn():
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            worker_main(listener, args, timeout_ms)
        workers[pid] = time.monotonic()

    def stop(_signum, _frame):
        stopping.append(True)
        for pid in list(workers):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in range(args.workers):
        spawn()
    status = 0
    while workers:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        workers.pop(pid, None)
        code = os.WEXITSTATUS(wait_status) if os.WIFEXITED(wait_status) else -os.WTERMSIG(wait_status)
        if stopping:
            continue
        if code == BOOT_FAILED:
            status = 1  # the script cannot be served: stop (the worker printed why)
            stop(None, None)
        else:
            log(f"worker {pid} exited with {code}; starting another")
            time.sleep(0.1)
            spawn()
    listener.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
