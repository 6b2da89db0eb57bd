//! Workload Pods under PodSecurity admission, on the local plane (the API server's built-in
//! PodSecurity plugin judges; KWOK runs what it admits):
//! - a namespace enforcing `baseline` runs a TrainingJob, an OnlineDeployment and a BatchJob with
//!   the operator's defaults, and their Pods mount no ServiceAccount token;
//! - a namespace enforcing `restricted` runs all three once the user sets a non-root user, and the
//!   same OnlineDeployment and BatchJob without one say in their status, with the admission
//!   message, that their Pods are refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod, PodSpec};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use mlcompute::api::{
    batch_deployment::BatchDeployment, batch_endpoint::BatchEndpoint, batch_job::BatchJob,
    online_deployment::OnlineDeployment, online_endpoint::OnlineEndpoint,
    training_job::TrainingJob,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use support::{Operator, TestNamespace, eventually, wait_for, warning_event};

const T: Duration = Duration::from_secs(90);

async fn enforce(client: &kube::Client, ns: &TestNamespace, level: &str) {
    let patch = json!({ "metadata": { "labels": {
        "pod-security.kubernetes.io/enforce": level,
        "pod-security.kubernetes.io/enforce-version": "latest",
    } } });
    Api::<Namespace>::all(client.clone())
        .patch(ns.name(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

async fn create<K>(api: &Api<K>, kind: &str, name: &str, spec: Value)
where
    K: kube::Resource + Clone + std::fmt::Debug + DeserializeOwned + serde::Serialize,
{
    let obj: K = serde_json::from_value(json!({
        "apiVersion": "mlcompute.io/v1alpha1", "kind": kind,
        "metadata": { "name": name }, "spec": spec
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
}

/// `spec` with the user's non-root settings added, when `non_root`.
fn as_user(mut spec: Value, non_root: bool) -> Value {
    if non_root {
        spec["podSecurityContext"] =
            json!({ "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000 });
    }
    spec
}

/// Endpoint names are unique across namespaces: each test gets its own.
struct Endpoints {
    online: String,
    batch: String,
}

/// The endpoints, claims and batch deployments the online and batch objects need.
async fn setup(ns: &TestNamespace) -> Endpoints {
    let suffix = format!("{:08x}", rand::random::<u32>());
    let names = Endpoints {
        online: format!("web-{suffix}"),
        batch: format!("scorer-{suffix}"),
    };
    let claims: Api<PersistentVolumeClaim> = ns.api();
    for name in ["models", "data", "results"] {
        let pvc = serde_json::from_value(json!({
            "metadata": { "name": name },
            "spec": { "accessModes": ["ReadWriteMany"], "resources": { "requests": { "storage": "1Gi" } } }
        }))
        .unwrap();
        claims.create(&PostParams::default(), &pvc).await.unwrap();
    }
    create(
        &ns.api::<OnlineEndpoint>(),
        "OnlineEndpoint",
        &names.online,
        json!({}),
    )
    .await;
    create(
        &ns.api::<BatchEndpoint>(),
        "BatchEndpoint",
        &names.batch,
        json!({ "defaults": { "outputPath": "pvc://results/batch" } }),
    )
    .await;
    for (name, non_root) in [("nonroot", true), ("root", false)] {
        let spec = json!({ "endpointName": names.batch, "model": "pvc://models/m1",
            "image": "python:3.12-slim",
            "codeConfiguration": { "code": "pvc://models/code", "scoringScript": "score.py" } });
        create(
            &ns.api::<BatchDeployment>(),
            "BatchDeployment",
            name,
            as_user(spec, non_root),
        )
        .await;
    }
    names
}

fn training(non_root: bool) -> Value {
    as_user(
        json!({ "image": "python:3.12-slim", "command": "python train.py",
                "inputs": { "data": { "type": "uri_file", "path": "https://example.com/d.csv" } } }),
        non_root,
    )
}

fn online(endpoints: &Endpoints, non_root: bool) -> Value {
    as_user(
        json!({ "endpointName": endpoints.online, "image": "python:3.12-slim",
                "model": "https://example.com/m/model.pkl",
                "codeConfiguration": { "code": "pvc://models/code", "scoringScript": "score.py" } }),
        non_root,
    )
}

fn batch(endpoints: &Endpoints, deployment: &str) -> Value {
    json!({ "endpointName": endpoints.batch, "deploymentName": deployment,
            "input": { "path": "https://example.com/in/a.csv", "type": "uri_file" } })
}

/// The Pods labelled `selector`, once at least `n` exist.
async fn pods_of(ns: &TestNamespace, selector: &str, n: usize) -> Vec<Pod> {
    let pods: Api<Pod> = ns.api();
    eventually(&format!("pods {selector}"), T, || async {
        let list = pods
            .list(&ListParams::default().labels(selector))
            .await
            .ok()?;
        (list.items.len() >= n).then_some(list.items)
    })
    .await
}

/// The admitted Pod mounts no token and every container, init containers included, is hardened;
/// `non_root` says whether the rest of `restricted` is there too.
fn assert_hardened(pod: &Pod, non_root: bool) {
    let spec: &PodSpec = pod.spec.as_ref().unwrap();
    let name = pod.metadata.name.clone().unwrap_or_default();
    assert_eq!(spec.automount_service_account_token, Some(false), "{name}");
    let seccomp = spec
        .security_context
        .as_ref()
        .unwrap()
        .seccomp_profile
        .as_ref();
    assert_eq!(seccomp.unwrap().type_, "RuntimeDefault", "{name}");
    let containers: Vec<_> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .collect();
    for c in containers {
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(
            sc.allow_privilege_escalation,
            Some(false),
            "{name}/{}",
            c.name
        );
        assert!(
            c.volume_mounts
                .iter()
                .flatten()
                .all(|m| !m.mount_path.contains("serviceaccount")),
            "{name}/{}: no token mount",
            c.name
        );
        if non_root {
            assert_eq!(sc.run_as_non_root, Some(true), "{name}/{}", c.name);
        }
    }
}

fn has_init_containers(pod: &Pod) -> bool {
    pod.spec.as_ref().unwrap().init_containers.is_some()
}

fn running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn a_baseline_namespace_runs_all_three_kinds_with_the_defaults() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "podsec-baseline").await;
    enforce(&client, &ns, "baseline").await;
    let endpoints = setup(&ns).await;
    let _op = Operator::start(ns.name());

    create(
        &ns.api::<TrainingJob>(),
        "TrainingJob",
        "train",
        training(false),
    )
    .await;
    // MPI's sshd runs as root with the runtime's capabilities: baseline admits it too.
    create(
        &ns.api::<TrainingJob>(),
        "TrainingJob",
        "mpi",
        json!({ "image": "mpi:1", "command": "./hello",
                "resources": { "instanceCount": 2 },
                "distribution": { "type": "mpi", "processCountPerInstance": 1 } }),
    )
    .await;
    create(
        &ns.api::<OnlineDeployment>(),
        "OnlineDeployment",
        "blue",
        online(&endpoints, false),
    )
    .await;
    create(
        &ns.api::<BatchJob>(),
        "BatchJob",
        "score-1",
        batch(&endpoints, "root"),
    )
    .await;

    let train = pods_of(&ns, "mlcompute.io/trainingjob=train", 1).await;
    assert_hardened(&train[0], false);
    assert!(has_init_containers(&train[0]));
    let mpi = pods_of(&ns, "mlcompute.io/trainingjob=mpi", 2).await;
    assert_hardened(&mpi[0], false);
    let serving = pods_of(&ns, "mlcompute.io/onlinedeployment=blue", 1).await;
    assert_hardened(&serving[0], false);
    assert!(has_init_containers(&serving[0]));
    let drivers = pods_of(&ns, "mlcompute.io/batchjob=score-1", 1).await;
    // The batch driver keeps its own account (its progress channel); the user's code is another
    // helper's concern, so only the hardening is checked here.
    let spec = drivers[0].spec.as_ref().unwrap();
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
    {
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
    }

    let ods: Api<OnlineDeployment> = ns.api();
    wait_for(&ods, "blue", T, |d: Option<&OnlineDeployment>| {
        d.and_then(|d| d.status.as_ref()?.ready_instances) == Some(1)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn a_restricted_namespace_runs_non_root_workloads_and_says_why_it_refuses_the_others() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "podsec-restricted").await;
    enforce(&client, &ns, "restricted").await;
    let endpoints = setup(&ns).await;
    let _op = Operator::start(ns.name());

    create(
        &ns.api::<TrainingJob>(),
        "TrainingJob",
        "train",
        training(true),
    )
    .await;
    create(
        &ns.api::<OnlineDeployment>(),
        "OnlineDeployment",
        "blue",
        online(&endpoints, true),
    )
    .await;
    create(
        &ns.api::<OnlineDeployment>(),
        "OnlineDeployment",
        "rooted",
        online(&endpoints, false),
    )
    .await;
    create(
        &ns.api::<BatchJob>(),
        "BatchJob",
        "score-ok",
        batch(&endpoints, "nonroot"),
    )
    .await;
    create(
        &ns.api::<BatchJob>(),
        "BatchJob",
        "score-root",
        batch(&endpoints, "root"),
    )
    .await;

    // Admitted, and KWOK runs them.
    let pods: Api<Pod> = ns.api();
    let train = pods_of(&ns, "mlcompute.io/trainingjob=train", 1).await;
    assert_hardened(&train[0], true);
    assert!(has_init_containers(&train[0]));
    let name = train[0].metadata.name.clone().unwrap();
    wait_for(&pods, &name, T, |p: Option<&Pod>| p.is_some_and(running)).await;
    let serving = pods_of(&ns, "mlcompute.io/onlinedeployment=blue", 1).await;
    assert_hardened(&serving[0], true);
    assert!(has_init_containers(&serving[0]));
    let ods: Api<OnlineDeployment> = ns.api();
    wait_for(&ods, "blue", T, |d: Option<&OnlineDeployment>| {
        d.and_then(|d| d.status.as_ref()?.ready_instances) == Some(1)
    })
    .await;
    let drivers = pods_of(&ns, "mlcompute.io/batchjob=score-ok", 1).await;
    let spec = drivers[0].spec.as_ref().unwrap();
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
    {
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true), "{}", c.name);
    }
    let jobs: Api<BatchJob> = ns.api();
    // Admitted and run: KWOK may finish the driver Pod before a Running status is seen.
    wait_for(&jobs, "score-ok", T, |j: Option<&BatchJob>| {
        matches!(
            j.and_then(|j| j.status.as_ref()?.reason.as_deref()),
            Some("Running" | "Completed")
        )
    })
    .await;

    // Refused: the parent says so with the admission message, and a Warning Event.
    let rooted = wait_for(&ods, "rooted", T, |d: Option<&OnlineDeployment>| {
        d.and_then(|d| d.status.as_ref()).is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.reason == "PodsRejected")
        })
    })
    .await;
    let ready = rooted
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "False");
    assert!(
        ready
            .message
            .contains("violates PodSecurity \"restricted:latest\""),
        "{}",
        ready.message
    );
    warning_event(&ns, "PodsRejected", "rooted", T).await;

    let refused = wait_for(&jobs, "score-root", T, |j: Option<&BatchJob>| {
        j.and_then(|j| j.status.as_ref()?.reason.as_deref()) == Some("PodsRejected")
    })
    .await;
    let message = refused.status.unwrap().message.unwrap_or_default();
    assert!(
        message.contains("violates PodSecurity \"restricted:latest\""),
        "{message}"
    );
    warning_event(&ns, "PodsRejected", "score-root", T).await;
    assert!(
        pods.list(&ListParams::default().labels("mlcompute.io/onlinedeployment=rooted"))
            .await
            .unwrap()
            .items
            .is_empty()
    );
}
