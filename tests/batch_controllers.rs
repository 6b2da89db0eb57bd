//! The batch controllers on the local plane: `mlcompute batch invoke` → BatchJob → Indexed Job and
//! driver Pods with the sharding environment; progress (entries of the job's progress ConfigMap, as
//! the relay sidecars write them) and the final phase in status; a missing default deployment; an
//! instance exiting 3 (error threshold); a batch endpoint name already held in another watched
//! namespace is refused until its holder goes. Batch Pod credentials: SubjectAccessReviews for the
//! driver identity, and the relay run as that identity.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::{
    authorization::v1::SubjectAccessReview,
    batch::v1::Job,
    core::v1::{ConfigMap, Pod},
};
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

/// The Pod as the API server stored it: no token volume anywhere but in the relay sidecar, and no
/// automounted one.
fn assert_only_the_relay_holds_a_token(pod: &Pod) {
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.automount_service_account_token, Some(false));
    let token_volumes: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| {
            v.secret.is_some()
                || v.projected.as_ref().is_some_and(|p| {
                    p.sources
                        .iter()
                        .flatten()
                        .any(|s| s.service_account_token.is_some())
                })
        })
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(token_volumes, ["progress-token"]);
    let holders: Vec<&str> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .filter(|c| {
            c.volume_mounts.iter().flatten().any(|m| {
                token_volumes.contains(&m.name.as_str())
                    || m.mount_path.starts_with("/var/run/secrets")
            })
        })
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(holders, ["progress-relay"], "{}", pod.name_any());
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
        assert_eq!(
            env["MLCOMPUTE_PROGRESS_FILE"],
            "/var/run/mlcompute/progress/progress.json"
        );
        assert_eq!(
            p.spec.as_ref().unwrap().service_account_name.as_deref(),
            Some(format!("{name}-driver").as_str())
        );
        assert_only_the_relay_holds_a_token(p);
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
    let progress: Api<ConfigMap> = ns.api();
    let cm = progress.get("slow-progress").await.unwrap();
    assert_eq!(cm.owner_references()[0].name, "slow");
    for p in &pods {
        let i: u32 = p.labels()["batch.kubernetes.io/job-completion-index"]
            .parse()
            .unwrap();
        let entry = json!({
            "instance": i, "instanceCount": 3, "phase": "Running",
            "miniBatches": { "total": 10, "succeeded": 4 + i, "failed": 0 },
            "items": { "total": 40, "succeeded": 8 + 2 * i - 1, "failed": 1 },
            "updatedUnixMs": 1000 + u64::from(i)
        });
        progress
            .patch(
                "slow-progress",
                &PatchParams::default(),
                &Patch::Merge(json!({ "data": { i.to_string(): entry.to_string() } })),
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
    // The endpoint itself is done (Azure ML provisions it Succeeded; kstatus Current): jobs must
    // name a deployment, and the reason says so.
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "NoDefaultDeployment")
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

    // Setting a default makes jobs without a deployment run on it.
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
            s.conditions.iter().any(|c| {
                c.type_ == "Ready" && c.status == "True" && c.reason == "DefaultDeploymentReady"
            })
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

/// `group`, `resource`, `subresource` of a SubjectAccessReview.
type Resource<'a> = (&'a str, &'a str, &'a str);

