//! Start-up latency on the real node (not a test): what the operator adds between applying a
//! resource and the work being there, against the same work done with raw Kubernetes objects in
//! the same run, alternating which of each pair goes first.
//!
//! - **training**: a raw Pod vs a TrainingJob (environment `sklearn`, `sleep 600`, instance type
//!   `real-cpu`). The raw Pod is the Pod the operator made for an untimed warm-up TrainingJob
//!   (same image, command, resources, node selector, `/dev/shm`, security defaults), with fresh
//!   metadata. t0: just before the create call; t1: a Pod watcher (started before the create, the
//!   same one for both) sees the main container `state.running`.
//! - **serving**: a raw Deployment behind a pre-created Service vs an OnlineDeployment behind a
//!   pre-created OnlineEndpoint (key auth, traffic naming the deployment). The raw Deployment's
//!   Pod template is the one the operator made for an untimed warm-up OnlineDeployment (kept for
//!   the whole run, with the ConfigMaps it mounts), minus the operator's labels. t0: just before
//!   the create call; t1: the first HTTP 200 to `POST /score`, polled every 20 ms, through the
//!   Service's ClusterIP (raw) or through the router's Service with the endpoint key (operator).
//!
//! Both serving sides probe readiness every second from the start (the template is shared).
//! Every object is deleted after its run, and the next run starts `SETTLE_MS` (2000) after its
//! Pods are gone. Settings: `RUNS` (20), `SERIES` (`training,serving`), `KEEP=1` keeps the
//! namespace. Besides t1, watchers stamp intermediate milestones (Pod seen, scheduled, running,
//! ready; Deployment seen and ready; EndpointSlice ready; OnlineDeployment status ready; route
//! with traffic), so the output says where added time goes. Prints one JSON line per series and a summary on
//! stdout; each run as a JSON line on stderr (with its wall-clock t0, to read beside logs).
//!
//! Run inside the real node's network namespace through `bench/real-node/run`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, HashMap},
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    core::v1::{ConfigMap, Namespace, Pod, Secret, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, Config, Resource, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::{Value, json};
use tokio::sync::watch;

/// Label on the raw objects' Pods naming their run (the operator's carry `mlcompute.io/<kind>`).
const RUN_LABEL: &str = "bench.mlcompute.io/run";
const TJ_LABEL: &str = "mlcompute.io/trainingjob";
const OD_LABEL: &str = "mlcompute.io/onlinedeployment";
/// How long one side of one run may take before it counts as failed.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);
/// Time between scoring attempts.
const POLL: Duration = Duration::from_millis(20);
const SCORE_BODY: &str = r#"{"data": [1, 2, 39]}"#;
const SCORE_PY: &str = "import json\n\ndef init():\n    pass\n\ndef run(raw_data):\n    return {\"sum\": sum(json.loads(raw_data)[\"data\"])}\n";

fn arg(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

async fn client(path: &str) -> Client {
    let kc = Kubeconfig::read_from(path).expect("MLC_KUBECONFIG: a kubeconfig file");
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(cfg).unwrap()
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

fn wall_now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

// --- milestones seen by watchers ------------------------------------------------------------------

#[derive(Default)]
struct State {
    /// First time each milestone was seen, by run key.
    marks: HashMap<String, BTreeMap<&'static str, Instant>>,
    /// Pods that exist, by name: their run key.
    pods: HashMap<String, String>,
    /// Pods listed since the watch (re)started, swapped in at the end of the listing.
    relist: Option<HashMap<String, String>>,
}

/// What the watchers saw, shared with the runs; `changed` wakes waiters on every change.
#[derive(Clone)]
struct Timeline {
    state: Arc<Mutex<State>>,
    changed: Arc<watch::Sender<u64>>,
}

impl Timeline {
    fn new() -> Self {
        Timeline {
            state: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
        }
    }

    fn mark(&self, marks: Vec<(String, &'static str)>) {
        if marks.is_empty() {
            return;
        }
        let now = Instant::now();
        {
            let mut st = self.state.lock().unwrap();
            for (key, m) in marks {
                st.marks.entry(key).or_default().entry(m).or_insert(now);
            }
        }
        self.changed.send_modify(|g| *g += 1);
    }

    fn get(&self, key: &str, milestone: &str) -> Option<Instant> {
        let st = self.state.lock().unwrap();
        st.marks.get(key)?.get(milestone).copied()
    }

    /// Milestones of `key` as milliseconds after `t0`.
    fn since(&self, key: &str, t0: Instant) -> BTreeMap<String, f64> {
        let st = self.state.lock().unwrap();
        st.marks
            .get(key)
            .map(|m| {
                m.iter()
                    .map(|(k, t)| (k.to_string(), ms(t.saturating_duration_since(t0))))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn live_pods(&self, key: &str) -> usize {
        let st = self.state.lock().unwrap();
        st.pods.values().filter(|k| *k == key).count()
    }

    /// Waits until `check` holds (re-checked on every change), at most `timeout`.
    async fn until<T>(
        &self,
        timeout: Duration,
        check: impl Fn(&Timeline) -> Option<T>,
    ) -> Option<T> {
        let mut rx = self.changed.subscribe();
        tokio::time::timeout(timeout, async {
            loop {
                rx.borrow_and_update();
                if let Some(v) = check(self) {
                    return v;
                }
                if rx.changed().await.is_err() {
                    futures::future::pending::<()>().await;
                }
            }
        })
        .await
        .ok()
    }

    async fn wait_mark(&self, key: &str, milestone: &str, timeout: Duration) -> Option<Instant> {
        self.until(timeout, |tl| tl.get(key, milestone)).await
    }
}

fn label<'a>(obj: &'a impl Resource, key: &str) -> Option<&'a String> {
    obj.meta().labels.as_ref()?.get(key)
}

fn pod_key(p: &Pod) -> Option<String> {
    [RUN_LABEL, TJ_LABEL, OD_LABEL]
        .iter()
        .find_map(|l| label(p, l))
        .cloned()
}

fn pod_marks(p: &Pod) -> Vec<(String, &'static str)> {
    let Some(key) = pod_key(p) else {
        return Vec::new();
    };
    let mut out = vec![(key.clone(), "pod_seen")];
    let spec = p.spec.as_ref();
    if spec.and_then(|s| s.node_name.as_ref()).is_some() {
        out.push((key.clone(), "pod_scheduled"));
    }
    let main = spec
        .and_then(|s| s.containers.first())
        .map(|c| c.name.as_str());
    let status = p.status.as_ref();
    let running = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .any(|c| {
            Some(c.name.as_str()) == main && c.state.as_ref().is_some_and(|s| s.running.is_some())
        });
    if running {
        out.push((key.clone(), "running"));
    }
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if ready {
        out.push((key, "pod_ready"));
    }
    out
}

fn deployment_marks(d: &Deployment) -> Vec<(String, &'static str)> {
    let key = d.name_any();
    let mut out = vec![(key.clone(), "deployment_seen")];
    if d.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
        > 0
    {
        out.push((key, "deployment_ready"));
    }
    out
}

fn slice_marks(s: &EndpointSlice) -> Vec<(String, &'static str)> {
    let Some(key) = label(s, "kubernetes.io/service-name").cloned() else {
        return Vec::new();
    };
    let ready = s
        .endpoints
        .iter()
        .flatten()
        .any(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true));
    if ready {
        vec![(key, "slice_ready")]
    } else {
        Vec::new()
    }
}

fn od_marks(o: &DynamicObject) -> Vec<(String, &'static str)> {
    let key = o.name_any();
    let mut out = Vec::new();
    if o.data["status"]["readyInstances"].as_i64().unwrap_or(0) > 0 {
        out.push((key, "od_status_ready"));
    }
    out
}

fn tj_marks(o: &DynamicObject) -> Vec<(String, &'static str)> {
    let key = o.name_any();
    let mut out = Vec::new();
    if o.data["status"]["phase"].as_str() == Some("Running") {
        out.push((key, "job_phase_running"));
    }
    out
}

/// The routing ConfigMaps: a deployment listed in its endpoint's route, then given traffic.
fn route_marks(cm: &ConfigMap) -> Vec<(String, &'static str)> {
    let Some(route) = cm.data.as_ref().and_then(|d| d.get("route.json")) else {
        return Vec::new();
    };
    let route: Value = serde_json::from_str(route).unwrap_or_default();
    let mut out = Vec::new();
    for d in route["deployments"].as_array().into_iter().flatten() {
        let Some(name) = d["name"].as_str() else {
            continue;
        };
        out.push((name.to_string(), "route_listed"));
        if d["traffic"].as_u64().unwrap_or(0) > 0 {
            out.push((name.to_string(), "route_traffic"));
        }
    }
    out
}

/// Follows `api` from now on, stamping milestones (and, for Pods, which exist).
fn follow<K>(
    api: Api<K>,
    cfg: watcher::Config,
    tl: Timeline,
    marks: fn(&K) -> Vec<(String, &'static str)>,
    track_pods: bool,
) where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    tokio::spawn(async move {
        let stream = watcher(api, cfg).default_backoff();
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            let Ok(event) = event else { continue };
            match event {
                watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                    let m = marks(&o);
                    if track_pods {
                        let key = m.first().map(|(k, _)| k.clone());
                        let mut st = tl.state.lock().unwrap();
                        if let Some(key) = key {
                            st.pods.insert(o.name_any(), key.clone());
                            if let Some(relist) = st.relist.as_mut() {
                                relist.insert(o.name_any(), key);
                            }
                        }
                    }
                    tl.mark(m);
                }
                watcher::Event::Delete(o) => {
                    if track_pods {
                        tl.state.lock().unwrap().pods.remove(&o.name_any());
                        tl.changed.send_modify(|g| *g += 1);
                    }
                }
                watcher::Event::Init => {
                    if track_pods {
                        tl.state.lock().unwrap().relist = Some(HashMap::new());
                    }
                }
                watcher::Event::InitDone => {
                    if track_pods {
                        let mut st = tl.state.lock().unwrap();
                        if let Some(relist) = st.relist.take() {
                            st.pods = relist;
                        }
                        drop(st);
                        tl.changed.send_modify(|g| *g += 1);
                    }
                }
            }
        }
    });
}

// --- scoring over plain HTTP/1.1 ------------------------------------------------------------------

/// One `POST path` to `addr`: the status and the router's `reason` (or the error's kind).
fn post(addr: SocketAddr, path: &str, key: Option<&str>) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))
        .map_err(|e| format!("connect {:?}", e.kind()))?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok();
    s.set_write_timeout(Some(Duration::from_secs(2))).ok();
    s.set_nodelay(true).ok();
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{SCORE_BODY}",
        SCORE_BODY.len()
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("write {:?}", e.kind()))?;
    let mut buf = Vec::new();
    match s.read_to_end(&mut buf) {
        Ok(_) => {}
        Err(e) if buf.is_empty() => return Err(format!("read {:?}", e.kind())),
        Err(_) => {}
    }
    let text = String::from_utf8_lossy(&buf);
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| "no HTTP status".to_string())?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let reason = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["reason"].as_str().map(str::to_string))
        .unwrap_or_default();
    Ok((status, reason))
}

