"""Medians of the controller burst benchmark's runs (one JSON object per line on stdin)."""
import json
import statistics
import sys

runs = [json.loads(line) for line in sys.stdin if line.strip()]
first = runs[0]


def med(key):
    return statistics.median(r[key] for r in runs)


# What the operator wrote: not the benchmark's creates, nor the scheduler's bindings and KWOK's pod
# status and node leases, which the floor's Pods cause just the same.
NOT_OPERATOR = {"trainingjobs", "pods/binding", "pods/status", "leases"}
for r in runs:
    own = {k: v for k, v in r["writes_by_resource"].items() if k not in NOT_OPERATOR}
    r["operator_writes_per_job"] = sum(own.values()) / r["jobs"]
    r["operator_writes_per_job_without_events"] = sum(v for k, v in own.items() if k != "events") / r["jobs"]


print()
print(f"jobs per run: {first['jobs']}, runs: {len(runs)}, operator QPS/burst/concurrency: "
      f"{first['kube_qps']}/{first['kube_burst']}/{first.get('operator_concurrency', '?')}")
print(f"raw-client floor (pods Running):     median {med('floor_seconds'):.2f} s")
print(f"mlcompute (job pods Running):        median {med('operator_seconds'):.2f} s   "
      f"ratio {med('ratio'):.2f}x (target <= 1.2x); per run {[round(r['ratio'], 2) for r in runs]}")
print(f"all jobs in phase Running:           median {med('all_jobs_running_seconds'):.2f} s")
print(f"operator writes per job:             median {med('operator_writes_per_job'):.2f} "
      f"(without Events {med('operator_writes_per_job_without_events'):.2f})")
print(f"operator writes in a no-op resync:   {[sum(v for k, v in r['resync_writes'].items() if k != 'leases') for r in runs]}")
print(f"operator RSS idle / at N jobs (MiB): {med('rss_mib_idle'):.1f} / {med('rss_mib_at_n_jobs'):.1f} (target <= 40)")
print(f"writes by resource (run 1):          {first['writes_by_resource']}")
