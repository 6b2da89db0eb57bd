//! Controller burst benchmark (not a test): N single-instance TrainingJobs created at once, time
//! until all their Pods are Running, against the floor of a raw client creating the same N Pods
//! directly, on the same plane in the same run. Also: API writes per job (from the API server's
//! own request counter), writes during a no-op resync (operator restart), and operator RSS.
//!
//! Run through `bench/training/run`, which brings up a plane and builds the release binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, HashMap},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::{
    Api, Client, Config,
    api::PostParams,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{WatchStreamExt, watcher},
};
use mlcompute::api::training_job::TrainingJob;
use serde_json::json;

fn arg(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

async fn client(path: &str) -> Client {
    let kc = Kubeconfig::read_from(path).unwrap();
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(cfg).unwrap()
}

/// Write requests the API server has served, by resource, from its `apiserver_request_total`.
async fn writes(client: &Client) -> BTreeMap<String, f64> {
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(req).await.unwrap();
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let verb = label(line, "verb");
        if !matches!(verb.as_str(), "POST" | "PUT" | "PATCH" | "DELETE" | "APPLY") {
            continue;
        }
        let resource = label(line, "resource");
        let sub = label(line, "subresource");
        let key = if sub.is_empty() {
            resource
        } else {
            format!("{resource}/{sub}")
        };
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap_or(0.0);
        *out.entry(key).or_default() += value;
    }
    out
}

fn label(line: &str, name: &str) -> String {
    let key = format!("{name}=\"");
    line.split(&key)
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("")
        .to_string()
}

fn delta(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

async fn new_namespace(client: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({ "metadata": { "name": name } })).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

/// Watches `api` from before a burst (a watch, not repeated LISTs of N objects, so measuring
/// loads the API server as little as possible): returns when `n` objects exist and when `n` of
/// them satisfy `done`, both measured from `start`.
fn watch_until<K>(
    api: Api<K>,
    n: usize,
    start: Instant,
    done: fn(&K) -> bool,
) -> tokio::task::JoinHandle<(Duration, Duration)>
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    tokio::spawn(async move {
        let mut seen: HashMap<String, bool> = HashMap::new();
        let (mut all_exist, mut finished) = (None, 0usize);
        let stream = watcher(api, watcher::Config::default()).applied_objects();
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            let Ok(object) = event else { continue };
            let name = object.meta().name.clone().unwrap_or_default();
            let now_done = done(&object);
            match seen.insert(name, now_done) {
                Some(false) | None if now_done => finished += 1,
                Some(true) if !now_done => finished -= 1,
                _ => {}
            }
            if all_exist.is_none() && seen.len() >= n {
                all_exist = Some(start.elapsed());
            }
            if finished >= n {
                return (all_exist.unwrap_or_default(), start.elapsed());
            }
        }
        panic!("watch ended");
    })
}

fn pod_running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