/// Whether the API server's authorizer allows `user` (a ServiceAccount of `ns`) `verb` on
/// `group/resource[/subresource]` (named `name`) in `ns`: a SubjectAccessReview, as the admin.
async fn may(
    client: &kube::Client,
    ns: &str,
    account: &str,
    verb: &str,
    (group, resource, subresource): Resource<'_>,
    name: Option<&str>,
) -> bool {
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "spec": {
            "user": format!("system:serviceaccount:{ns}:{account}"),
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}"), "system:authenticated"],
            "resourceAttributes": { "namespace": ns, "verb": verb, "group": group,
                                    "resource": resource, "subresource": subresource, "name": name }
        }
    }))
    .unwrap();
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = api.create(&PostParams::default(), &review).await.unwrap();
    answer.status.unwrap().allowed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn a_batch_pod_identity_may_patch_its_own_progress_and_nothing_else() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "batch-rbac").await;
    let _op = Operator::start(ns.name());
    setup(&ns, Some("blue")).await;
    let jobs: Api<BatchJob> = ns.api();
    for (name, exit_after) in [("a", "60s"), ("b", "0s")] {
        let j: BatchJob = serde_json::from_value(json!({
            "apiVersion": "mlcompute.io/v1alpha1", "kind": "BatchJob",
            "metadata": { "name": name, "annotations": {
                "kwok.mlcompute.io/exit-code": "0", "kwok.mlcompute.io/exit-after": exit_after } },
            "spec": { "endpointName": "scorer", "input": { "path": "pvc://data/in" },
                      "overrides": { "instanceCount": 2 } }
        }))
        .unwrap();
        jobs.create(&PostParams::default(), &j).await.unwrap();
    }
    let pods = driver_pods(&ns, "a", 2).await;
    for p in &pods {
        assert_only_the_relay_holds_a_token(p);
    }
    driver_pods(&ns, "b", 2).await;
    let n = ns.name();
    // A user's ConfigMap and Secret in the same namespace.
    let cms: Api<ConfigMap> = ns.api();
    let mine: ConfigMap =
        serde_json::from_value(json!({ "metadata": { "name": "app-settings" } })).unwrap();
    cms.create(&PostParams::default(), &mine).await.unwrap();

    let core = |r: &'static str| ("", r, "");
    let allowed = [
        ("get", core("configmaps"), Some("a-progress")),
        ("patch", core("configmaps"), Some("a-progress")),
    ];
    for (verb, res, name) in allowed {
        assert!(
            may(&client, n, "a-driver", verb, res, name).await,
            "{verb} {res:?} {name:?}"
        );
    }
    let pod_name = pods[0].name_any();
    let mut denied: Vec<(&str, Resource<'_>, Option<&str>)> = vec![
        // Its own progress object: nothing but get and patch.
        ("update", core("configmaps"), Some("a-progress")),
        ("delete", core("configmaps"), Some("a-progress")),
        ("list", core("configmaps"), None),
        ("watch", core("configmaps"), None),
        ("create", core("configmaps"), None),
        // Other ConfigMaps: another job's progress, the user's own.
        ("get", core("configmaps"), Some("b-progress")),
        ("patch", core("configmaps"), Some("b-progress")),
        ("patch", core("configmaps"), Some("app-settings")),
        ("delete", core("configmaps"), Some("app-settings")),
        // Secrets.
        ("get", core("secrets"), None),
        ("list", core("secrets"), None),
        ("watch", core("secrets"), None),
        ("create", core("secrets"), None),
        ("get", core("serviceaccounts"), None),
        ("create", ("", "serviceaccounts", "token"), Some("a-driver")),
        ("create", ("", "serviceaccounts", "token"), Some("default")),
        // Workloads and the job itself.
        ("create", ("apps", "deployments", ""), None),
        ("patch", ("apps", "deployments", ""), None),
        ("update", ("apps", "deployments", ""), None),
        ("delete", ("apps", "deployments", ""), None),
        ("create", ("batch", "jobs", ""), None),
        ("patch", ("batch", "jobs", ""), Some("a")),
        ("update", ("batch", "jobs", ""), Some("a")),
        ("delete", ("batch", "jobs", ""), Some("a")),
        ("get", ("mlcompute.io", "batchjobs", ""), Some("a")),
        ("patch", ("mlcompute.io", "batchjobs", ""), Some("a")),
        ("update", ("mlcompute.io", "batchjobs", ""), Some("a")),
        ("delete", ("mlcompute.io", "batchjobs", ""), Some("a")),
        ("create", ("mlcompute.io", "batchjobs", ""), None),
        ("patch", ("mlcompute.io", "batchjobs", "status"), Some("a")),
        // Its own RBAC.
        (
            "patch",
            ("rbac.authorization.k8s.io", "roles", ""),
            Some("a-driver"),
        ),
        (
            "create",
            ("rbac.authorization.k8s.io", "rolebindings", ""),
            None,
        ),
    ];
    for verb in ["get", "list", "create", "patch", "update", "delete"] {
        denied.push((verb, core("pods"), None));
    }
    for verb in ["get", "patch", "update", "delete"] {
        denied.push((verb, core("pods"), Some(pod_name.as_str())));
    }
    denied.push(("create", ("", "pods", "exec"), Some(pod_name.as_str())));
    for (verb, (group, resource, sub), name) in denied {
        assert!(
            !may(&client, n, "a-driver", verb, (group, resource, sub), name).await,
            "a-driver may {verb} {group}/{resource}/{sub} {name:?}"
        );
    }
    // The other job's identity has the mirror image.
    assert!(
        may(
            &client,
            n,
            "b-driver",
            "patch",
            core("configmaps"),
            Some("b-progress")
        )
        .await
    );
    assert!(
        !may(
            &client,
            n,
            "b-driver",
            "patch",
            core("configmaps"),
            Some("a-progress")
        )
        .await
    );

    // The relay, run as that identity (a bound token, as the projected volume holds): what the
    // driver writes reaches the job's status, the final snapshot lands on SIGTERM, and the token
    // is refused everywhere else.
    let kubeconfig = support::kubeconfig_as(&client, n, "a-driver").await;
    let sa = support::client_from(&kubeconfig).await;
    let forbidden =
        |r: Result<_, kube::Error>| matches!(r, Err(kube::Error::Api(s)) if s.code == 403);
    let sa_pods: Api<Pod> = Api::namespaced(sa.clone(), n);
    let image = json!({ "spec": { "containers": [{ "name": "driver", "image": "evil" }] } });
    assert!(forbidden(
        sa_pods
            .patch(&pod_name, &PatchParams::default(), &Patch::Merge(&image))
            .await
            .map(|_| ())
    ));
    let sa_cms: Api<ConfigMap> = Api::namespaced(sa.clone(), n);
    assert!(forbidden(sa_cms.get("b-progress").await.map(|_| ())));
    assert!(forbidden(
        sa_cms.list(&ListParams::default()).await.map(|_| ())
    ));
    assert!(sa_cms.get("a-progress").await.is_ok());

    let dir = std::env::temp_dir().join(format!("mlc-relay-{n}"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("progress.json");
    let snapshot = |done: u32| {
        json!({
            "instance": 1, "instanceCount": 2, "phase": "Running",
            "miniBatches": { "total": 8, "succeeded": done, "failed": 0 },
            "items": { "total": 32, "succeeded": done * 4, "failed": 0 },
            "updatedUnixMs": 5000 + u64::from(done)
        })
        .to_string()
    };
    std::fs::write(&file, snapshot(3)).unwrap();
    let mut relay = std::process::Command::new(env!("CARGO_BIN_EXE_mlcompute"))
        .args(["batch-progress-relay", "--interval", "1h"])
        .env("KUBECONFIG", &kubeconfig)
        .env("MLCOMPUTE_PROGRESS_FILE", &file)
        .env("MLCOMPUTE_PROGRESS_CONFIGMAP", "a-progress")
        .env("POD_NAMESPACE", n)
        .env("JOB_COMPLETION_INDEX", "1")
        .spawn()
        .unwrap();
    // The first write is at once; the next would be an hour later.
    wait_for(&jobs, "a", T, |j: Option<&BatchJob>| {
        j.and_then(|j| j.status.as_ref())
            .is_some_and(|s| s.mini_batches_succeeded == Some(3))
    })
    .await;
    std::fs::write(&file, snapshot(8)).unwrap();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &relay.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let exit = relay.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    let s = wait_for(&jobs, "a", T, |j: Option<&BatchJob>| {
        j.and_then(|j| j.status.as_ref())
            .is_some_and(|s| s.mini_batches_succeeded == Some(8))
    })
    .await
    .status
    .unwrap();
    assert_eq!(s.mini_batches_total, Some(8), "only instance 1 reported");
    let cm = cms.get("a-progress").await.unwrap();
    assert_eq!(cm.data.unwrap().keys().collect::<Vec<_>>(), ["1"]);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_file(&kubeconfig).unwrap();
}

/// An older operator gave each batch driver a Role with `pods get,patch` on the whole namespace.
/// After an upgrade, the first reconcile of the job narrows it to the job's progress ConfigMap, so
/// tokens still held by that job's Pods lose the grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn a_driver_role_left_by_an_older_operator_is_narrowed() {
    use k8s_openapi::api::rbac::v1::Role;
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "batch-old-role").await;
    let jobs: Api<BatchJob> = ns.api();
    // A job whose endpoint does not exist: it stays queued, and only the Role matters here.
    let bj: BatchJob = serde_json::from_value(json!({
        "apiVersion": "mlcompute.io/v1alpha1", "kind": "BatchJob",
        "metadata": { "name": "legacy" },
        "spec": { "endpointName": "gone", "input": { "path": "pvc://data/in" } }
    }))
    .unwrap();
    let bj = jobs.create(&PostParams::default(), &bj).await.unwrap();
    let roles: Api<Role> = ns.api();
    let old: Role = serde_json::from_value(json!({
        "metadata": { "name": "legacy-driver",
            "labels": { "app.kubernetes.io/managed-by": "mlcompute", "app.kubernetes.io/name": "batchjob",
                        "app.kubernetes.io/component": "batch-driver", "mlcompute.io/batchjob": "legacy" },
            "ownerReferences": [{ "apiVersion": "mlcompute.io/v1alpha1", "kind": "BatchJob", "name": "legacy",
                                  "uid": bj.metadata.uid.clone().unwrap(), "controller": true }] },
        "rules": [{ "apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"] }]
    }))
    .unwrap();
    roles.create(&PostParams::default(), &old).await.unwrap();
    // A user's Role of a similar shape, not controlled by the job, is left alone.
    let mine: Role = serde_json::from_value(json!({
        "metadata": { "name": "mine" },
        "rules": [{ "apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"] }]
    }))
    .unwrap();
    roles.create(&PostParams::default(), &mine).await.unwrap();

    let _op = Operator::start(ns.name());
    let narrowed = wait_for(&roles, "legacy-driver", T, |r: Option<&Role>| {
        r.and_then(|r| r.rules.as_ref()).is_some_and(|rules| {
            rules
                .iter()
                .all(|p| p.resources.as_deref() != Some(&["pods".to_string()][..]))
        })
    })
    .await;
    let rules = narrowed.rules.unwrap();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["configmaps".to_string()][..])
    );
    assert_eq!(
        rules[0].resource_names.as_deref(),
        Some(&["legacy-progress".to_string()][..])
    );
    assert_eq!(rules[0].verbs, vec!["get", "patch"]);
    let untouched = roles.get("mine").await.unwrap();
    assert_eq!(
        untouched.rules.unwrap()[0].resources.as_deref(),
        Some(&["pods".to_string()][..])
    );
}