/// Outcome of a scoring poll: when the first 200 came, and when each other answer first came.
struct Polled {
    ok: Option<Instant>,
    seen: Vec<(String, Instant)>,
}

/// Polls `POST path` every [`POLL`] until `want` answers, at most `timeout`.
async fn poll_until(
    addr: SocketAddr,
    path: String,
    key: Option<String>,
    timeout: Duration,
    want: fn(&Result<(u16, String), String>) -> bool,
) -> Polled {
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let mut seen: Vec<(String, Instant)> = Vec::new();
        while start.elapsed() < timeout {
            let answer = post(addr, &path, key.as_deref());
            let now = Instant::now();
            if want(&answer) {
                return Polled {
                    ok: Some(now),
                    seen,
                };
            }
            let what = match &answer {
                Ok((code, reason)) if reason.is_empty() => code.to_string(),
                Ok((code, reason)) => format!("{code} {reason}"),
                Err(e) => e.clone(),
            };
            if seen.last().is_none_or(|(w, _)| *w != what) {
                seen.push((what, now));
            }
            std::thread::sleep(POLL);
        }
        Polled { ok: None, seen }
    })
    .await
    .unwrap()
}

fn is_200(r: &Result<(u16, String), String>) -> bool {
    matches!(r, Ok((200, _)))
}