fn job_running(job: &TrainingJob) -> bool {
    job.status.as_ref().and_then(|s| s.phase) == Some(mlcompute::api::common::JobPhase::Running)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn start_operator(
    bin: &str,
    kubeconfig: &str,
    ns: &str,
    qps: &str,
    burst: &str,
    concurrency: &str,
) -> Child {
    Command::new(bin)
        .args([
            "operator",
            "--kubeconfig",
            kubeconfig,
            "--namespaces",
            ns,
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .args([
            "--kube-qps",
            qps,
            "--kube-burst",
            burst,
            "--concurrency",
            concurrency,
            "--log-level",
            "warn",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start operator")
}

#[tokio::main]
async fn main() {
    let kubeconfig = arg("MLC_KUBECONFIG", "");
    let bin = arg("MLCOMPUTE_BIN", "target/release/mlcompute");
    let n: usize = arg("JOBS", "1000").parse().unwrap();
    let concurrency: usize = arg("CONCURRENCY", "32").parse().unwrap();
    let (qps, burst) = (arg("KUBE_QPS", "500"), arg("KUBE_BURST", "1000"));
    let op_concurrency = arg("OPERATOR_CONCURRENCY", "32");
    let run = arg("RUN_ID", "0");
    let client = client(&kubeconfig).await;

    // Floor: the same number of Pods, created directly by a raw client.
    let floor_ns = format!("bench-floor-{run}");
    new_namespace(&client, &floor_ns).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &floor_ns);
    let start = Instant::now();
    let floor_watch = watch_until(pods.clone(), n, start, pod_running);
    stream::iter(0..n)
        .for_each_concurrent(concurrency, |i| {
            let pods = pods.clone();
            async move {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": { "name": format!("p-{i}") },
                    "spec": { "restartPolicy": "Never", "containers": [{ "name": "main", "image": "busybox",
                        "command": ["/bin/sh", "-c", "true"],
                        "resources": { "requests": { "cpu": "100m", "memory": "2Gi" }, "limits": { "cpu": "2", "memory": "2Gi" } } }] }
                }))
                .unwrap();
                pods.create(&PostParams::default(), &pod).await.unwrap();
            }
        })
        .await;
    let (floor_created, floor) = floor_watch.await.unwrap();

    // mlcompute: N TrainingJobs created the same way; the operator makes the Pods.
    let ns = format!("bench-jobs-{run}");
    new_namespace(&client, &ns).await;
    let mut op = start_operator(&bin, &kubeconfig, &ns, &qps, &burst, &op_concurrency);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss_kib(op.id());
    let jobs: Api<TrainingJob> = Api::namespaced(client.clone(), &ns);
    let job_pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let before = writes(&client).await;
    let start = Instant::now();
    let pods_watch = watch_until(job_pods, n, start, pod_running);
    let jobs_watch = watch_until(jobs.clone(), n, start, job_running);
    stream::iter(0..n)
        .for_each_concurrent(concurrency, |i| {
            let jobs = jobs.clone();
            async move {
                let job = serde_json::from_value(json!({
                    "apiVersion": "mlcompute.io/v1alpha1", "kind": "TrainingJob",
                    "metadata": { "name": format!("j-{i}") },
                    "spec": { "command": "true", "image": "busybox" }
                }))
                .unwrap();
                jobs.create(&PostParams::default(), &job).await.unwrap();
            }
        })
        .await;
    let (operator_pods_created, operator_time) = pods_watch.await.unwrap();
    // Let the last status transitions land before counting.
    let (_, jobs_running) = jobs_watch.await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_loaded = rss_kib(op.id());
    let burst_writes = delta(&writes(&client).await, &before);

    // No-op resync: a restarted operator re-lists everything and must write nothing.
    let _ = op.kill();
    let _ = op.wait();
    let before = writes(&client).await;
    let mut op = start_operator(&bin, &kubeconfig, &ns, &qps, &burst, &op_concurrency);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let resync_writes = delta(&writes(&client).await, &before);
    let _ = op.kill();
    let _ = op.wait();

    let jobs_created = burst_writes.get("trainingjobs").copied().unwrap_or(0.0);
    // What the operator wrote: not the benchmark's own creates, nor what the scheduler (bindings)
    // and KWOK (pod status, node leases) write for the floor's Pods just the same.
    let operator_writes: f64 = burst_writes
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "trainingjobs" | "pods/binding" | "pods/status" | "leases"
            )
        })
        .map(|(_, v)| v)
        .sum();
    let result = json!({
        "jobs": n,
        "floor_seconds": floor.as_secs_f64(),
        "operator_seconds": operator_time.as_secs_f64(),
        "ratio": operator_time.as_secs_f64() / floor.as_secs_f64(),
        "all_jobs_running_seconds": jobs_running.as_secs_f64(),
        "floor_all_pods_created_seconds": floor_created.as_secs_f64(),
        "operator_all_pods_created_seconds": operator_pods_created.as_secs_f64(),
        "writes_by_resource": burst_writes,
        "job_creates": jobs_created,
        "operator_writes_per_job": operator_writes / n as f64,
        "operator_writes_per_job_without_events": (operator_writes - burst_writes.get("events").copied().unwrap_or(0.0)) / n as f64,
        "resync_writes": resync_writes,
        "rss_mib_idle": rss_idle as f64 / 1024.0,
        "rss_mib_at_n_jobs": rss_loaded as f64 / 1024.0,
        "kube_qps": qps, "kube_burst": burst, "operator_concurrency": op_concurrency,
    });
    println!("{result}");
}
