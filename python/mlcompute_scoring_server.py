#!/usr/bin/env python3
"""mlcompute scoring server: Azure ML's online scoring contract, Python standard library only.

It imports the user's scoring script, calls its ``init()`` once, then answers
``POST /score`` by calling ``run(raw_data)`` with the request body as text. Any image with
python3 can serve a scoring script this way; no pip install is needed.

Routes (as Azure ML's inference server):
  GET  /         liveness: 200 once the process serves
  GET  /readyz   readiness: 200 after init() succeeded
  POST /score    run(raw_data); the result is returned as JSON (a str or bytes result as is)

Configuration (flag, else environment, else default):
  --entry-script  AZUREML_ENTRY_SCRIPT   path of the scoring script (required)
  --model-dir     AZUREML_MODEL_DIR      exported to the script as AZUREML_MODEL_DIR
  --port          AZUREML_SERVING_PORT   5001
  --host          MLCOMPUTE_SCORING_HOST 0.0.0.0 (tests pass 127.0.0.1)
  --workers       WORKER_COUNT           1: run() calls at once (Azure ML's WORKER_COUNT)

Errors: an exception in run() answers 500 with {"error": ..., "type": ...}; a script that
fails to import, lacks init()/run(), or whose init() raises stops the server with exit code 1
and a one-line reason (Azure ML's UserScriptImportError, UserScriptFunctionNotFound,
UserScriptInitFailed).

This file is shipped inside the mlcompute binary (crate::router::SCORING_SERVER_PY) and
written into deployment pods by the operator.
"""

import argparse
import importlib.util
import json
import os
import signal
import sys
import threading
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_PORT = 5001
MAX_BODY_BYTES = 100 * 1024 * 1024


class ScriptError(Exception):
    """The scoring script cannot be served; the message is Azure ML's error code and reason."""


def load_script(path):
    """Imports the scoring script as a module and checks it has init() and run()."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise ScriptError(f"UserScriptImportError: no scoring script at {path}")
    directory = os.path.dirname(path)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    spec = importlib.util.spec_from_file_location("score", path)
    if spec is None or spec.loader is None:
        raise ScriptError(f"UserScriptImportError: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # noqa: BLE001 - any import failure is the user's
        raise ScriptError(f"UserScriptImportError: {type(error).__name__}: {error}") from error
    for name in ("init", "run"):
        if not callable(getattr(module, name, None)):
            raise ScriptError(f"UserScriptFunctionNotFound: {path} has no {name}() function")
    return module


def encode_result(result):
    """Turns run()'s return value into (body bytes, content type)."""
    if isinstance(result, bytes):
        return result, "application/octet-stream"
    if isinstance(result, str):
        try:
            json.loads(result)
            return result.encode(), "application/json"
        except ValueError:
            return result.encode(), "text/plain; charset=utf-8"
    return json.dumps(result).encode(), "application/json"


class Scorer:
    """Holds the script and bounds concurrent run() calls."""

    def __init__(self, module, workers):
        self.module = module
        self.slots = threading.BoundedSemaphore(max(1, workers))
        self.ready = False

    def init(self):
        try:
            self.module.init()
        except Exception as error:  # noqa: BLE001
            traceback.print_exc()
            raise ScriptError(f"UserScriptInitFailed: {type(error).__name__}: {error}") from error
        self.ready = True

    def run(self, raw_data):
        with self.slots:
            return self.module.run(raw_data)


def make_handler(scorer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the router pools connections
        server_version = "mlcompute-scoring"
        timeout = 120  # idle keep-alive connections end after this many seconds

        def log_message(self, format, *args):  # noqa: A002 - the base class's name
            if os.environ.get("MLCOMPUTE_SCORING_ACCESS_LOG"):
                sys.stderr.write("%s %s\n" % (self.address_string(), format % args))

        def reply(self, status, body, content_type="application/json"):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def reply_error(self, status, message, kind):
            self.reply(status, json.dumps({"error": message, "type": kind}).encode())

        def do_GET(self):
            if self.path == "/":
                self.reply(HTTPStatus.OK, b"Healthy", "text/plain; charset=utf-8")
            elif self.path == "/readyz":
                if scorer.ready:
                    self.reply(HTTPStatus.OK, b"Ready", "text/plain; charset=utf-8")
                else:
                    self.reply(HTTPStatus.SERVICE_UNAVAILABLE, b"init() has not finished", "text/plain")
            else:
                self.reply_error(HTTPStatus.NOT_FOUND, f"no route {self.path}; score with POST /score", "NotFound")

        def do_POST(self):
            path = self.path.split("?", 1)[0]
            if path != "/score":
                self.reply_error(HTTPStatus.NOT_FOUND, f"no route {path}; score with POST /score", "NotFound")
                return
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                self.reply_error(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required", "LengthRequired")
                self.close_connection = True
                return
            if int(length) > MAX_BODY_BYTES:
                self.reply_error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large", "TooLarge")
                self.close_connection = True
                return
            raw = self.rfile.read(int(length))
            try:
                raw_data = raw.decode("utf-8")
            except UnicodeDecodeError:
                raw_data = raw
            try:
                body, content_type = encode_result(scorer.run(raw_data))
            except Exception as error:  # noqa: BLE001 - report the user's exception
                traceback.print_exc()
                self.reply_error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(error).__name__}: {error}", "UserError")
                return
            self.reply(HTTPStatus.OK, body, content_type)

    return Handler


def parse_args(argv):
    env = os.environ.get
    parser = argparse.ArgumentParser(description="Serve an Azure ML scoring script (init/run).")
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
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.model_dir:
        os.environ["AZUREML_MODEL_DIR"] = args.model_dir
    try:
        scorer = Scorer(load_script(args.entry_script), args.workers)
        scorer.init()
    except ScriptError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    server = ThreadingHTTPServer((args.host, args.port), make_handler(scorer))
    server.daemon_threads = True

    def stop(_signum, _frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    host, port = server.server_address[:2]
    print(f"scoring server listening on {host}:{port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