// --- the plane ------------------------------------------------------------------------------------

struct Bench {
    client: Client,
    ns: String,
    tl: Timeline,
    tjs: Api<DynamicObject>,
    ods: Api<DynamicObject>,
    endpoints: Api<DynamicObject>,
    router: SocketAddr,
    prefix: String,
    settle: Duration,
}

fn crd(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("mlcompute.io", "v1alpha1", kind))
}

fn dynamic(v: Value) -> DynamicObject {
    serde_json::from_value(v).unwrap()
}

/// One measured run of one side.
#[derive(Debug)]
struct Sample {
    ms: f64,
    marks: BTreeMap<String, f64>,
}

impl Bench {
    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Deletes the Pods of `key` (grace 0, again every 2 s) until the watcher has seen them gone.
    async fn pods_gone(&self, selector: &str, key: &str) {
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        let lp = ListParams::default().labels(selector);
        for _ in 0..60 {
            let _ = self.pods().delete_collection(&dp, &lp).await;
            if self
                .tl
                .until(Duration::from_secs(2), |tl| {
                    (tl.live_pods(key) == 0).then_some(())
                })
                .await
                .is_some()
            {
                // The Pod object goes at once (grace 0) while the kubelet still stops its container
                // and sandbox: let that finish before the next run starts.
                tokio::time::sleep(self.settle).await;
                return;
            }
        }
        eprintln!("warning: Pods of {key} still there after 120 s");
    }

