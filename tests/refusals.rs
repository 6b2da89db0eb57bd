//! Every refusal is visible, and retries back off (issue 12).
//!
//! 50 objects whose children the API server (or the ownership check) refuses: 20 TrainingJobs
//! naming a PriorityClass that does not exist (admission: 403), 15 TrainingJobs whose Pods a
//! ValidatingAdmissionPolicy of the platform team refuses as invalid (422), and 15 OnlineDeployments
//! whose Service name a user's Service already holds (NameConflict). Each must show the server's
//! message in a condition and get a Warning Event within 10 s; five minutes later the operator
//! must send at most one request per object per minute for them (counted from the API server's own
//! `apiserver_request_total`) and log at most a few lines per object per minute.
//!
//! A test binary of its own: it counts the API server's requests, which other tests would add to.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Event, Service};
use kube::{
    Api, Client,
    api::{DynamicObject, ListParams, PostParams},
    core::{ApiResource, GroupVersionKind},
};
use mlcompute::api::{
    online_deployment::OnlineDeployment, online_endpoint::OnlineEndpoint, training_job::TrainingJob,
};
use serde_json::{Value, json};
use support::{Operator, TestNamespace, eventually};

const PRIORITY: usize = 20;
const POLICY: usize = 15;
const CONFLICT: usize = 15;
const OBJECTS: usize = PRIORITY + POLICY + CONFLICT;

/// The API server's `apiserver_request_total`, summed per (verb, resource), for the kinds the
/// operator reads and writes for these objects (watches excluded: they are long-lived).
async fn requests(client: &Client) -> BTreeMap<(String, String), f64> {
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(req).await.unwrap();
    let kinds = [
        "pods",
        "services",
        "configmaps",
        "secrets",
        "trainingjobs",
        "onlinedeployments",
        "onlineendpoints",
        "events",
        "deployments",
    ];
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let label = |k: &str| {
            let start = line.find(&format!("{k}=\""))? + k.len() + 2;
            let end = line[start..].find('"')? + start;
            Some(line[start..end].to_string())
        };
        let (Some(verb), Some(resource)) = (label("verb"), label("resource")) else {
            continue;
        };
        if verb == "WATCH" || verb == "LIST" || !kinds.contains(&resource.as_str()) {
            continue;
        }
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        *out.entry((verb, resource)).or_default() += value;
    }
    out
}

fn delta(
    before: &BTreeMap<(String, String), f64>,
    after: &BTreeMap<(String, String), f64>,
) -> BTreeMap<(String, String), f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// Operator log lines at info level or above in `text` (its level may be wrapped in colour codes).
fn log_lines(text: &str) -> usize {
    text.lines()
        .filter(|l| {
            ["INFO", "WARN", "ERROR"].iter().any(|level| {
                l.contains(&format!(" {level} ")) || l.contains(&format!(" {level}\u{1b}"))
            })
        })
        .count()
}

