//! Health as Flux and Argo CD see it, for every kind in every state a GitOps user meets.
//!
//! Each row is a real object on the local plane, brought into its state by the running operator
//! (KWOK runs the Pods; where a kubelet's word is needed, the test writes the Pod's status as a
//! kubelet would), then read back from the API server and judged by the real implementations:
//! kstatus (`sigs.k8s.io/cli-utils`, what Flux and kpt use) and the shipped Argo CD health script
//! (`deploy/argocd/health.lua`) run in gopher-lua as Argo CD runs it (`e2e/health/build` builds
//! both). Every row is recorded; the test fails at the end listing every mismatch, and when the
//! table differs from the committed `docs/health.md` (`MLC_UPDATE_DOCS=1` rewrites it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    fmt::Write as _,
    future::Future,
    pin::Pin,
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::{
    Api, Client,
    api::{
        ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
        WatchEvent, WatchParams,
    },
};
use serde_json::{Value, json};
use support::{
    Operator, TestNamespace, eventually,
    health::{self, Verdict},
};

/// How long a row waits for its object to reach the state; past it the row is recorded as it
/// stands, marked as not reached.
const STATE_TIMEOUT: Duration = Duration::from_secs(45);
const T: Duration = Duration::from_secs(60);
const GROUP: &str = "mlcompute.io";
const VERSION: &str = "v1alpha1";
const API_VERSION: &str = "mlcompute.io/v1alpha1";
const KINDS: [&str; 8] = [
    "Environment",
    "InstanceType",
    "TrainingJob",
    "OnlineEndpoint",
    "OnlineDeployment",
    "BatchEndpoint",
    "BatchDeployment",
    "BatchJob",
];

// ---------------------------------------------------------------------------------------------
// What is expected

/// What a row's messages must say, beyond the verdicts.
#[derive(Clone, Copy, Debug)]
enum Msg {
    Any,
    /// A failure: both tools give a non-empty message (the reason).
    Reason,
    /// Argo CD's message starts with this.
    ArgoStartsWith(&'static str),
    /// Argo CD's message holds each of these (case-insensitive).
    ArgoSays(&'static [&'static str]),
}

#[derive(Clone, Copy, Debug)]
struct Expect {
    kstatus: &'static str,
    argo: &'static str,
    msg: Msg,
}

const PROGRESSING: Expect = Expect {
    kstatus: "InProgress",
    argo: "Progressing",
    msg: Msg::Any,
};
const HEALTHY: Expect = Expect {
    kstatus: "Current",
    argo: "Healthy",
    msg: Msg::Any,
};
const FAILED: Expect = Expect {
    kstatus: "Failed",
    argo: "Degraded",
    msg: Msg::Reason,
};
const CANCELED: Expect = Expect {
    kstatus: "Current",
    argo: "Healthy",
    msg: Msg::ArgoStartsWith("Canceled"),
};
const NO_NODES: Expect = Expect {
    kstatus: "Current",
    argo: "Healthy",
    msg: Msg::ArgoSays(&["node"]),
};

// ---------------------------------------------------------------------------------------------
// Rows

struct Row {
    kind: &'static str,
    state: &'static str,
    /// How the object got into the state.
    how: &'static str,
    expect: Expect,
    obj: Value,
    /// `Some(why)` when the object did not reach the state in time (it is judged as it stood).
    not_reached: Option<String>,
}

struct Judged {
    row: Row,
    kstatus: Verdict,
    argo: Result<Verdict, String>,
    problems: Vec<String>,
}

fn judge(row: Row) -> Judged {
    let kstatus = health::kstatus(&row.obj);
    let argo = health::argo(&row.obj);
    let mut problems = Vec::new();
    if let Some(why) = &row.not_reached {
        problems.push(format!("state not reached: {why}"));
    }
    if kstatus.status != row.expect.kstatus {
        problems.push(format!(
            "kstatus {kstatus}, expected {}",
            row.expect.kstatus
        ));
    }
    match &argo {
        Err(e) => problems.push(format!("the Argo CD Lua fails: {e}")),
        Ok(a) => {
            if a.status != row.expect.argo {
                problems.push(format!("Argo CD {a}, expected {}", row.expect.argo));
            }
            match row.expect.msg {
                Msg::Any => {}
                Msg::Reason => {
                    if a.message.trim().is_empty() {
                        problems.push("Argo CD gives no reason (empty message)".into());
                    }
                    if kstatus.message.trim().is_empty() {
                        problems.push("kstatus gives no reason (empty message)".into());
                    }
                }
                Msg::ArgoStartsWith(p) => {
                    if !a.message.starts_with(p) {
                        problems.push(format!(
                            "Argo CD message \"{}\" does not start with \"{p}\"",
                            a.message
                        ));
                    }
                }
                Msg::ArgoSays(words) => {
                    let m = a.message.to_lowercase();
                    for w in words {
                        if !m.contains(w) {
                            problems.push(format!(
                                "Argo CD message \"{}\" does not say \"{w}\"",
                                a.message
                            ));
                        }
                    }
                }
            }
        }
    }
    Judged {
        row,
        kstatus,
        argo,
        problems,
    }
}

// ---------------------------------------------------------------------------------------------
// Objects on the plane, as plain JSON

fn resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(GROUP, VERSION, kind))
}

#[derive(Clone)]
struct Plane {
    client: Client,
    ns: String,
}

impl Plane {
    fn api(&self, kind: &str) -> Api<DynamicObject> {
        if kind == "InstanceType" {
            Api::all_with(self.client.clone(), &resource(kind))
        } else {
            Api::namespaced_with(self.client.clone(), &self.ns, &resource(kind))
        }
    }