    /// Pods of other namespaces that are running on the node (other work sharing the machine).
    async fn other_pods(&self) -> Vec<String> {
        let all = Api::<Pod>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        all.into_iter()
            .filter(|p| {
                let ns = p.namespace().unwrap_or_default();
                ns != self.ns && ns != "kube-system" && ns != "mlcompute-system"
            })
            .filter(|p| {
                matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Running" | "Pending")
                )
            })
            .map(|p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()))
            .collect()
    }

    // --- training ---

    fn raw_pod(&self, template: &Pod, name: &str) -> Pod {
        let mut spec = template.spec.clone().unwrap();
        spec.node_name = None;
        spec.priority = None;
        Pod {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                labels: Some(BTreeMap::from([(RUN_LABEL.to_string(), name.to_string())])),
                ..Default::default()
            },
            spec: Some(spec),
            status: None,
        }
    }

    fn training_job(&self, name: &str) -> DynamicObject {
        dynamic(json!({
            "apiVersion": "mlcompute.io/v1alpha1", "kind": "TrainingJob",
            "metadata": { "name": name },
            "spec": { "command": "sleep 600", "environment": "sklearn:1", "resources": { "instanceType": "real-cpu" } },
        }))
    }

    /// An untimed TrainingJob, to pull the image and to copy the Pod the operator makes.
    async fn training_warm_up(&self) -> Pod {
        let name = "tj-warm";
        self.tjs
            .create(&PostParams::default(), &self.training_job(name))
            .await
            .unwrap();
        self.tl
            .wait_mark(name, "running", RUN_TIMEOUT)
            .await
            .expect("the warm-up TrainingJob's container did not start within 300 s");
        let pod = self
            .pods()
            .list(&ListParams::default().labels(&format!("{TJ_LABEL}={name}")))
            .await
            .unwrap()
            .items
            .into_iter()
            .next()
            .expect("the warm-up TrainingJob's Pod");
        self.tjs
            .delete(name, &DeleteParams::background())
            .await
            .unwrap();
        self.pods_gone(&format!("{TJ_LABEL}={name}"), name).await;
        pod
    }

    async fn training_raw(&self, template: &Pod, run: usize) -> (Option<Sample>, String) {
        let name = format!("raw-pod-{run}");
        let pod = self.raw_pod(template, &name);
        let wall = wall_now();
        let t0 = Instant::now();
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .unwrap();
        let t1 = self.tl.wait_mark(&name, "running", RUN_TIMEOUT).await;
        let sample = t1.map(|t1| Sample {
            ms: ms(t1 - t0),
            marks: self.tl.since(&name, t0),
        });
        self.pods_gone(&format!("{RUN_LABEL}={name}"), &name).await;
        (sample, wall)
    }

    async fn training_operator(&self, run: usize) -> (Option<Sample>, String) {
        let name = format!("tj-{run}");
        let job = self.training_job(&name);
        let wall = wall_now();
        let t0 = Instant::now();
        self.tjs.create(&PostParams::default(), &job).await.unwrap();
        let t1 = self.tl.wait_mark(&name, "running", RUN_TIMEOUT).await;
        let sample = t1.map(|t1| Sample {
            ms: ms(t1 - t0),
            marks: self.tl.since(&name, t0),
        });
        // Let the job's phase reach Running (stamped as a milestone, not part of t1).
        let _ = self
            .tl
            .wait_mark(&name, "job_phase_running", Duration::from_secs(5))
            .await;
        let sample = sample.map(|mut s| {
            s.marks = self.tl.since(&name, t0);
            s
        });
        let _ = self.tjs.delete(&name, &DeleteParams::background()).await;
        self.pods_gone(&format!("{TJ_LABEL}={name}"), &name).await;
        (sample, wall)
    }

    // --- serving ---

    fn endpoint(&self, name: &str, deployment: &str) -> DynamicObject {
        dynamic(json!({
            "apiVersion": "mlcompute.io/v1alpha1", "kind": "OnlineEndpoint",
            "metadata": { "name": name },
            "spec": { "authMode": "key", "traffic": { deployment: 100 } },
        }))
    }

    fn online_deployment(&self, name: &str, endpoint: &str) -> DynamicObject {
        dynamic(json!({
            "apiVersion": "mlcompute.io/v1alpha1", "kind": "OnlineDeployment",
            "metadata": { "name": name },
            "spec": {
                "endpointName": endpoint,
                "codeConfiguration": { "code": "configmap://score-code", "scoringScript": "score.py" },
                "environment": "sklearn:1",
                "instanceType": "real-cpu",
                "instanceCount": 1,
                // Probe every second from the start (the default waits 10 s, then probes every
                // 10 s): the raw Deployment copies the same template, so both sides wait alike.
                "readinessProbe": { "initialDelay": 0, "period": 1 },
            },
        }))
    }

    /// Creates an endpoint naming `deployment` and waits until the router answers for it (503: no
    /// deployment with traffic yet); returns its primary key.
    async fn endpoint_ready(&self, name: &str, deployment: &str) -> String {
        self.endpoints
            .create(&PostParams::default(), &self.endpoint(name, deployment))
            .await
            .unwrap();
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.ns);
        let key = loop {
            if let Ok(Some(s)) = secrets.get_opt(&format!("{name}-keys")).await
                && let Some(k) = s.data.as_ref().and_then(|d| d.get("primaryKey"))
            {
                break String::from_utf8(k.0.clone()).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let polled = poll_until(
            self.router,
            score_path(name),
            Some(key.clone()),
            Duration::from_secs(60),
            |r| matches!(r, Ok((503, _)) | Ok((200, _))),
        )
        .await;
        assert!(
            polled.ok.is_some(),
            "the router does not know endpoint {name} after 60 s: {:?}",
            polled.seen.iter().map(|s| &s.0).collect::<Vec<_>>()
        );
        key
    }

    /// The untimed warm-up OnlineDeployment; returns its Deployment's Pod template and port.
    async fn serving_warm_up(&self) -> (k8s_openapi::api::core::v1::PodTemplateSpec, i32) {
        let (ep, od) = (format!("{}-warm", self.prefix), "warm");
        let key = self.endpoint_ready(&ep, od).await;
        self.ods
            .create(&PostParams::default(), &self.online_deployment(od, &ep))
            .await
            .unwrap();
        let polled = poll_until(self.router, score_path(&ep), Some(key), RUN_TIMEOUT, is_200).await;
        assert!(
            polled.ok.is_some(),
            "the warm-up deployment never answered 200 through the router: {:?}",
            polled.seen.iter().map(|s| &s.0).collect::<Vec<_>>()
        );
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &self.ns);
        let d = deployments.get(od).await.unwrap();
        let mut template = d.spec.unwrap().template;
        let meta = template.metadata.get_or_insert_with(Default::default);
        meta.labels = None;
        let port = template
            .spec
            .as_ref()
            .and_then(|s| s.containers[0].ports.as_ref())
            .and_then(|p| p.first())
            .map(|p| p.container_port)
            .unwrap_or(5001);
        (template, port)
    }

    async fn serving_raw(
        &self,
        template: &k8s_openapi::api::core::v1::PodTemplateSpec,
        port: i32,
        run: usize,
    ) -> (Option<Sample>, String) {
        let name = format!("raw-dep-{run}");
        let selector = BTreeMap::from([(RUN_LABEL.to_string(), name.clone())]);
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.ns);
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &self.ns);
        let svc: Service = serde_json::from_value(json!({
            "metadata": { "name": name },
            "spec": { "selector": selector, "ports": [{ "name": "http", "port": port, "targetPort": "http", "protocol": "TCP" }] },
        }))
        .unwrap();
        let svc = services.create(&PostParams::default(), &svc).await.unwrap();
        let ip: std::net::IpAddr = svc.spec.unwrap().cluster_ip.unwrap().parse().unwrap();
        let addr = SocketAddr::new(ip, port as u16);
        // Untimed, like the endpoint: kube-proxy has the Service (no endpoints: refused at once).
        let _ = poll_until(
            addr,
            "/score".into(),
            None,
            Duration::from_secs(10),
            |r| matches!(r, Err(e) if e.contains("ConnectionRefused")),
        )
        .await;
        let mut template = template.clone();
        template
            .metadata
            .get_or_insert_with(Default::default)
            .labels = Some(selector.clone());
        let d: Deployment = serde_json::from_value(json!({
            "metadata": { "name": name },
            "spec": {
                "replicas": 1,
                "selector": { "matchLabels": selector },
                "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 0, "maxSurge": 1 } },
                "template": template,
            },
        }))
        .unwrap();
        let wall = wall_now();
        let t0 = Instant::now();
        deployments
            .create(&PostParams::default(), &d)
            .await
            .unwrap();
        let polled = poll_until(addr, "/score".into(), None, RUN_TIMEOUT, is_200).await;
        let sample = polled.ok.map(|t1| {
            let mut marks = self.tl.since(&name, t0);
            for (what, t) in &polled.seen {
                marks.insert(format!("http {what}"), ms(t.saturating_duration_since(t0)));
            }
            Sample {
                ms: ms(t1 - t0),
                marks,
            }
        });
        let _ = deployments.delete(&name, &DeleteParams::background()).await;
        let rs: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &self.ns);
        let sel = format!("{RUN_LABEL}={name}");
        let _ = rs
            .delete_collection(
                &DeleteParams::background(),
                &ListParams::default().labels(&sel),
            )
            .await;
        self.pods_gone(&sel, &name).await;
        let _ = services.delete(&name, &DeleteParams::default()).await;
        (sample, wall)
    }

    async fn serving_operator(&self, run: usize) -> (Option<Sample>, String) {
        let (ep, od) = (format!("{}-{run}", self.prefix), format!("od-{run}"));
        let key = self.endpoint_ready(&ep, &od).await;
        let wall = wall_now();
        let t0 = Instant::now();
        self.ods
            .create(&PostParams::default(), &self.online_deployment(&od, &ep))
            .await
            .unwrap();
        let polled = poll_until(self.router, score_path(&ep), Some(key), RUN_TIMEOUT, is_200).await;
        let sample = polled.ok.map(|t1| {
            let mut marks = self.tl.since(&od, t0);
            for (what, t) in &polled.seen {
                marks.insert(format!("http {what}"), ms(t.saturating_duration_since(t0)));
            }
            Sample {
                ms: ms(t1 - t0),
                marks,
            }
        });
        let _ = self.ods.delete(&od, &DeleteParams::background()).await;
        let _ = self
            .endpoints
            .delete(&ep, &DeleteParams::background())
            .await;
        let sel = format!("{OD_LABEL}={od}");
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &self.ns);
        let rs: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &self.ns);
        let _ = deployments.delete(&od, &DeleteParams::background()).await;
        let _ = rs
            .delete_collection(
                &DeleteParams::background(),
                &ListParams::default().labels(&sel),
            )
            .await;
        self.pods_gone(&sel, &od).await;
        (sample, wall)
    }
}