fn stalled(status: Option<&Value>) -> Option<(String, String)> {
    let c = status?
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Stalled" && c["status"] == "True")?;
    Some((c["reason"].as_str()?.into(), c["message"].as_str()?.into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn fifty_refused_objects_are_told_and_backed_off() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "refusals").await;
    // The platform team's policy: Pods in this namespace must carry a cost-center label.
    let policy_name = format!("{}-cost-center", ns.name());
    let admission = |kind: &str| {
        ApiResource::from_gvk(&GroupVersionKind::gvk(
            "admissionregistration.k8s.io",
            "v1",
            kind,
        ))
    };
    let policies: Api<DynamicObject> =
        Api::all_with(client.clone(), &admission("ValidatingAdmissionPolicy"));
    let bindings: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &admission("ValidatingAdmissionPolicyBinding"),
    );
    let obj = |v: Value| serde_json::from_value::<DynamicObject>(v).unwrap();
    policies
        .create(
            &PostParams::default(),
            &obj(json!({
                "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
                "metadata": { "name": policy_name },
                "spec": {
                    "failurePolicy": "Fail",
                    "matchConstraints": { "resourceRules": [{ "apiGroups": [""], "apiVersions": ["v1"],
                        "operations": ["CREATE"], "resources": ["pods"] }] },
                    "validations": [{ "expression": "has(object.metadata.labels) && 'cost-center' in object.metadata.labels",
                                      "message": "pods must carry a cost-center label", "reason": "Invalid" }]
                }
            })),
        )
        .await
        .unwrap();
    bindings
        .create(
            &PostParams::default(),
            &obj(json!({
                "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
                "metadata": { "name": policy_name },
                "spec": { "policyName": policy_name, "validationActions": ["Deny"],
                          "matchResources": { "namespaceSelector": { "matchLabels": {
                              "kubernetes.io/metadata.name": ns.name() } } } }
            })),
        )
        .await
        .unwrap();
    let _cleanup = scopeguard(policy_name.clone());

    let (jobs, ods, eps, services): (
        Api<TrainingJob>,
        Api<OnlineDeployment>,
        Api<OnlineEndpoint>,
        Api<Service>,
    ) = (ns.api(), ns.api(), ns.api(), ns.api());
    let pp = PostParams::default();
    let ep: OnlineEndpoint = serde_json::from_value(json!({
        "apiVersion": "mlcompute.io/v1alpha1", "kind": "OnlineEndpoint",
        "metadata": { "name": "refusals" }, "spec": { "authMode": "none" } }))
    .unwrap();
    eps.create(&pp, &ep).await.unwrap();
    for i in 0..CONFLICT {
        let svc: Service = serde_json::from_value(json!({
            "metadata": { "name": format!("user-svc-{i}") },
            "spec": { "selector": { "app": "mine" }, "ports": [{ "port": 80 }] } }))
        .unwrap();
        services.create(&pp, &svc).await.unwrap();
    }
    // Give the policy a moment to be enforced (the API server loads policies asynchronously).
    eventually(
        "the admission policy to be enforced",
        Duration::from_secs(30),
        || {
            let client = client.clone();
            let ns = ns.name().to_string();
            async move {
                let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client, &ns);
                let pod = serde_json::from_value(json!({ "metadata": { "name": "probe" },
                "spec": { "containers": [{ "name": "c", "image": "busybox" }] } }))
                .unwrap();
                let dry = PostParams {
                    dry_run: true,
                    ..PostParams::default()
                };
                match pods.create(&dry, &pod).await {
                    Err(kube::Error::Api(s)) if s.code == 422 => Some(()),
                    _ => None,
                }
            }
        },
    )
    .await;

    let op = Operator::start(ns.name());
    let started = Instant::now();
    for i in 0..PRIORITY {
        let j: TrainingJob = serde_json::from_value(json!({
            "apiVersion": "mlcompute.io/v1alpha1", "kind": "TrainingJob",
            "metadata": { "name": format!("prio-{i}") },
            "spec": { "command": "python t.py", "image": "busybox",
                      "priorityClassName": "no-such-priority" } }))
        .unwrap();
        jobs.create(&pp, &j).await.unwrap();
    }
    for i in 0..POLICY {
        let j: TrainingJob = serde_json::from_value(json!({
            "apiVersion": "mlcompute.io/v1alpha1", "kind": "TrainingJob",
            "metadata": { "name": format!("policy-{i}") },
            "spec": { "command": "python t.py", "image": "busybox" } }))
        .unwrap();
        jobs.create(&pp, &j).await.unwrap();
    }
    for i in 0..CONFLICT {
        let d: OnlineDeployment = serde_json::from_value(json!({
            "apiVersion": "mlcompute.io/v1alpha1", "kind": "OnlineDeployment",
            "metadata": { "name": format!("user-svc-{i}") },
            "spec": { "endpointName": "refusals", "image": "ghcr.io/example/api:1",
                      "model": "https://models.example.com/m.pkl", "instanceCount": 1 } }))
        .unwrap();
        ods.create(&pp, &d).await.unwrap();
    }

    // Every object: the server's message in a condition and a Warning Event, within 10 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    let told = loop {
        let (shown, warned) = observe(&jobs, &ods, &client, ns.name()).await;
        let missing: Vec<&String> = shown
            .iter()
            .filter(|(n, s)| s.is_none() || !warned.contains(*n))
            .map(|(n, _)| n)
            .collect();
        if shown.len() == OBJECTS && missing.is_empty() {
            break shown
                .into_iter()
                .map(|(n, s)| (n, s.unwrap_or_default()))
                .collect::<BTreeMap<_, _>>();
        }
        assert!(
            Instant::now() < deadline,
            "after 10 s, {} of {OBJECTS} objects lack a refusal condition or Warning Event: {missing:?}",
            missing.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "all {OBJECTS} told within {:?} of the first create",
        started.elapsed()
    );
    for (name, (reason, message)) in &told {
        let (want_reason, want_message) = if name.starts_with("prio-") {
            (
                "ChildForbidden",
                "no PriorityClass with name no-such-priority was found",
            )
        } else if name.starts_with("policy-") {
            ("ChildInvalid", "pods must carry a cost-center label")
        } else {
            ("NameConflict", "it was not created by mlcompute")
        };
        assert_eq!(reason, want_reason, "{name}: {message}");
        assert!(message.contains(want_message), "{name}: {message}");
    }

    // Five minutes on, the operator sends at most one request per object per minute for them,
    // and logs at most a few lines per object per minute.
    let settle = Duration::from_secs(300);
    tokio::time::sleep(settle.saturating_sub(started.elapsed())).await;
    let log_before = std::fs::read_to_string(op.log_path()).unwrap_or_default();
    let before = requests(&client).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let after = requests(&client).await;
    let log_after = std::fs::read_to_string(op.log_path()).unwrap_or_default();
    let sent = delta(&before, &after);
    let total: f64 = sent.values().sum();
    let lines = log_lines(&log_after[log_before.len().min(log_after.len())..]);
    println!(
        "minute 5-6: {total} requests for {OBJECTS} refused objects ({sent:?}); {lines} log lines at info or above"
    );
    assert!(
        total <= OBJECTS as f64,
        "{total} requests in a minute for {OBJECTS} objects: {sent:?}"
    );
    assert!(
        lines <= 3 * OBJECTS,
        "{lines} log lines in a minute for {OBJECTS} objects"
    );
    // Still told, nothing lost: the objects are all there with their refusal.
    assert_eq!(
        jobs.list(&ListParams::default()).await.unwrap().items.len(),
        PRIORITY + POLICY
    );
}

