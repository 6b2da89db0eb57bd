//! The batch controllers on the local plane: `mlcompute batch invoke` → BatchJob → Indexed Job and
//! driver Pods with the sharding environment; progress (annotations a real driver would write) and the
//! final phase in status; a missing default deployment; an instance exiting 3 (error threshold); a
//! batch endpoint name already held in another watched namespace is refused until its holder goes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use mlcompute::api::{
    batch_deployment::BatchDeployment, batch_endpoint::BatchEndpoint, batch_job::BatchJob,
    common::JobPhase,
};
use serde_json::json;
use support::{Operator, TestNamespace, eventually, wait_for, warning_event};

const T: Duration = Duration::from_secs(60);

async fn setup(ns: &TestNamespace, default: Option<&str>) {
    // The claims the deployment and jobs use (the default StorageClass binds them at once).
    let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> = ns.api();
    for name in ["models", "data", "results"] {
        let pvc = serde_json::from_value(json!({
            "metadata": { "name": name },
            "spec": { "accessModes": ["ReadWriteMany"], "resources": { "requests": { "storage": "1Gi" } } }
        }))
        .unwrap();
        claims.create(&PostParams::default(), &pvc).await.unwrap();
    }
    let endpoints: Api<BatchEndpoint> = ns.api();
    let e: BatchEndpoint = serde_json::from_value(json!({
        "apiVersion": "mlcompute.io/v1alpha1", "kind": "BatchEndpoint",
        "metadata": { "name": "scorer" },
        "spec": { "defaults": { "deploymentName": default, "outputPath": "pvc://results/batch" } }
    }))
    .unwrap();
    endpoints.create(&PostParams::default(), &e).await.unwrap();
    let deployments: Api<BatchDeployment> = ns.api();
    let d: BatchDeployment = serde_json::from_value(json!({
        "apiVersion": "mlcompute.io/v1alpha1", "kind": "BatchDeployment",
        "metadata": { "name": "blue" },
        "spec": { "endpointName": "scorer", "model": "pvc://models/m1", "image": "python:3.12-slim",
                  "resources": { "instanceCount": 3 },
                  "settings": { "miniBatchSize": 4, "errorThreshold": 5 },
                  "codeConfiguration": { "code": "configmap://score", "scoringScript": "score.py" } }
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
}

/// Runs `mlcompute batch invoke …` and returns (exit ok, stdout, stderr).
fn cli(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mlcompute"))
        .args(args)
        .args(["--kubeconfig", &support::kubeconfig_path()])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

fn env_of(pod: &Pod) -> BTreeMap<String, String> {
    pod.spec.as_ref().unwrap().containers[0]
        .env
        .iter()
        .flatten()
        .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
        .collect()
}

async fn driver_pods(ns: &TestNamespace, job: &str, n: usize) -> Vec<Pod> {
    let pods: Api<Pod> = ns.api();
    eventually(&format!("{n} driver pods of {job}"), T, || async {
        let list = pods
            .list(&ListParams::default().labels(&format!("mlcompute.io/batchjob={job}")))
            .await
            .ok()?;
        (list.items.len() >= n).then_some(list.items)
    })
    .await
}

fn phase(j: Option<&BatchJob>) -> Option<JobPhase> {
    j.and_then(|j| j.status.as_ref()?.phase)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn invoke_creates_an_indexed_job_and_progress_reaches_status() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "batch-invoke").await;
    let _op = Operator::start(ns.name());
    setup(&ns, Some("blue")).await;
    let endpoints: Api<BatchEndpoint> = ns.api();
    wait_for(&endpoints, "scorer", T, |e: Option<&BatchEndpoint>| {
        e.and_then(|e| e.status.as_ref()).is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    })
    .await;

    // Bad input is refused before anything is created, with one line saying why.
    let (ok, _, err) = cli(&[
        "batch",
        "invoke",
        "nosuch",
        "--input",
        "pvc://data/in",
        "-n",
        ns.name(),
    ]);
    assert!(!ok && err.contains("does not exist"), "{err}");
    let (ok, _, err) = cli(&[
        "batch",
        "invoke",
        "scorer",
        "--input",
        "pvc://data/in",
        "--set",
        "colour=blue",
        "-n",
        ns.name(),
    ]);
    assert!(!ok && err.contains("unknown --set key"), "{err}");

    let (ok, name, err) = cli(&[
        "batch",
        "invoke",
        "scorer",
        "--input",
        "pvc://data/in",
        "--set",
        "mini_batch_size=2",
        "-n",
        ns.name(),
    ]);
    assert!(ok, "{err}");
    assert!(name.starts_with("scorer-"), "{name}");
    let jobs: Api<BatchJob> = ns.api();

    let k8s_jobs: Api<Job> = ns.api();
    let job = eventually("the Indexed Job", T, || async {
        k8s_jobs.get_opt(&name).await.ok()?
    })
    .await;
    let spec = job.spec.clone().unwrap();
    assert_eq!(spec.completion_mode.as_deref(), Some("Indexed"));
    assert_eq!((spec.completions, spec.parallelism), (Some(3), Some(3)));
    assert_eq!(job.owner_references()[0].name, name);

    let pods = driver_pods(&ns, &name, 3).await;
    let mut indexes: Vec<String> = pods
        .iter()
        .map(|p| p.labels()["batch.kubernetes.io/job-completion-index"].clone())
        .collect();
    indexes.sort();
    assert_eq!(indexes, ["0", "1", "2"]);
    for p in &pods {
        let env = env_of(p);
        assert_eq!(env["MLCOMPUTE_BATCH_INSTANCE_COUNT"], "3");
        assert_eq!(
            env["MLCOMPUTE_BATCH_MINI_BATCH_SIZE"], "2",
            "the --set override wins"
        );
        assert_eq!(env["MLCOMPUTE_BATCH_ERROR_THRESHOLD"], "5");
        assert_eq!(
            env["MLCOMPUTE_BATCH_SCORING_SCRIPT"],
            "/var/azureml-app/score.py"
        );
        assert_eq!(env["MLCOMPUTE_PROGRESS_ANNOTATE"], "1");
        assert_eq!(
            p.spec.as_ref().unwrap().service_account_name.as_deref(),
            Some(format!("{name}-driver").as_str())
        );
    }

    // KWOK completes Job pods at once: the BatchJob completes.
    let done = wait_for(&jobs, &name, T, |j: Option<&BatchJob>| {
        phase(j) == Some(JobPhase::Completed)
    })
    .await;
    let s = done.status.unwrap();
    assert_eq!(s.deployment_name.as_deref(), Some("blue"));
    assert_eq!(
        s.output_location,
        Some(format!("pvc://results/batch/{name}"))
    );
    assert!(s.completion_time.is_some());

    // A job whose Pods run for a while (annotations on a BatchJob reach its Pods): progress that each
    // driver writes on its own Pod is summed into status while it runs.
    let slow: BatchJob = serde_json::from_value(json!({
        "apiVersion": "mlcompute.io/v1alpha1", "kind": "BatchJob",
        "metadata": { "name": "slow", "annotations": {
            "kwok.mlcompute.io/exit-code": "0", "kwok.mlcompute.io/exit-after": "20s" } },
        "spec": { "endpointName": "scorer", "input": { "path": "pvc://data/in" } }
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &slow).await.unwrap();
    let pods = driver_pods(&ns, "slow", 3).await;
    let pod_api: Api<Pod> = ns.api();
    for p in &pods {
        let i: u32 = p.labels()["batch.kubernetes.io/job-completion-index"]
            .parse()
            .unwrap();
        let progress = json!({
            "instance": i, "instanceCount": 3, "phase": "Running",
            "miniBatches": { "total": 10, "succeeded": 4 + i, "failed": 0 },
            "items": { "total": 40, "succeeded": 8 + 2 * i - 1, "failed": 1 },
            "updatedUnixMs": 1000 + u64::from(i)
        });
        pod_api
            .patch(
                &p.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": { "annotations": {
                    "mlcompute.io/progress": progress.to_string() } } })),
            )
            .await
            .unwrap();
    }
    let running = wait_for(&jobs, "slow", T, |j: Option<&BatchJob>| {
        let s = j.and_then(|j| j.status.as_ref());
        s.is_some_and(|s| s.mini_batches_succeeded == Some(15))
            && phase(j) == Some(JobPhase::Running)
    })
    .await;
    let s = running.status.unwrap();
    assert_eq!(s.mini_batches_total, Some(30));
    assert_eq!(s.items_failed, Some(3));
    let (ok, shown, err) = cli(&["batch", "show", "slow", "-n", ns.name()]);
    assert!(ok, "{err}");
    assert!(
        shown.contains("Running") && shown.contains("15 succeeded, 0 failed, 30 total"),
        "{shown}"
    );
    assert!(shown.contains("pvc://results/batch/slow"), "{shown}");
    let done = wait_for(&jobs, "slow", T, |j: Option<&BatchJob>| {
        phase(j) == Some(JobPhase::Completed)
    })
    .await;
    assert_eq!(
        done.status.unwrap().mini_batches_succeeded,
        Some(15),
        "counters stay at the end"
    );

    let (ok, shown, err) = cli(&["batch", "show", &name, "-n", ns.name()]);
    assert!(ok && shown.contains("Completed"), "{shown} {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn a_missing_default_deployment_is_a_condition_with_a_reason() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "batch-nodefault").await;
    let _op = Operator::start(ns.name());
    setup(&ns, None).await;
    let endpoints: Api<BatchEndpoint> = ns.api();
    let e = wait_for(&endpoints, "scorer", T, |e: Option<&BatchEndpoint>| {
        e.and_then(|e| e.status.as_ref())
            .is_some_and(|s| !s.conditions.is_empty())
    })
    .await;
    let ready = e
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "NoDefaultDeployment")
    );

    // The CLI refuses at once; a BatchJob applied directly fails with the same reason.
    let (ok, _, err) = cli(&[
        "batch",
        "invoke",
        "scorer",
        "--input",
        "pvc://data/in",
        "-n",
        ns.name(),
    ]);
    assert!(!ok && err.contains("no default deployment"), "{err}");
    let jobs: Api<BatchJob> = ns.api();
    let j: BatchJob = serde_json::from_value(json!({
        "apiVersion": "mlcompute.io/v1alpha1", "kind": "BatchJob",
        "metadata": { "name": "direct" },
        "spec": { "endpointName": "scorer", "input": { "path": "pvc://data/in" } }
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &j).await.unwrap();
    let j = wait_for(&jobs, "direct", T, |j: Option<&BatchJob>| {
        phase(j) == Some(JobPhase::Failed)
    })
    .await;
    let s = j.status.unwrap();
    assert_eq!(s.reason.as_deref(), Some("NoDefaultDeployment"));
    let resolved = s.conditions.iter().find(|c| c.type_ == "Resolved").unwrap();
    assert_eq!(resolved.reason, "NoDefaultDeployment");

    // Setting a default makes the endpoint ready.
    endpoints
        .patch(
            "scorer",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "defaults": { "deploymentName": "blue" } } })),
        )
        .await
        .unwrap();
    wait_for(&endpoints, "scorer", T, |e: Option<&BatchEndpoint>| {
        e.and_then(|e| e.status.as_ref()).is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn an_instance_exiting_3_fails_the_job_with_the_threshold_reason() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "batch-threshold").await;
    let _op = Operator::start(ns.name());
    setup(&ns, Some("blue")).await;
    // Annotations on a BatchJob reach its Pods: every instance "exits 3" after a moment, as a driver
    // does when the error threshold is crossed.
    let jobs: Api<BatchJob> = ns.api();
    let j: BatchJob = serde_json::from_value(json!({
        "apiVersion": "mlcompute.io/v1alpha1", "kind": "BatchJob",
        "metadata": { "name": "over", "annotations": {
            "kwok.mlcompute.io/exit-code": "3", "kwok.mlcompute.io/exit-after": "1s" } },
        "spec": { "endpointName": "scorer", "input": { "path": "pvc://data/in" },
                  "overrides": { "instanceCount": 2 } }
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &j).await.unwrap();
    let j = wait_for(&jobs, "over", T, |j: Option<&BatchJob>| {
        phase(j) == Some(JobPhase::Failed)
    })
    .await;
    let s = j.status.unwrap();
    assert_eq!(s.reason.as_deref(), Some("ErrorThresholdExceeded"), "{s:?}");
    assert!(
        s.conditions
            .iter()
            .any(|c| c.type_ == "Failed" && c.status == "True")
    );
    // FailJob: no retried Pods beyond the first of each index.
    let pods = driver_pods(&ns, "over", 2).await;
    assert!(pods.len() <= 2, "{} pods", pods.len());
}

/// Status, reason and message of a batch endpoint's `Ready` condition.
fn ready(e: &BatchEndpoint) -> Option<(String, String, String)> {
    e.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn name_taken(e: Option<&BatchEndpoint>) -> bool {
    e.and_then(ready).is_some_and(|(_, r, _)| r == "NameTaken")
}

/// Waits until `name` in `api`'s namespace has an invoke URI and its `Ready` reason is not
/// `NameTaken`.
async fn served(api: &Api<BatchEndpoint>, name: &str) -> BatchEndpoint {
    wait_for(api, name, T, |e: Option<&BatchEndpoint>| {
        e.and_then(|e| e.status.as_ref())
            .is_some_and(|s| s.invoke_uri.is_some())
            && e.and_then(ready).is_some()
            && !name_taken(e)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn a_batch_endpoint_name_taken_in_another_namespace_is_refused_until_the_holder_is_deleted() {
    let client = support::client().await;
    // The older endpoint lives in the namespace that sorts last: creation time decides, not
    // namespace order (the router's old choice).
    let first = TestNamespace::new(&client, "batch-names-b").await;
    let second = TestNamespace::new(&client, "batch-names-a").await;
    // Two watched namespaces: one BatchEndpoint controller each, sharing the names.
    let _op = Operator::start(&format!("{},{}", first.name(), second.name()));
    let name = format!("scorer-{:08x}", rand::random::<u32>());
    let endpoint = |name: &str| -> BatchEndpoint {
        serde_json::from_value(json!({
            "apiVersion": "mlcompute.io/v1alpha1", "kind": "BatchEndpoint",
            "metadata": { "name": name },
            "spec": { "defaults": { "outputPath": "pvc://results/batch" } }
        }))
        .unwrap()
    };
    let (eps1, eps2): (Api<BatchEndpoint>, Api<BatchEndpoint>) = (first.api(), second.api());
    eps1.create(&PostParams::default(), &endpoint(&name))
        .await
        .unwrap();
    served(&eps1, &name).await;
    // creationTimestamp has whole seconds: make the second endpoint strictly younger.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    eps2.create(&PostParams::default(), &endpoint(&name))
        .await
        .unwrap();

    // The younger one is told who holds the name, and shows no invoke URI.
    let refused = wait_for(&eps2, &name, T, |e: Option<&BatchEndpoint>| name_taken(e)).await;
    let (status, _, message) = ready(&refused).unwrap();
    assert_eq!(status, "False");
    assert!(
        message.contains(&format!("namespace {}", first.name())) && message.contains(&name),
        "{message}"
    );
    let st = refused.status.as_ref().unwrap();
    assert_eq!(st.invoke_uri, None);
    assert_eq!(
        st.provisioning_state,
        Some(mlcompute::api::online_endpoint::ProvisioningState::Failed)
    );
    // The holder is unaffected.
    let holder = served(&eps1, &name).await;
    assert!(!name_taken(Some(&holder)));
    // Told with a Warning Event too.
    warning_event(&second, "NameTaken", &name, T).await;

    // The holder goes: the second endpoint takes the name over (it looks again every 15 s).
    eps1.delete(&name, &Default::default()).await.unwrap();
    let took = served(&eps2, &name).await;
    let uri = took.status.as_ref().unwrap().invoke_uri.clone().unwrap();
    assert!(
        uri.ends_with(&format!("/api/v1/batch/{name}/invoke")),
        "{uri}"
    );
    let (_, reason, _) = ready(&took).unwrap();
    assert_eq!(reason, "NoDefaultDeployment");
}