/// One run on stderr, with its wall-clock t0 (to read beside the operator's logs).
/// `runs` pairs of measurements, raw and operator, alternating which goes first (so neither side
/// always meets a machine the other just warmed); each is logged as it is taken.
async fn paired(
    series: &str,
    runs: usize,
    mut measure: impl AsyncFnMut(bool, usize) -> (Option<Sample>, String),
) -> (Vec<Sample>, Vec<Sample>) {
    let (mut raw, mut op) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let raw_first = run % 2 == 0;
        for step in 0..2 {
            let is_raw = (step == 0) == raw_first;
            let (s, wall) = measure(is_raw, run).await;
            let side = if is_raw { "raw" } else { "operator" };
            log_run(series, side, run, step == 0, &wall, &s);
            if let Some(s) = s {
                if is_raw { raw.push(s) } else { op.push(s) }
            }
        }
    }
    (raw, op)
}

fn log_run(series: &str, side: &str, run: usize, first: bool, t0_wall: &str, s: &Option<Sample>) {
    let line = json!({
        "series": series, "side": side, "run": run, "first": first, "t0": t0_wall,
        "ms": s.as_ref().map(|s| s.ms), "milestones_ms": s.as_ref().map(|s| &s.marks),
    });
    eprintln!("{line}");
}