/// Each object's refusal (reason, message) if shown, and the names with a Warning Event.
async fn observe(
    jobs: &Api<TrainingJob>,
    ods: &Api<OnlineDeployment>,
    client: &Client,
    ns: &str,
) -> (
    BTreeMap<String, Option<(String, String)>>,
    std::collections::BTreeSet<String>,
) {
    let mut shown = BTreeMap::new();
    for j in jobs.list(&ListParams::default()).await.unwrap().items {
        let v = serde_json::to_value(&j.status).unwrap();
        shown.insert(j.metadata.name.clone().unwrap(), stalled(Some(&v)));
    }
    for d in ods.list(&ListParams::default()).await.unwrap().items {
        let v = serde_json::to_value(&d.status).unwrap();
        shown.insert(d.metadata.name.clone().unwrap(), stalled(Some(&v)));
    }
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let warned = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter_map(|e| e.involved_object.name)
        .collect();
    (shown, warned)
}

/// Deletes the cluster-scoped admission policy and binding when the test ends (even on panic).
fn scopeguard(name: String) -> impl Drop {
    struct Guard(String);
    impl Drop for Guard {
        fn drop(&mut self) {
            for kind in [
                "validatingadmissionpolicybinding",
                "validatingadmissionpolicy",
            ] {
                let _ = std::process::Command::new(support::kubectl())
                    .args([
                        "--kubeconfig",
                        &support::kubeconfig_path(),
                        "delete",
                        kind,
                        &self.0,
                        "--wait=false",
                    ])
                    .stdout(std::process::Stdio::null())
                    .status();
            }
        }
    }
    Guard(name)
}
