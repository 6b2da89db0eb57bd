"""`azmlinfsrv` listening on 127.0.0.1 only, with the same arguments.

azureml-inference-server-http 1.5.1 always binds 0.0.0.0 (``constants.DEFAULT_HOST``, no flag or
setting changes it); the tests and benchmarks here may listen on loopback only. Run it with the
venv's python: ``$VENV/bin/python e2e/python/azmlinfsrv_loopback.py --entry_script score.py ...``.
"""

import sys

from azureml_inference_server_http import amlserver

amlserver.DEFAULT_HOST = "127.0.0.1"
sys.argv[0] = "azmlinfsrv"
sys.exit(amlserver.run())