fn score_path(endpoint: &str) -> String {
    format!("/api/v1/endpoint/{endpoint}/score")
}

// --- statistics -----------------------------------------------------------------------------------

/// Linear-interpolated percentile (`q` in 0..=1) of unsorted `v`.
fn pct(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let pos = q * (s.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(((s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)) * 10.0).round() / 10.0)
}

fn sub(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(((a? - b?) * 10.0).round() / 10.0)
}

/// The JSON line and the human summary of one series.
fn report(series: &str, what: &str, raw: &[Sample], op: &[Sample], runs: usize) -> (Value, String) {
    let r: Vec<f64> = raw.iter().map(|s| s.ms).collect();
    let o: Vec<f64> = op.iter().map(|s| s.ms).collect();
    let (r50, r90, o50, o90) = (pct(&r, 0.5), pct(&r, 0.9), pct(&o, 0.5), pct(&o, 0.9));
    let mut milestones = BTreeMap::new();
    let names: std::collections::BTreeSet<&String> =
        raw.iter().chain(op).flat_map(|s| s.marks.keys()).collect();
    for name in names {
        let of = |side: &[Sample]| -> Vec<f64> {
            side.iter()
                .filter_map(|s| s.marks.get(name).copied())
                .collect()
        };
        let (rv, ov) = (of(raw), of(op));
        milestones.insert(
            name.clone(),
            json!({
                "raw_n": rv.len(), "raw_p50": pct(&rv, 0.5), "raw_p90": pct(&rv, 0.9),
                "operator_n": ov.len(), "operator_p50": pct(&ov, 0.5), "operator_p90": pct(&ov, 0.9),
                "added_p50": sub(pct(&ov, 0.5), pct(&rv, 0.5)),
            }),
        );
    }
    let line = json!({
        "series": series, "measures": what, "runs": runs,
        "raw_ms": r, "operator_ms": o,
        "raw_failed": runs - r.len(), "operator_failed": runs - o.len(),
        "raw_p50": r50, "raw_p90": r90, "operator_p50": o50, "operator_p90": o90,
        "added_p50": sub(o50, r50), "added_p90": sub(o90, r90),
        "milestones_ms": milestones,
    });
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
    let mut text = format!(
        "{series}: {what}, {runs} runs\n  raw      p50 {} ms  p90 {} ms\n  operator p50 {} ms  p90 {} ms\n  added    p50 {} ms  p90 {} ms  (goal: < 100 ms at p50)\n  milestones after t0, p50 raw / operator / added (ms):\n",
        f(r50),
        f(r90),
        f(o50),
        f(o90),
        f(sub(o50, r50)),
        f(sub(o90, r90)),
    );
    let mut rows: Vec<(&String, &Value)> = milestones.iter().collect();
    rows.sort_by(|a, b| {
        let k = |v: &Value| {
            v["operator_p50"]
                .as_f64()
                .or(v["raw_p50"].as_f64())
                .unwrap_or(f64::MAX)
        };
        k(a.1).total_cmp(&k(b.1))
    });
    for (name, v) in rows {
        text.push_str(&format!(
            "    {name:<28} {:>8} / {:>8} / {:>8}\n",
            f(v["raw_p50"].as_f64()),
            f(v["operator_p50"].as_f64()),
            f(v["added_p50"].as_f64())
        ));
    }
    for (side, samples) in [("raw", raw), ("operator", op)] {
        text.push_str(&format!(
            "  {side}: steps between milestones, p50 of each run's step (ms):\n"
        ));
        for (from, to, p50) in steps(samples) {
            text.push_str(&format!("    {from:>28} -> {to:<28} {}\n", f(Some(p50))));
        }
    }
    (line, text)
}