    /// Creates `kind` `name` with `spec` (and `metadata` extras); returns the API server's answer.
    async fn create(&self, kind: &str, name: &str, metadata: Value, spec: Value) -> Value {
        let mut meta = json!({ "name": name });
        if let Value::Object(extra) = metadata {
            meta.as_object_mut().unwrap().extend(extra);
        }
        let body =
            json!({ "apiVersion": API_VERSION, "kind": kind, "metadata": meta, "spec": spec });
        let obj: DynamicObject = serde_json::from_value(body).unwrap();
        let created = self
            .api(kind)
            .create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("creating {kind} {name}: {e}"));
        typed(kind, serde_json::to_value(created).unwrap())
    }

    async fn get(&self, kind: &str, name: &str) -> Value {
        let obj = self
            .api(kind)
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("reading {kind} {name}: {e}"));
        typed(kind, serde_json::to_value(obj).unwrap())
    }

    /// A merge patch of the object; returns the API server's answer (the object right after it).
    async fn patch(&self, kind: &str, name: &str, patch: Value) -> Value {
        let obj = self
            .api(kind)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("patching {kind} {name}: {e}"));
        typed(kind, serde_json::to_value(obj).unwrap())
    }

    /// Polls the object until `pred` holds; on timeout returns it as it stands, with why.
    async fn reach(
        &self,
        kind: &str,
        name: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> (Value, Option<String>) {
        let deadline = Instant::now() + STATE_TIMEOUT;
        loop {
            let obj = self.get(kind, name).await;
            if pred(&obj) {
                return (obj, None);
            }
            if Instant::now() >= deadline {
                return (
                    obj,
                    Some(format!("{what} within {}s", STATE_TIMEOUT.as_secs())),
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }
}

/// Objects read through a dynamic API may lack apiVersion/kind on some paths; the tools need them.
fn typed(kind: &str, mut v: Value) -> Value {
    v["apiVersion"] = json!(API_VERSION);
    v["kind"] = json!(kind);
    v
}

fn conditions(obj: &Value) -> Vec<&Value> {
    obj["status"]["conditions"]
        .as_array()
        .map(|c| c.iter().collect())
        .unwrap_or_default()
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    conditions(obj).into_iter().find(|c| c["type"] == type_)
}

fn phase(obj: &Value) -> &str {
    obj["status"]["phase"].as_str().unwrap_or("")
}

/// Whether the operator has written a status for the object's current generation (where it writes
/// no observedGeneration: any condition at all).
fn observed(obj: &Value) -> bool {
    match obj["status"]["observedGeneration"].as_i64() {
        Some(og) => Some(og) == obj["metadata"]["generation"].as_i64(),
        None => !conditions(obj).is_empty(),
    }
}

/// Whether some condition's reason is `reason`, or some condition's message mentions `word`.
fn says(obj: &Value, reason: &str, word: &str) -> bool {
    conditions(obj).iter().any(|c| {
        c["reason"] == reason
            || c["message"]
                .as_str()
                .is_some_and(|m| !word.is_empty() && m.contains(word))
    }) || obj["status"]["reason"] == reason
}

fn ready_true(obj: &Value) -> bool {
    condition(obj, "Ready").is_some_and(|c| c["status"] == "True")
}

/// Patches a Pod's status as a kubelet would report it.
async fn kubelet_says(pods: &Api<Pod>, pod: &str, status: Value) {
    pods.patch_status(
        pod,
        &PatchParams::default(),
        &Patch::Strategic(json!({ "status": status })),
    )
    .await
    .unwrap_or_else(|e| panic!("patching the status of pod {pod}: {e}"));
}

const NOW: &str = "2025-01-01T00:00:00Z";

/// A Pod whose containers are being created: Pending on its node. (Ready stays True in the patch only
/// so that KWOK's pod-ready stage, which picks Pending Pods that are not Ready, leaves it alone.)
fn creating_containers(container: &str, image: &str) -> Value {
    json!({
        "phase": "Pending",
        "conditions": [
            { "type": "Ready", "status": "True", "lastTransitionTime": NOW },
        ],
        "containerStatuses": [{
            "name": container, "image": image, "imageID": "", "restartCount": 0,
            "ready": false, "started": false,
            "state": { "waiting": { "reason": "ContainerCreating" } },
        }],
    })
}

/// A running Pod whose readiness probe does not pass yet.
fn not_ready(container: &str, image: &str) -> Value {
    json!({
        "phase": "Running",
        "conditions": [
            { "type": "Ready", "status": "False", "reason": "ContainersNotReady", "lastTransitionTime": NOW },
            { "type": "ContainersReady", "status": "False", "reason": "ContainersNotReady", "lastTransitionTime": NOW },
        ],
        "containerStatuses": [{
            "name": container, "image": image, "imageID": "", "restartCount": 0,
            "ready": false, "started": true,
            "state": { "running": { "startedAt": NOW } },
        }],
    })
}

/// A Pod whose image cannot be pulled (phase Running: see tests/pod_problems.rs).
fn cannot_pull(container: &str, image: &str) -> Value {
    let message = format!("Back-off pulling image \"{image}\"");
    json!({
        "phase": "Running",
        "conditions": [
            { "type": "Ready", "status": "False", "lastTransitionTime": NOW },
            { "type": "ContainersReady", "status": "False", "lastTransitionTime": NOW },
        ],
        "containerStatuses": [{
            "name": container, "image": image, "imageID": "", "restartCount": 0,
            "ready": false, "started": false,
            "state": { "waiting": { "reason": "ImagePullBackOff", "message": message } },
        }],
    })
}

/// The running, not-deleted Pods labelled `selector`, once there are `n`.
async fn running_pods(pods: &Api<Pod>, selector: &str, n: usize) -> Vec<Pod> {
    eventually(&format!("{n} running pods {selector}"), T, || async {
        let list = pods
            .list(&ListParams::default().labels(selector))
            .await
            .ok()?;
        let running: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .collect();
        (running.len() == n).then_some(running)
    })
    .await
}

fn name_of(p: &Pod) -> String {
    p.metadata.name.clone().unwrap()
}

/// Creates `kind` `name` and returns the first version of it that carries a status the operator
/// wrote (read off a watch opened before the create), or the object as it stands after the timeout.
async fn first_status(
    plane: &Plane,
    kind: &str,
    name: &str,
    spec: Value,
) -> (Value, Option<String>) {
    let api = plane.api(kind);
    let fields = format!("metadata.name={name}");
    let rv = api
        .list(&ListParams::default().fields(&fields))
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut events = api
        .watch(&WatchParams::default().fields(&fields).timeout(120), &rv)
        .await
        .unwrap()
        .boxed();
    plane.create(kind, name, json!({}), spec).await;
    let found = tokio::time::timeout(STATE_TIMEOUT, async {
        while let Some(event) = events.next().await {
            if let Ok(WatchEvent::Added(o) | WatchEvent::Modified(o)) = event {
                let v = typed(kind, serde_json::to_value(o).unwrap());
                if observed(&v) {
                    return Some(v);
                }
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(v)) => (v, None),
        _ => (
            plane.get(kind, name).await,
            Some("a first status within the timeout".into()),
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios: each drives some objects through their states and returns the rows it recorded.

type Scenario<'a> = Pin<Box<dyn Future<Output = Vec<Row>> + Send + 'a>>;

fn row(
    kind: &'static str,
    state: &'static str,
    how: &'static str,
    expect: Expect,
    (obj, not_reached): (Value, Option<String>),
) -> Row {
    Row {
        kind,
        state,
        how,
        expect,
        obj,
        not_reached,
    }
}

const BEHIND: &str = "observedGeneration behind generation";
const BEHIND_HOW: &str = "the API server's answer to a spec change";

fn pristine_specs(p: &Plane) -> Vec<(&'static str, String, Value)> {
    vec![
        (
            "Environment",
            "env".into(),
            json!({ "image": "python:3.12-slim", "version": "1" }),
        ),
        (
            "InstanceType",
            format!("{}-pristine", p.ns),
            json!({ "nodeSelector": { "mlcompute.io/pool": "cpu" },
                    "resources": { "limits": { "cpu": "1", "memory": "1Gi" } } }),
        ),
        (
            "TrainingJob",
            "job".into(),
            json!({ "command": "python train.py", "image": "busybox" }),
        ),
        ("OnlineEndpoint", "endpoint".into(), json!({})),
        (
            "OnlineDeployment",
            "deployment".into(),
            scoring_deployment("endpoint", "python:3.12-slim"),
        ),
        (
            "BatchEndpoint",
            "batch".into(),
            json!({ "defaults": { "deploymentName": "blue", "outputPath": "pvc://results/batch" } }),
        ),
        ("BatchDeployment", "blue".into(), batch_deployment("batch")),
        (
            "BatchJob",
            "run".into(),
            json!({ "endpointName": "batch", "input": { "path": "pvc://data/in" } }),
        ),
    ]
}

/// Every kind as created where no operator runs: the status was never written. Namespaced kinds
/// live in a namespace no operator watches; the cluster-scoped InstanceType is read from the API
/// server's answer to its create (other tests' operators may run on the plane).
async fn never_written(p: &Plane) -> Vec<Row> {
    let mut rows = Vec::new();
    for (kind, name, spec) in pristine_specs(p) {
        let created = p.create(kind, &name, json!({}), spec).await;
        let (obj, how) = if kind == "InstanceType" {
            (
                created,
                "the API server's answer to its create, before any controller ran",
            )
        } else {
            (
                p.get(kind, &name).await,
                "created in a namespace no operator watches",
            )
        };
        rows.push(row(
            kind,
            "status never written",
            how,
            PROGRESSING,
            (obj, None),
        ));
    }
    rows
}

fn scoring_deployment(endpoint: &str, image: &str) -> Value {
    json!({
        "endpointName": endpoint,
        "image": image,
        "model": "https://models.example.com/fraud/model.pkl",
        "codeConfiguration": { "code": "configmap://fraud-code", "scoringScript": "score.py" },
        "instanceCount": 1,
    })
}

fn batch_deployment(endpoint: &str) -> Value {
    json!({
        "endpointName": endpoint, "model": "pvc://models/m1", "image": "python:3.12-slim",
        "resources": { "instanceCount": 1 },
        "codeConfiguration": { "code": "configmap://score", "scoringScript": "score.py" }
    })
}

async fn environments(p: &Plane) -> Vec<Row> {
    const K: &str = "Environment";
    let mut rows = Vec::new();
    p.create(
        K,
        "torch",
        json!({}),
        json!({ "image": "pytorch/pytorch:2.5.1", "version": "1" }),
    )
    .await;
    let valid = p
        .reach(K, "torch", "a Ready status", |o| {
            observed(o) && ready_true(o)
        })
        .await;
    rows.push(row(K, "valid", "created", HEALTHY, valid));
    let behind = p
        .patch(K, "torch", json!({ "spec": { "description": "v1" } }))
        .await;
    rows.push(row(K, BEHIND, BEHIND_HOW, PROGRESSING, (behind, None)));
    p.reach(K, "torch", "the description change observed", observed)
        .await;
    // Other variables under a recorded version: `torch:1` must keep what it ran.
    p.patch(
        K,
        "torch",
        json!({ "spec": { "environmentVariables": { "OMP_NUM_THREADS": "4" } } }),
    )
    .await;
    let invalid = p
        .reach(K, "torch", "a status saying why it is invalid", |o| {
            observed(o) && !ready_true(o)
        })
        .await;
    rows.push(row(
        K,
        "invalid",
        "spec changed under a recorded version",
        FAILED,
        invalid,
    ));
    rows
}

async fn instance_types(p: &Plane, cpu: &str, nowhere: &str) -> Vec<Row> {
    const K: &str = "InstanceType";
    let mut rows = Vec::new();
    let matching = p
        .reach(K, cpu, "a status counting matching nodes", |o| {
            observed(o) && o["status"]["matchingNodes"].as_i64().unwrap_or(0) > 0
        })
        .await;
    rows.push(row(
        K,
        "nodes match",
        "nodeSelector of the CPU pool",
        HEALTHY,
        matching,
    ));
    let behind = p
        .patch(K, cpu, json!({ "spec": { "description": "CPU pool" } }))
        .await;
    rows.push(row(K, BEHIND, BEHIND_HOW, PROGRESSING, (behind, None)));
    let none = p
        .reach(K, nowhere, "a status saying no node matches", |o| {
            observed(o) && o["status"]["matchingNodes"].as_i64() == Some(0)
        })
        .await;
    rows.push(row(
        K,
        "no node matches",
        "nodeSelector no node carries",
        NO_NODES,
        none,
    ));
    rows
}

async fn training_jobs(p: &Plane) -> Vec<Row> {
    const K: &str = "TrainingJob";
    let mut rows = Vec::new();
    let pods = p.pods();
    let job = |spec: Value| {
        let mut s = json!({ "command": "python train.py", "image": "busybox" });
        s.as_object_mut()
            .unwrap()
            .extend(spec.as_object().unwrap().clone());
        s
    };
    p.create(
        K,
        "queued",
        json!({}),
        json!({ "command": "python t.py", "environment": "later@latest" }),
    )
    .await;
    p.create(K, "starting", json!({}), job(json!({}))).await;
    p.create(K, "running", json!({}), job(json!({}))).await;
    p.create(K, "done", json!({}), job(json!({}))).await;
    p.create(
        K,
        "fails",
        json!({}),
        job(json!({ "retryPolicy": { "maxRetries": 3, "failOnExitCodes": [2] } })),
    )
    .await;

    let queued = p
        .reach(K, "queued", "phase Queued", |o| {
            phase(o) == "Queued" && says(o, "EnvironmentNotFound", "later")
        })
        .await;
    rows.push(row(
        K,
        "queued",
        "its Environment does not exist yet",
        PROGRESSING,
        queued,
    ));

    // Starting: the kubelet is creating the containers.
    running_pods(&pods, "mlcompute.io/trainingjob=starting", 1).await;
    kubelet_says(
        &pods,
        "starting-worker-0",
        creating_containers("main", "busybox"),
    )
    .await;
    let starting = p
        .reach(K, "starting", "phase Starting", |o| phase(o) == "Starting")
        .await;
    rows.push(row(
        K,
        "starting",
        "its Pod on a node, containers being created",
        PROGRESSING,
        starting,
    ));

    let running = p
        .reach(K, "running", "phase Running", |o| phase(o) == "Running")
        .await;
    rows.push(row(K, "running", "KWOK runs its Pod", PROGRESSING, running));
    let behind = p
        .patch(K, "running", json!({ "spec": { "description": "later" } }))
        .await;
    rows.push(row(K, BEHIND, BEHIND_HOW, PROGRESSING, (behind, None)));
    p.patch(K, "running", json!({ "spec": { "cancel": true } }))
        .await;
    let canceled = p
        .reach(K, "running", "phase Canceled", |o| phase(o) == "Canceled")
        .await;
    rows.push(row(
        K,
        "canceled",
        "spec.cancel set while running",
        CANCELED,
        canceled,
    ));

    running_pods(&pods, "mlcompute.io/trainingjob=done", 1).await;
    exit(&pods, "done-worker-0", 0).await;
    let done = p
        .reach(K, "done", "phase Completed", |o| phase(o) == "Completed")
        .await;
    rows.push(row(K, "completed", "its Pod exits 0", HEALTHY, done));

    running_pods(&pods, "mlcompute.io/trainingjob=fails", 1).await;
    exit(&pods, "fails-worker-0", 2).await;
    let failed = p
        .reach(K, "fails", "phase Failed", |o| phase(o) == "Failed")
        .await;
    rows.push(row(
        K,
        "failed",
        "its Pod exits 2, which retryPolicy does not retry",
        FAILED,
        failed,
    ));
    rows
}

/// Makes KWOK end the Pod with `code`, as if its process exited.
async fn exit(pods: &Api<Pod>, name: &str, code: i32) {
    let patch = json!({ "metadata": { "annotations": { "kwok.mlcompute.io/exit-code": code.to_string() } } });
    pods.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

async fn online(p: &Plane, nowhere: &str) -> Vec<Row> {
    const E: &str = "OnlineEndpoint";
    const D: &str = "OnlineDeployment";
    const IMAGE: &str = "python:3.12-slim";
    const BAD_IMAGE: &str = "127.0.0.1:5000/nope:1";
    let mut rows = Vec::new();
    let pods = p.pods();
    // fraud: blue serves all traffic. side: deployments in trouble, with no traffic. cold: a
    // deployment that cannot be scheduled anywhere. empty: no deployment at all.
    p.create(E, "fraud", json!({}), json!({ "traffic": { "blue": 100 } }))
        .await;
    p.create(E, "side", json!({}), json!({})).await;
    p.create(E, "cold", json!({}), json!({ "traffic": { "cold": 100 } }))
        .await;
    p.create(E, "empty", json!({}), json!({})).await;
    p.create(
        E,
        "misrouted",
        json!({}),
        json!({ "traffic": { "ghost": 100 } }),
    )
    .await;
    let mut blue = scoring_deployment("fraud", IMAGE);
    blue["instanceCount"] = json!(2);
    p.create(D, "blue", json!({}), blue).await;
    p.create(D, "green", json!({}), scoring_deployment("side", IMAGE))
        .await;
    p.create(
        D,
        "broken",
        json!({}),
        scoring_deployment("side", BAD_IMAGE),
    )
    .await;
    let mut noenv = scoring_deployment("side", IMAGE);
    noenv.as_object_mut().unwrap().remove("image");
    noenv["environment"] = json!("gone@latest");
    p.create(D, "noenv", json!({}), noenv).await;
    let mut cold = scoring_deployment("cold", IMAGE);
    cold["instanceType"] = json!(nowhere);
    p.create(D, "cold", json!({}), cold).await;
    let mut sleepy = scoring_deployment("side", IMAGE);
    sleepy["scaleSettings"] = json!({ "type": "target_utilization", "minInstances": 0,
        "maxInstances": 1, "pollingInterval": 1, "scaleToZeroAfterSeconds": 2 });
    p.create(D, "sleepy", json!({}), sleepy).await;

    let ready_instances =
        |n: i64| move |o: &Value| observed(o) && o["status"]["readyInstances"].as_i64() == Some(n);

    // Endpoints.
    // Azure ML provisions an endpoint without deployments as Succeeded: nothing to wait for.
    let empty = p.reach(E, "empty", "a status", observed).await;
    rows.push(row(
        E,
        "no deployment yet",
        "no traffic, no deployment",
        HEALTHY,
        empty,
    ));
    let starting = p
        .reach(E, "cold", "a status naming its deployment", |o| {
            observed(o)
                && o["status"]["deployments"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(|d| d["name"] == "cold"))
        })
        .await;
    rows.push(row(
        E,
        "its deployment still starting",
        "its one deployment's Pods cannot be scheduled yet",
        PROGRESSING,
        starting,
    ));
    let served = p
        .reach(E, "fraud", "traffic applied", |o| {
            observed(o) && o["status"]["trafficApplied"]["blue"] == 100
        })
        .await;
    rows.push(row(
        E,
        "traffic served",
        "blue 100, blue ready",
        HEALTHY,
        served,
    ));
    let behind = p
        .patch(E, "fraud", json!({ "spec": { "description": "fraud" } }))
        .await;
    rows.push(row(E, BEHIND, BEHIND_HOW, PROGRESSING, (behind, None)));
    let misrouted = p
        .reach(
            E,
            "misrouted",
            "a status naming the missing deployment",
            |o| observed(o) && says(o, "TrafficToMissingDeployment", "ghost"),
        )
        .await;
    // Waited for, not failed: GitOps applies the objects of one sync in any order.
    rows.push(row(
        E,
        "deployment in traffic missing",
        "traffic names a deployment that does not exist (yet)",
        PROGRESSING,
        misrouted,
    ));

    // Deployments.
    let ready = p
        .reach(D, "blue", "2 ready instances", ready_instances(2))
        .await;
    rows.push(row(D, "ready", "KWOK readies its Pods", HEALTHY, ready));
    let behind = p
        .patch(D, "blue", json!({ "spec": { "description": "blue" } }))
        .await;
    rows.push(row(D, BEHIND, BEHIND_HOW, PROGRESSING, (behind, None)));
    p.reach(D, "blue", "the description change observed", observed)
        .await;
    // A rollout to a size no node has: the new instance stays Pending, the old ones serve.
    p.patch(D, "blue", json!({ "spec": { "instanceType": nowhere } }))
        .await;
    let rolling = p
        .reach(D, "blue", "a rollout with one new instance", |o| {
            observed(o) && o["status"]["updatedInstances"].as_i64() == Some(1)
        })
        .await;
    rows.push(row(
        D,
        "rollout half-way",
        "instanceType changed to one no node fits: 1 new instance Pending, 2 old ready",
        PROGRESSING,
        rolling,
    ));

    p.reach(D, "green", "1 ready instance", ready_instances(1))
        .await;
    let green = running_pods(&pods, "mlcompute.io/onlinedeployment=green", 1).await;
    kubelet_says(
        &pods,
        &name_of(&green[0]),
        not_ready("inference-server", IMAGE),
    )
    .await;
    let unready = p
        .reach(D, "green", "0 ready instances", ready_instances(0))
        .await;
    rows.push(row(
        D,
        "instances not ready",
        "its Pod runs, readiness probe not passing yet",
        PROGRESSING,
        unready,
    ));

    p.reach(D, "broken", "1 ready instance", ready_instances(1))
        .await;
    let broken = running_pods(&pods, "mlcompute.io/onlinedeployment=broken", 1).await;
    kubelet_says(
        &pods,
        &name_of(&broken[0]),
        cannot_pull("inference-server", BAD_IMAGE),
    )
    .await;
    let pull = p
        .reach(
            D,
            "broken",
            "a status saying the image cannot be pulled",
            |o| observed(o) && says(o, "ImagePullError", "cannot be pulled"),
        )
        .await;
    rows.push(row(
        D,
        "image cannot be pulled",
        "the kubelet reports ImagePullBackOff",
        FAILED,
        pull,
    ));

    let zero = p
        .reach(D, "sleepy", "Ready, scaled to zero", |o| {
            observed(o) && ready_true(o) && says(o, "ScaledToZero", "scaled to zero")
        })
        .await;
    rows.push(row(
        D,
        "scaled to zero",
        "minInstances 0, no request for scaleToZeroAfterSeconds: the autoscaler scaled it to zero",
        HEALTHY,
        zero,
    ));

    let missing = p
        .reach(D, "noenv", "a status naming the missing Environment", |o| {
            observed(o) && says(o, "EnvironmentNotFound", "gone")
        })
        .await;
    rows.push(row(
        D,
        "environment missing",
        "its Environment does not exist (yet): waited for",
        PROGRESSING,
        missing,
    ));
    rows
}

async fn batch(p: &Plane, nowhere: &str) -> Vec<Row> {
    const E: &str = "BatchEndpoint";
    const D: &str = "BatchDeployment";
    const J: &str = "BatchJob";
    let mut rows = Vec::new();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(p.client.clone(), &p.ns);
    for name in ["models", "data", "results"] {
        let pvc = serde_json::from_value(json!({
            "metadata": { "name": name },
            "spec": { "accessModes": ["ReadWriteMany"], "resources": { "requests": { "storage": "1Gi" } } }
        }))
        .unwrap();
        claims.create(&PostParams::default(), &pvc).await.unwrap();
    }
    // scorer/blue: the working pair, each watched from before its create for its first status.
    let resolving_deployment = first_status(p, D, "blue", batch_deployment("scorer")).await;
    let resolving_endpoint = first_status(
        p,
        E,
        "scorer",
        json!({ "defaults": { "deploymentName": "blue", "outputPath": "pvc://results/batch" } }),
    )
    .await;
    rows.push(row(
        E,
        "resolving",
        "the first status written (its deployment created just before)",
        PROGRESSING,
        resolving_endpoint,
    ));
    rows.push(row(
        D,
        "resolving",
        "the first status written",
        PROGRESSING,
        resolving_deployment,
    ));
    let mut stuck = batch_deployment("scorer");
    stuck["resources"]["instanceType"] = json!(nowhere);
    p.create(D, "stuck", json!({}), stuck).await;
    let mut noenv = batch_deployment("scorer");
    noenv.as_object_mut().unwrap().remove("image");
    noenv["environment"] = json!("gone@latest");
    p.create(D, "noenv", json!({}), noenv).await;
    p.create(
        E,
        "orphan",
        json!({}),
        json!({ "defaults": { "deploymentName": "ghost", "outputPath": "pvc://results/batch" } }),
    )
    .await;

    let ready = p
        .reach(E, "scorer", "Ready", |o| observed(o) && ready_true(o))
        .await;
    rows.push(row(
        E,
        "ready",
        "its default deployment exists",
        HEALTHY,
        ready,
    ));
    let behind = p
        .patch(E, "scorer", json!({ "spec": { "description": "scorer" } }))
        .await;
    rows.push(row(E, BEHIND, BEHIND_HOW, PROGRESSING, (behind, None)));
    let orphan = p
        .reach(E, "orphan", "a status naming the missing deployment", |o| {
            observed(o) && !ready_true(o)
        })
        .await;
    rows.push(row(
        E,
        "default deployment missing",
        "defaults.deploymentName names no deployment (yet): waited for",
        PROGRESSING,
        orphan,
    ));

    let ready = p
        .reach(D, "blue", "Ready", |o| observed(o) && ready_true(o))
        .await;
    rows.push(row(D, "ready", "inline image", HEALTHY, ready));
    let behind = p
        .patch(D, "blue", json!({ "spec": { "description": "blue" } }))
        .await;
    rows.push(row(D, BEHIND, BEHIND_HOW, PROGRESSING, (behind, None)));
    let noenv = p
        .reach(D, "noenv", "a status naming the missing Environment", |o| {
            observed(o) && says(o, "EnvironmentNotFound", "gone")
        })
        .await;
    rows.push(row(
        D,
        "environment missing",
        "its Environment does not exist (yet): waited for",
        PROGRESSING,
        noenv,
    ));

    // Jobs.
    let input = json!({ "path": "pvc://data/in" });
    let exits = |code: &str, after: &str| {
        json!({ "annotations": {
            "kwok.mlcompute.io/exit-code": code, "kwok.mlcompute.io/exit-after": after } })
    };
    p.create(
        J,
        "queued",
        json!({}),
        json!({ "endpointName": "absent", "input": input }),
    )
    .await;
    p.create(
        J,
        "starting",
        json!({}),
        json!({ "endpointName": "scorer", "deploymentName": "stuck", "input": input }),
    )
    .await;
    p.create(
        J,
        "running",
        exits("0", "600s"),
        json!({ "endpointName": "scorer", "input": input }),
    )
    .await;
    p.create(
        J,
        "done",
        json!({}),
        json!({ "endpointName": "scorer", "input": input }),
    )
    .await;
    p.create(
        J,
        "fails",
        exits("3", "1s"),
        json!({ "endpointName": "scorer", "input": input }),
    )
    .await;
    let queued = p
        .reach(J, "queued", "phase Queued", |o| phase(o) == "Queued")
        .await;
    rows.push(row(
        J,
        "queued",
        "its endpoint does not exist yet",
        PROGRESSING,
        queued,
    ));
    let starting = p
        .reach(J, "starting", "phase Starting, Pods unschedulable", |o| {
            phase(o) == "Starting" && says(o, "Unschedulable", "")
        })
        .await;
    rows.push(row(
        J,
        "starting",
        "its deployment's instance type fits no node: Pods Pending",
        PROGRESSING,
        starting,
    ));
    let running = p
        .reach(J, "running", "phase Running", |o| phase(o) == "Running")
        .await;
    rows.push(row(
        J,
        "running",
        "KWOK runs its Pods (they exit after 600 s)",
        PROGRESSING,
        running,
    ));
    let behind = p
        .patch(J, "running", json!({ "spec": { "cancel": true } }))
        .await;
    rows.push(row(
        J,
        BEHIND,
        "the API server's answer to spec.cancel",
        PROGRESSING,
        (behind, None),
    ));
    let canceled = p
        .reach(J, "running", "phase Canceled", |o| phase(o) == "Canceled")
        .await;
    rows.push(row(
        J,
        "canceled",
        "spec.cancel set while running",
        CANCELED,
        canceled,
    ));
    let done = p
        .reach(J, "done", "phase Completed", |o| phase(o) == "Completed")
        .await;
    rows.push(row(
        J,
        "completed",
        "KWOK completes its Pods",
        HEALTHY,
        done,
    ));
    let failed = p
        .reach(J, "fails", "phase Failed", |o| phase(o) == "Failed")
        .await;
    rows.push(row(
        J,
        "failed",
        "its Pods exit 3 (error threshold crossed)",
        FAILED,
        failed,
    ));
    rows
}

// ---------------------------------------------------------------------------------------------
// The table

/// A message as the table shows it: generated names and times replaced, one line, bounded.
fn abbreviate(message: &str, namespaces: &[&str]) -> String {
    let mut m = message.replace(['\n', '\r'], " ");
    for ns in namespaces {
        m = m.replace(ns, "<ns>");
    }
    let rules = [
        (
            r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})",
            "<time>",
        ),
        // Pods of a ReplicaSet or a Job: <name>-<hash>-<suffix>, <name>-<index>-<suffix>.
        (r"\b([a-z0-9-]+?)-[a-z0-9]{8,10}-[a-z0-9]{5}\b", "$1-<pod>"),
        (r"\b([a-z0-9-]+?-\d+)-[a-z0-9]{5}\b", "$1-<pod>"),
    ];
    for (re, with) in rules {
        m = regex::Regex::new(re)
            .unwrap()
            .replace_all(&m, with)
            .into_owned();
    }
    let m = m.replace('|', "\\|");
    const MAX: usize = 120;
    if m.chars().count() > MAX {
        format!("{}…", m.chars().take(MAX).collect::<String>())
    } else {
        m
    }
}

fn cell(v: &Verdict, namespaces: &[&str]) -> String {
    let m = abbreviate(&v.message, namespaces);
    if m.is_empty() {
        format!("**{}**", v.status)
    } else {
        // A code span: the operator's messages hold <placeholders> a renderer would take for HTML.
        format!("**{}** `{}`", v.status, m.replace('`', "'"))
    }
}

fn table(judged: &[Judged], namespaces: &[&str]) -> String {
    let mut out = String::from(
        "# Health as Flux and Argo CD see it\n\n\
         Generated by `tests/health.rs` (the KWOK tier of `e2e/run-tests`; to rewrite this file, run it with\n\
         `MLC_UPDATE_DOCS=1`). Each row is a real object on the local plane, brought into its state by the\n\
         operator (KWOK runs the Pods; where a kubelet's word is needed, the test writes the Pod's status as\n\
         a kubelet would), read back from the API server and judged by:\n\n\
         - **kstatus**: `status.Compute` of `sigs.k8s.io/cli-utils` v0.37.2, what Flux (`wait`, health checks)\n\
         \x20 and kpt use;\n\
         - **Argo CD**: `deploy/argocd/health.lua` (the `resource.customizations.health.mlcompute.io_<Kind>`\n\
         \x20 entries of `deploy/argocd/argocd-cm-health.yaml`), run in gopher-lua v1.1.2 as Argo CD v3.5.1 runs\n\
         \x20 it (no standard libraries but base, table and a safe `os`; see `e2e/health/cmd/mlc-argo-health`).\n\n\
         Built by `e2e/health/build`. Messages are abbreviated: generated names and times are replaced.\n\
         A row marked ✗ differs from the expected verdicts (kstatus / Argo CD) and fails the test.\n\n\
         | Kind | State | Reached by | kstatus | Argo CD | Expected | |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for j in judged {
        let argo = match &j.argo {
            Ok(v) => cell(v, namespaces),
            Err(e) => format!(
                "**Lua error** `{}`",
                abbreviate(e, namespaces).replace('`', "'")
            ),
        };
        let mut expected = format!("{} / {}", j.row.expect.kstatus, j.row.expect.argo);
        match j.row.expect.msg {
            Msg::Any => {}
            Msg::Reason => expected.push_str(", with the reason"),
            Msg::ArgoStartsWith(p) => write!(expected, ", Argo CD message \"{p}…\"").unwrap(),
            Msg::ArgoSays(_) => expected.push_str(", Argo CD says why no node matches"),
        }
        let how = match &j.row.not_reached {
            None => j.row.how.to_string(),
            Some(_) => format!("{} (**state not reached**)", j.row.how),
        };
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            j.row.kind,
            j.row.state,
            how,
            cell(&j.kstatus, namespaces),
            argo,
            expected,
            if j.problems.is_empty() { "✓" } else { "✗" }
        )
        .unwrap();
    }
    out
}

/// Deletes the test's InstanceTypes (cluster-scoped, so the namespace does not take them along).
struct InstanceTypes(Vec<String>);

impl Drop for InstanceTypes {
    fn drop(&mut self) {
        let mut args = vec![
            "--kubeconfig".to_string(),
            support::kubeconfig_path(),
            "delete".into(),
            "instancetypes.mlcompute.io".into(),
            "--ignore-not-found".into(),
            "--wait=false".into(),
        ];
        args.extend(self.0.iter().cloned());
        let _ = std::process::Command::new(support::kubectl())
            .args(&args)
            .stdout(std::process::Stdio::null())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn every_kind_in_every_state_reads_right_in_kstatus_and_argo_cd() {
    // Fail early, before anything is created, when the helpers are not built.
    health::kstatus(
        &json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "x" } }),
    );
    let client = support::client().await;
    let unwatched = TestNamespace::new(&client, "health-pristine").await;
    let ns = TestNamespace::new(&client, "health").await;
    let names = [ns.name(), unwatched.name()];
    let cpu = format!("{}-cpu", ns.name());
    let nowhere = format!("{}-nowhere", ns.name());
    let _cleanup = InstanceTypes(vec![
        cpu.clone(),
        nowhere.clone(),
        format!("{}-pristine", unwatched.name()),
    ]);

    let pristine = Plane {
        client: client.clone(),
        ns: unwatched.name().to_string(),
    };
    let mut rows = never_written(&pristine).await;

    let p = Plane {
        client: client.clone(),
        ns: ns.name().to_string(),
    };
    let limits = json!({ "limits": { "cpu": "1", "memory": "1Gi" } });
    p.create(
        "InstanceType",
        &cpu,
        json!({}),
        json!({ "nodeSelector": { "mlcompute.io/pool": "cpu" }, "resources": limits }),
    )
    .await;
    p.create(
        "InstanceType",
        &nowhere,
        json!({}),
        json!({ "nodeSelector": { "mlcompute.io/pool": "nowhere" }, "resources": limits }),
    )
    .await;
    // The autoscaler reads load from a router; here one that reports no request at all.
    let router = support::fake_router::FakeRouter::start("health").await;
    let op = Operator::start_with(ns.name(), &["--autoscaler-router-urls", &router.url]);

    let scenarios: Vec<Scenario<'_>> = vec![
        Box::pin(environments(&p)),
        Box::pin(instance_types(&p, &cpu, &nowhere)),
        Box::pin(training_jobs(&p)),
        Box::pin(online(&p, &nowhere)),
        Box::pin(batch(&p, &nowhere)),
    ];
    for r in futures::future::join_all(scenarios).await {
        rows.extend(r);
    }
    drop(op);

    // Kinds in the order of the contract, then states in the order they were recorded.
    rows.sort_by_key(|r| KINDS.iter().position(|k| *k == r.kind).unwrap());
    let judged: Vec<Judged> = rows.into_iter().map(judge).collect();
    let mut problems: Vec<String> = judged
        .iter()
        .flat_map(|j| {
            j.problems
                .iter()
                .map(move |p| format!("{} {}: {p}", j.row.kind, j.row.state))
        })
        .collect();

    if let Ok(dir) = std::env::var("MLC_HEALTH_DUMP") {
        // Every row's object as the tools read it, for looking into a mismatch.
        std::fs::create_dir_all(&dir).unwrap();
        for j in &judged {
            let file = format!("{}-{}.json", j.row.kind, j.row.state.replace(' ', "-"));
            let text = serde_json::to_string_pretty(&j.row.obj).unwrap();
            std::fs::write(std::path::Path::new(&dir).join(file), text).unwrap();
        }
    }
    let doc = table(&judged, &names);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/health.md");
    if std::env::var("MLC_UPDATE_DOCS").as_deref() == Ok("1") {
        std::fs::write(&path, &doc).unwrap();
    } else if std::fs::read_to_string(&path).ok().as_deref() != Some(doc.as_str()) {
        let stale = std::env::temp_dir().join(format!("health-{}.md", ns.name()));
        std::fs::write(&stale, &doc).unwrap();
        problems.push(format!(
            "docs/health.md differs from this run's table (written to {}): rerun with MLC_UPDATE_DOCS=1 and commit it",
            stale.display()
        ));
    }
    println!("{doc}");
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The shipped Argo CD script on objects written exactly by the conventions the operator follows
/// (no plane needed, only `e2e/health/build`): what Argo CD shows for each, whatever the operator
/// does today. The rows above are the same question asked of real objects.
#[test]
#[ignore = "needs the helpers e2e/health/build makes"]
fn the_argo_script_reads_the_status_conventions() {
    let obj = |kind: &str, generation: i64, status: Value| {
        json!({ "apiVersion": API_VERSION, "kind": kind,
                "metadata": { "name": "x", "namespace": "ns", "generation": generation },
                "spec": {}, "status": status })
    };
    let c = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({ "type": type_, "status": status, "reason": reason, "message": message,
                "lastTransitionTime": NOW, "observedGeneration": 2 })
    };
    let cases = [
        (
            "status defaulted by the CRD, never written",
            obj("TrainingJob", 1, json!({ "observedGeneration": 0 })),
            "Progressing",
            "Waiting for the mlcompute operator",
        ),
        (
            "observedGeneration behind",
            obj(
                "OnlineEndpoint",
                3,
                json!({ "observedGeneration": 2, "conditions": [c("Ready", "True", "Ready", "serving")] }),
            ),
            "Progressing",
            "The operator has not yet seen generation 3",
        ),
        (
            "job queued",
            obj(
                "TrainingJob",
                2,
                json!({ "observedGeneration": 2, "phase": "Queued", "message": "Environment \"x\" does not exist",
                        "conditions": [c("Ready", "False", "EnvironmentNotFound", "Environment \"x\" does not exist"),
                                       c("Reconciling", "True", "EnvironmentNotFound", "Environment \"x\" does not exist")] }),
            ),
            "Progressing",
            "Queued: Environment \"x\" does not exist",
        ),
        (
            "job running, Reconciling without a message",
            obj(
                "BatchJob",
                2,
                json!({ "observedGeneration": 2, "phase": "Running", "message": "2 driver pod(s) running",
                        "conditions": [c("Reconciling", "True", "Running", "")] }),
            ),
            "Progressing",
            "Running: 2 driver pod(s) running",
        ),
        (
            "job failed, the reason only on Stalled",
            obj(
                "TrainingJob",
                2,
                json!({ "observedGeneration": 2, "phase": "Failed", "message": "",
                        "conditions": [c("Ready", "False", "NonRetryableExitCode", ""),
                                       c("Stalled", "True", "NonRetryableExitCode", "instance 0 exited with code 2")] }),
            ),
            "Degraded",
            "instance 0 exited with code 2",
        ),
        (
            "job canceled",
            obj(
                "TrainingJob",
                2,
                json!({ "observedGeneration": 2, "phase": "Canceled", "message": "Canceled: spec.cancel was set",
                        "conditions": [c("Ready", "True", "Canceled", "Canceled: spec.cancel was set")] }),
            ),
            "Healthy",
            "Canceled: spec.cancel was set",
        ),
        (
            "job canceled, message without the word",
            obj(
                "BatchJob",
                2,
                json!({ "observedGeneration": 2, "phase": "Canceled", "message": "by request" }),
            ),
            "Healthy",
            "Canceled: by request",
        ),
        (
            "job completed",
            obj(
                "BatchJob",
                2,
                json!({ "observedGeneration": 2, "phase": "Completed", "message": "all done",
                        "conditions": [c("Ready", "True", "Completed", "all done")] }),
            ),
            "Healthy",
            "all done",
        ),
        (
            "endpoint whose deployment is starting",
            obj(
                "OnlineEndpoint",
                2,
                json!({ "observedGeneration": 2, "provisioningState": "Succeeded",
                        "conditions": [c("Ready", "False", "NoReadyDeployment", "deployment \"blue\" has no ready instance")] }),
            ),
            "Progressing",
            "deployment \"blue\" has no ready instance",
        ),
        (
            "deployment rolling out while still serving",
            obj(
                "OnlineDeployment",
                2,
                json!({ "observedGeneration": 2,
                        "conditions": [c("Ready", "True", "InstancesReady", "2 of 2 instances ready"),
                                       c("Reconciling", "True", "RollingOut", "1 of 2 instances updated")] }),
            ),
            "Progressing",
            "1 of 2 instances updated",
        ),
        (
            "endpoint with traffic to a missing deployment: waiting for it",
            obj(
                "OnlineEndpoint",
                2,
                json!({ "observedGeneration": 2,
                        "conditions": [c("Ready", "False", "TrafficToMissingDeployment", "traffic names \"ghost\""),
                                       c("Reconciling", "True", "TrafficToMissingDeployment", "traffic names \"ghost\"")] }),
            ),
            "Progressing",
            "traffic names \"ghost\"",
        ),
        (
            "endpoint whose name another namespace holds",
            obj(
                "OnlineEndpoint",
                2,
                json!({ "observedGeneration": 2,
                        "conditions": [c("Ready", "False", "NameTaken", "name held by team-a"),
                                       c("Stalled", "True", "NameTaken", "name held by team-a")] }),
            ),
            "Degraded",
            "name held by team-a",
        ),
        (
            "Stalled and Reconciling both True: the first listed wins, as in kstatus",
            obj(
                "BatchDeployment",
                2,
                json!({ "observedGeneration": 2,
                        "conditions": [c("Stalled", "True", "NoImage", "neither environment nor image is set"),
                                       c("Reconciling", "True", "Resolving", "resolving")] }),
            ),
            "Degraded",
            "neither environment nor image is set",
        ),
        (
            "InstanceType no node matches",
            obj(
                "InstanceType",
                1,
                json!({ "observedGeneration": 1, "matchingNodes": 0,
                        "conditions": [c("Ready", "True", "NoMatchingNodes", "no node matches nodeSelector pool=x")] }),
            ),
            "Healthy",
            "no node matches nodeSelector pool=x",
        ),
        (
            "Environment valid",
            obj(
                "Environment",
                1,
                json!({ "observedGeneration": 1, "conditions": [c("Ready", "True", "Registered", "version 1 is current")] }),
            ),
            "Healthy",
            "version 1 is current",
        ),
    ];
    let mut problems = Vec::new();
    for (what, obj, status, message) in cases {
        match health::argo(&obj) {
            Ok(v) if v.status == status && v.message == message => {}
            Ok(v) => problems.push(format!("{what}: {v}, expected {status} \"{message}\"")),
            Err(e) => problems.push(format!("{what}: the Lua fails: {e}")),
        }
    }
    // Argo CD decides a deleted object's health before running the script.
    let mut deleting = obj(
        "TrainingJob",
        1,
        json!({ "observedGeneration": 1, "phase": "Running" }),
    );
    deleting["metadata"]["deletionTimestamp"] = json!(NOW);
    let v = health::argo(&deleting).unwrap();
    assert_eq!(
        (v.status.as_str(), v.message.as_str()),
        ("Progressing", "Pending deletion")
    );
    assert_eq!(health::kstatus(&deleting).status, "Terminating");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
