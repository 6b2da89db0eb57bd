"""Benchmark of `mlcompute batch-driver` against a naive one-process-per-mini-batch runner.

Driver numbers come from the driver's own timing (`_mlcompute/progress-00000.json`):
  overhead per mini-batch = time from sending a mini-batch to the worker to decoding its result,
                            minus the time spent inside the user's run();
  per file                = driver wall time (listing, worker start, scoring, journal, merge) / files.
The naive baseline starts `python3 -c RUNNER score.py FILE...` per mini-batch (import, init(), run(),
print rows, exit), with the same parallelism, over a subset of the mini-batches; its per-mini-batch
latency and per-file wall time are extrapolated to the whole input (they do not depend on its size).
"""

import argparse
import concurrent.futures
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

SCORE = "def init():\n    pass\n\n\ndef run(mini_batch):\n    return mini_batch\n"

NAIVE_RUNNER = r"""
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("score", sys.argv[1])
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
m.init()
t = time.perf_counter()
rows = m.run(sys.argv[2:])
run_ms = (time.perf_counter() - t) * 1000
sys.stdout.write("\n".join(map(str, rows)) + "\n")
sys.stderr.write("%f" % run_ms)
"""


def percentile(samples, q):
    ordered = sorted(samples)
    if not ordered:
        return 0.0
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 1))))
    return ordered[rank - 1]


def generate(root, count):
    marker = root + ".complete"
    if os.path.exists(marker):
        return
    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    for i in range(count):
        sub = os.path.join(root, "d%03d" % (i // 1000))
        if i % 1000 == 0:
            os.makedirs(sub, exist_ok=True)
        open(os.path.join(sub, "f%06d" % i), "wb").close()
    open(marker, "w").close()
    print("generated %d empty files in %.1f s" % (count, time.perf_counter() - started), file=sys.stderr)


def list_files(root):
    files = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            files.append(os.path.join(dirpath, name))
    files.sort()
    return files


def driver_run(args, input_dir, script, out):
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run(
        [args.binary, "batch-driver", "--input", input_dir, "--output", out, "--scoring-script", script,
         "--mini-batch-size", "10", "--max-concurrency", str(args.concurrency), "--progress-interval", "1s"],
        check=True, stdout=subprocess.DEVNULL, env=dict(os.environ, RUST_LOG="warn"),
    )
    wall = time.perf_counter() - started
    with open(os.path.join(out, "_mlcompute", "progress-00000.json")) as f:
        timing = json.load(f)["timing"]
    with open(os.path.join(out, "predictions.csv"), "rb") as f:
        rows = sum(1 for _ in f)
    if rows != args.files:
        raise SystemExit("driver wrote %d rows for %d files" % (rows, args.files))
    return {
        "overhead_p50_ms": timing["overheadP50Ms"],
        "overhead_p99_ms": timing["overheadP99Ms"],
        "round_trip_p50_ms": timing["roundTripP50Ms"],
        "round_trip_p99_ms": timing["roundTripP99Ms"],
        "per_file_ms": timing["wallPerFileMs"],
        "process_per_file_ms": wall * 1000.0 / rows,
        "wall_s": wall,
    }


def naive_run(args, batches, script):
    def one(batch):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", NAIVE_RUNNER, script] + batch,
                              check=True, capture_output=True)
        latency = (time.perf_counter() - started) * 1000.0
        return latency, latency - float(done.stderr.decode() or 0), done.stdout.count(b"\n")

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        results = list(pool.map(one, batches))
    wall = time.perf_counter() - started
    files = sum(len(b) for b in batches)
    overheads = [r[1] for r in results]
    latencies = [r[0] for r in results]
    return {
        "overhead_p50_ms": percentile(overheads, 0.5),
        "overhead_p99_ms": percentile(overheads, 0.99),
        "round_trip_p50_ms": percentile(latencies, 0.5),
        "round_trip_p99_ms": percentile(latencies, 0.99),
        "per_file_ms": wall * 1000.0 / files,
        "process_per_file_ms": wall * 1000.0 / files,
        "wall_s": wall,
    }


def median_of(runs, key):
    return statistics.median(r[key] for r in runs)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--naive-mini-batches", type=int, default=400)
    parser.add_argument("--dir", default="/tmp/mlcompute-bench-batch")
    args = parser.parse_args()

    os.makedirs(args.dir, exist_ok=True)
    input_dir = os.path.join(args.dir, "input-%d" % args.files)
    generate(input_dir, args.files)
    script = os.path.join(args.dir, "score.py")
    with open(script, "w") as f:
        f.write(SCORE)
    files = list_files(input_dir)
    batches = [files[i:i + 10] for i in range(0, len(files), 10)]
    step = max(1, len(batches) // args.naive_mini_batches)
    subset = batches[::step][: args.naive_mini_batches]

    driver_runs, naive_runs = [], []
    for run in range(args.runs):
        d = driver_run(args, input_dir, script, os.path.join(args.dir, "out"))
        driver_runs.append(d)
        n = naive_run(args, subset, script)
        naive_runs.append(n)
        print("run %d: driver %.2f s for %d files, naive %.2f s for %d mini-batches" %
              (run + 1, d["wall_s"], args.files, n["wall_s"], len(subset)), file=sys.stderr)

    keys = [
        ("overhead per mini-batch p50 (ms)", "overhead_p50_ms"),
        ("overhead per mini-batch p99 (ms)", "overhead_p99_ms"),
        ("send-to-result per mini-batch p50 (ms)", "round_trip_p50_ms"),
        ("send-to-result per mini-batch p99 (ms)", "round_trip_p99_ms"),
        ("driver wall per file (ms)", "per_file_ms"),
        ("process wall per file, incl. start/exit (ms)", "process_per_file_ms"),
    ]
    print()
    print("batch driver vs naive baseline: %d empty files, mini-batch 10, concurrency %d, median of %d runs"
          % (args.files, args.concurrency, args.runs))
    print("(naive: %d of %d mini-batches per run, extrapolated)" % (len(subset), len(batches)))
    print()
    print("| metric | mlcompute batch-driver | naive (process per mini-batch) | naive / driver |")
    print("|---|---:|---:|---:|")
    for label, key in keys:
        d, n = median_of(driver_runs, key), median_of(naive_runs, key)
        ratio = n / d if d > 0 else float("inf")
        print("| %s | %.3f | %.3f | %.0f× |" % (label, d, n, ratio))
    d_wall = median_of(driver_runs, "wall_s")
    n_wall = median_of(naive_runs, "per_file_ms") * args.files / 1000.0
    print("| whole input wall (s) | %.2f | %.1f (extrapolated) | %.0f× |" % (d_wall, n_wall, n_wall / d_wall))
    p50 = median_of(driver_runs, "overhead_p50_ms")
    per_file = median_of(driver_runs, "process_per_file_ms")
    speedup = median_of(naive_runs, "per_file_ms") / median_of(driver_runs, "process_per_file_ms")
    print()
    print("targets: p50 overhead <= 5 ms: %s (%.3f); per file <= 0.2 ms: %s (%.4f); >= 20x naive: %s (%.0fx)" % (
        "PASS" if p50 <= 5 else "FAIL", p50,
        "PASS" if per_file <= 0.2 else "FAIL", per_file,
        "PASS" if speedup >= 20 else "FAIL", speedup))


if __name__ == "__main__":
    main()
