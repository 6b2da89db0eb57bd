"""mlcompute batch worker: runs a user's Azure-ML-style scoring script for `mlcompute batch-driver`.

Standard library only. Started once per worker slot; the driver talks to it over stdin/stdout with
length-prefixed frames: 4 bytes big-endian length, then that many bytes of UTF-8 JSON.

  worker -> driver  {"ready": true, "init_ms": F}            after init() returned
                    {"ready": false, "error": S, "detail": S} when import or init() failed (then it exits)
  driver -> worker  {"id": N, "items": [path, ...], "rows": bool}
  worker -> driver  {"id": N, "rows": [str, ...], "failed": [{"index": I, "reason": S, "detail": S}],
                     "run_ms": F, "isolated": bool}

Scoring contract (as Azure ML batch deployments): the script defines `init()` (optional, called once)
and `run(mini_batch)` with a list of absolute file paths. `run` returns what becomes output rows:
  * None                         -> no rows;
  * a list, tuple or other iterable -> one row per element;
  * a pandas DataFrame (duck-typed: `itertuples`) -> one row per DataFrame row;
  * a single str or dict         -> one row.
Each element is rendered on one line: a str as is (newlines escaped as \\n), bytes decoded as UTF-8,
a list/tuple as a CSV record, a dict as a CSV record of its values (insertion order), anything else as
str(value).

Failures: when `run` raises for a mini-batch of several files, the worker isolates the failing files by
calling `run([path])` once per file, in order; the files whose call raises are the failed items (with the
exception as reason), the rows of the others are kept in file order. A file that fails alone is failed.

The user's prints cannot corrupt the protocol: file descriptor 1 is pointed at stderr and `sys.stdout`
is `sys.stderr`; frames go to a private duplicate of the original stdout. Standard input is replaced by
/dev/null for the same reason. The worker exits when its input closes or its parent dies.
"""

import csv
import importlib.util
import io
import json
import os
import signal
import struct
import sys
import time
import traceback

_MAX_FRAME = 256 * 1024 * 1024
_DETAIL_LIMIT = 4000


def _die_with_parent():
    """Best effort: ask Linux to SIGKILL this process when the driver dies (so a hung run() goes too)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except Exception:  # noqa: BLE001 - not Linux, or no libc: EOF on stdin still ends us
        pass


def _private_streams():
    """Returns (frame_in, frame_out) private binary streams, and re-points fds 0 and 1."""
    frame_out = os.fdopen(os.dup(1), "wb", buffering=0)
    frame_in = os.fdopen(os.dup(0), "rb")
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdout = sys.stderr
    return frame_in, frame_out


def _send(out, message):
    payload = json.dumps(message, separators=(",", ":"), default=str).encode("utf-8")
    out.write(struct.pack(">I", len(payload)) + payload)


def _recv(inp):
    header = inp.read(4)
    if len(header) < 4:
        return None
    (length,) = struct.unpack(">I", header)
    if length > _MAX_FRAME:
        raise ValueError("frame of %d bytes is larger than the limit" % length)
    payload = inp.read(length)
    if len(payload) < length:
        return None
    return json.loads(payload.decode("utf-8"))


def _describe(exc):
    reason = "%s: %s" % (type(exc).__name__, exc)
    reason = reason.strip().replace("\n", " ")[:500]
    detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return reason, detail[-_DETAIL_LIMIT:]


def _csv_record(values):
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(["" if v is None else v for v in values])
    return buf.getvalue()


def _render_one(value):
    if isinstance(value, str):
        return value.replace("\r", "\\r").replace("\n", "\\n")
    if isinstance(value, (bytes, bytearray)):
        return _render_one(bytes(value).decode("utf-8", errors="replace"))
    if isinstance(value, (list, tuple)):
        return _csv_record(value)
    if isinstance(value, dict):
        return _csv_record(list(value.values()))
    return _render_one(str(value))


def _render(result):
    if result is None:
        return []
    if isinstance(result, (str, bytes, bytearray, dict)):
        return [_render_one(result)]
    if hasattr(result, "itertuples") and hasattr(result, "columns"):
        return [_csv_record(list(row)) for row in result.itertuples(index=False)]
    return [_render_one(value) for value in result]


def _load(script):
    directory = os.path.dirname(os.path.abspath(script))
    if directory not in sys.path:
        sys.path.insert(0, directory)
    name = os.path.splitext(os.path.basename(script))[0]
    spec = importlib.util.spec_from_file_location(name, script)
    if spec is None or spec.loader is None:
        raise ImportError("cannot load scoring script %s" % script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    if not callable(getattr(module, "run", None)):
        raise AttributeError("scoring script %s defines no run(mini_batch)" % script)
    return module


def _score(module, items, keep_rows):
    """Runs one mini-batch; isolates failing files when the whole call raises."""
    started = time.perf_counter()
    try:
        rows = _render(module.run(list(items)))
        return rows if keep_rows else [], [], (time.perf_counter() - started) * 1000.0, False
    except Exception as exc:  # noqa: BLE001 - user code
        if len(items) == 1:
            reason, detail = _describe(exc)
            elapsed = (time.perf_counter() - started) * 1000.0
            return [], [{"index": 0, "reason": reason, "detail": detail}], elapsed, False
    rows, failed = [], []
    for index, item in enumerate(items):
        try:
            item_rows = _render(module.run([item]))
            if keep_rows:
                rows.extend(item_rows)
        except Exception as exc:  # noqa: BLE001 - user code
            reason, detail = _describe(exc)
            failed.append({"index": index, "reason": reason, "detail": detail})
    return rows, failed, (time.perf_counter() - started) * 1000.0, True


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: mlcompute_batch_worker.py SCORING_SCRIPT\n")
        return 2
    _die_with_parent()
    frame_in, frame_out = _private_streams()
    started = time.perf_counter()
    try:
        module = _load(argv[1])
        init = getattr(module, "init", None)
        if callable(init):
            init()
    except BaseException as exc:  # noqa: BLE001 - report any start-up failure, then exit
        reason, detail = _describe(exc)
        _send(frame_out, {"ready": False, "error": reason, "detail": detail})
        return 1
    _send(frame_out, {"ready": True, "init_ms": (time.perf_counter() - started) * 1000.0})
    while True:
        request = _recv(frame_in)
        if request is None:
            return 0
        rows, failed, run_ms, isolated = _score(module, request["items"], request.get("rows", True))
        _send(
            frame_out,
            {"id": request["id"], "rows": rows, "failed": failed, "run_ms": run_ms, "isolated": isolated},
        )


if __name__ == "__main__":
    sys.exit(main(sys.argv))