/// An operator restart mid-batch: the new process, starting with empty caches, must not act on
/// them half-filled. No status regresses (a Running job is not rewritten to Queued, an endpoint
/// does not lose its default deployment), no spurious Warning Event, no re-planned Job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn an_operator_restart_mid_batch_rewrites_nothing() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "batch-restart").await;
    let mut op = Operator::start(ns.name());
    setup(&ns, Some("blue")).await;
    let jobs: Api<BatchJob> = ns.api();
    let j: BatchJob = serde_json::from_value(json!({
        "apiVersion": "mlcompute.io/v1alpha1", "kind": "BatchJob",
        // On KWOK, Job Pods complete at once unless told when: these run for ten minutes.
        "metadata": { "name": "long", "annotations": {
            "kwok.mlcompute.io/exit-code": "0", "kwok.mlcompute.io/exit-after": "10m" } },
        "spec": { "endpointName": "scorer", "input": { "path": "pvc://data/in" },
                  "overrides": { "instanceCount": 2 } }
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &j).await.unwrap();
    wait_for(&jobs, "long", T, |j: Option<&BatchJob>| {
        phase(j) == Some(JobPhase::Running)
    })
    .await;
    driver_pods(&ns, "long", 2).await;
    let endpoints: Api<BatchEndpoint> = ns.api();
    let deployments: Api<BatchDeployment> = ns.api();
    let k8s_jobs: Api<Job> = ns.api();
    let cms: Api<ConfigMap> = ns.api();
    let progress = "long-progress";
    // Everything the batch controllers write, by resourceVersion (any write moves it); the Job's
    // status is the Job controller's, so of the Job: its generation and what we manage of it.
    let versions = || async {
        let v = |m: kube::api::ObjectMeta| m.resource_version.unwrap_or_default();
        let job = k8s_jobs.get("long").await.unwrap().metadata;
        let ours: Vec<_> = job
            .managed_fields
            .unwrap_or_default()
            .into_iter()
            .filter(|f| f.manager.as_deref() == Some("mlcompute"))
            .map(|f| format!("{:?} {:?}", f.operation, f.time))
            .collect();
        (
            v(endpoints.get("scorer").await.unwrap().metadata),
            v(deployments.get("blue").await.unwrap().metadata),
            v(jobs.get("long").await.unwrap().metadata),
            (job.generation, format!("{ours:?}")),
            v(cms.get(progress).await.unwrap().metadata),
        )
    };
    // Settled first: the old process has nothing left to write once the instances run.
    let settled = |j: Option<&BatchJob>| {
        j.and_then(|j| j.status.as_ref())
            .is_some_and(|s| s.phase == Some(JobPhase::Running))
    };
    wait_for(&jobs, "long", T, settled).await;
    let status_before = jobs.get("long").await.unwrap().status;
    let before = versions().await;
    let job_uid = k8s_jobs.get("long").await.unwrap().uid();
    let warnings = || async {
        let events: Api<k8s_openapi::api::core::v1::Event> = ns.api();
        events
            .list(&ListParams::default().fields("type=Warning"))
            .await
            .unwrap()
            .items
            .len()
    };
    let warned = warnings().await;

    op.kill();
    let op = Operator::start(ns.name());
    // Each object has been reconciled by the new process, its writes (if any) done.
    for controller in ["batchendpoint", "batchdeployment", "batchjob"] {
        op.reconciled(controller, 1).await;
    }
    assert_eq!(
        versions().await,
        before,
        "a restarted operator rewrote a batch object; BatchJob status before: {status_before:#?}\nafter: {:#?}",
        jobs.get("long").await.unwrap().status
    );
    assert_eq!(
        k8s_jobs.get("long").await.unwrap().uid(),
        job_uid,
        "the Job was re-planned"
    );
    assert_eq!(
        phase(jobs.get_opt("long").await.unwrap().as_ref()),
        Some(JobPhase::Running)
    );
    assert_eq!(warnings().await, warned, "a restart told a Warning Event");
}