/// Where one side's time goes: its milestones in order of their median time (t0 first, the
/// first 200 or running last), and the median over runs of the step from each to the next.
fn steps(samples: &[Sample]) -> Vec<(String, String, f64)> {
    let mut names: Vec<(f64, String)> = Vec::new();
    let all: std::collections::BTreeSet<&String> = samples
        .iter()
        .flat_map(|s| s.marks.keys())
        .filter(|k| !k.starts_with("http "))
        .collect();
    for name in all {
        let v: Vec<f64> = samples
            .iter()
            .filter_map(|s| s.marks.get(name).copied())
            .collect();
        // Milestones reached after t1 (a job's phase) are not steps towards it.
        let after: Vec<f64> = samples
            .iter()
            .filter_map(|s| s.marks.get(name).map(|m| m - s.ms))
            .collect();
        if let (Some(p), Some(a)) = (pct(&v, 0.5), pct(&after, 0.5))
            && a <= 0.0
        {
            names.push((p, name.clone()));
        }
    }
    names.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut chain = vec!["t0".to_string()];
    chain.extend(names.into_iter().map(|(_, n)| n));
    chain.push("t1".to_string());
    let at = |s: &Sample, name: &str| match name {
        "t0" => Some(0.0),
        "t1" => Some(s.ms),
        _ => s.marks.get(name).copied(),
    };
    chain
        .windows(2)
        .filter_map(|w| {
            let d: Vec<f64> = samples
                .iter()
                .filter_map(|s| Some(at(s, &w[1])? - at(s, &w[0])?))
                .collect();
            Some((w[0].clone(), w[1].clone(), pct(&d, 0.5)?))
        })
        .collect()
}

// --- main -----------------------------------------------------------------------------------------

#[tokio::main]
async fn main() {
    let kubeconfig = arg("MLC_KUBECONFIG", "");
    let image = std::env::var("MLC_IMAGE_PYTHON_ML")
        .expect("MLC_IMAGE_PYTHON_ML unset: run inside e2e/node/exec (bench/real-node/run does)");
    let runs: usize = arg("RUNS", "20").parse().expect("RUNS: a number");
    let series = arg("SERIES", "training,serving");
    let client = client(&kubeconfig).await;

    let router_svc = Api::<Service>::namespaced(client.clone(), "mlcompute-system")
        .get("mlcompute-router")
        .await
        .expect("no Service mlcompute-system/mlcompute-router: install mlcompute (e2e/node/exec e2e/node/install-mlcompute)");
    let router_ip: std::net::IpAddr = router_svc
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .unwrap()
        .parse()
        .unwrap();
    let router_port = router_svc.spec.unwrap().ports.unwrap()[0].port as u16;

    let id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 1_000_000;
    let ns = format!("bench-startup-{id}");
    let namespace: Namespace = serde_json::from_value(json!({
        "metadata": { "name": ns, "labels": { "bench.mlcompute.io/startup": "true" } }
    }))
    .unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    eprintln!("namespace {ns}");

    // The instance type (cluster-wide; created only when missing, and then removed at the end),
    // the environment and the scoring code.
    let instance_types: Api<DynamicObject> = Api::all_with(client.clone(), &crd("InstanceType"));
    let created_instance_type = if instance_types.get_opt("real-cpu").await.unwrap().is_none() {
        instance_types
            .create(
                &PostParams::default(),
                &dynamic(json!({
                    "apiVersion": "mlcompute.io/v1alpha1", "kind": "InstanceType",
                    "metadata": { "name": "real-cpu" },
                    "spec": { "nodeSelector": { "mlcompute.io/pool": "real" },
                        "resources": { "requests": { "cpu": "50m", "memory": "128Mi" }, "limits": { "cpu": "2", "memory": "2Gi" } } },
                })),
            )
            .await
            .unwrap();
        true
    } else {
        false
    };
    Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &crd("Environment"))
        .create(
            &PostParams::default(),
            &dynamic(json!({
                "apiVersion": "mlcompute.io/v1alpha1", "kind": "Environment",
                "metadata": { "name": "sklearn" },
                "spec": { "image": image, "version": "1" },
            })),
        )
        .await
        .unwrap();
    let code: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": "score-code" }, "data": { "score.py": SCORE_PY }
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &code)
        .await
        .unwrap();

    let tl = Timeline::new();
    let cfg = watcher::Config::default;
    follow(
        Api::<Pod>::namespaced(client.clone(), &ns),
        cfg(),
        tl.clone(),
        pod_marks,
        true,
    );
    follow(
        Api::<Deployment>::namespaced(client.clone(), &ns),
        cfg(),
        tl.clone(),
        deployment_marks,
        false,
    );
    follow(
        Api::<EndpointSlice>::namespaced(client.clone(), &ns),
        cfg(),
        tl.clone(),
        slice_marks,
        false,
    );
    follow(
        Api::<ConfigMap>::namespaced(client.clone(), &ns),
        cfg().labels("mlcompute.io/routing-table=true"),
        tl.clone(),
        route_marks,
        false,
    );
    let tjs = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &crd("TrainingJob"));
    let ods = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &crd("OnlineDeployment"));
    follow(tjs.clone(), cfg(), tl.clone(), tj_marks, false);
    follow(ods.clone(), cfg(), tl.clone(), od_marks, false);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let bench = Bench {
        client: client.clone(),
        ns: ns.clone(),
        tl,
        tjs,
        ods,
        endpoints: Api::namespaced_with(client.clone(), &ns, &crd("OnlineEndpoint")),
        router: SocketAddr::new(router_ip, router_port),
        prefix: format!("bs{id}"),
        settle: Duration::from_millis(
            arg("SETTLE_MS", "2000")
                .parse()
                .expect("SETTLE_MS: a number"),
        ),
    };
    let others_before = bench.other_pods().await;
    eprintln!("other Pods running or pending at the start: {others_before:?}");

    let mut out = Vec::new();
    if series.contains("training") {
        eprintln!("training: warm-up TrainingJob");
        let template = bench.training_warm_up().await;
        let (raw, op) = paired("training", runs, async |is_raw, run| {
            if is_raw {
                bench.training_raw(&template, run).await
            } else {
                bench.training_operator(run).await
            }
        })
        .await;
        out.push(report(
            "training",
            "create -> main container running (Pod watch)",
            &raw,
            &op,
            runs,
        ));
    }
    if series.contains("serving") {
        eprintln!("serving: warm-up OnlineDeployment");
        let (template, port) = bench.serving_warm_up().await;
        let (raw, op) = paired("serving", runs, async |is_raw, run| {
            if is_raw {
                bench.serving_raw(&template, port, run).await
            } else {
                bench.serving_operator(run).await
            }
        })
        .await;
        out.push(report(
            "serving",
            "create -> first HTTP 200 to POST score (raw: Service ClusterIP; operator: router with key)",
            &raw,
            &op,
            runs,
        ));
    }
    let others_after = bench.other_pods().await;
    eprintln!("other Pods running or pending at the end: {others_after:?}");
    for (line, _) in &mut out {
        line["other_pods_at_start"] = json!(others_before.len());
        line["other_pods_at_end"] = json!(others_after.len());
        println!("{line}");
    }
    if !others_before.is_empty() || !others_after.is_empty() {
        println!(
            "note: other Pods shared the node (start: {}, end: {}): the numbers are noisier",
            others_before.len(),
            others_after.len()
        );
    }
    for (_, text) in &out {
        print!("{text}");
    }

    if arg("KEEP", "") != "1" {
        let _ = namespaces.delete(&ns, &DeleteParams::background()).await;
        if created_instance_type {
            let _ = instance_types
                .delete("real-cpu", &DeleteParams::default())
                .await;
        }
        eprintln!("deleted namespace {ns}");
    }
}
