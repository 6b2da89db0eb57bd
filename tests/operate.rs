//! Operating the operator on the local plane: it works with nothing more than the chart's RBAC
//! (training, online and batch endpoint flows),
//! and with leader election only one of two processes writes, the other taking over when the
//! leader dies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    path::PathBuf,
    process::{Child, Command},
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    coordination::v1::Lease,
    core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service},
};
use kube::{
    Api, ResourceExt,
    api::{
        ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
    },
};
use mlcompute::api::{
    OnlineDeployment, OnlineEndpoint, batch_deployment::BatchDeployment,
    batch_endpoint::BatchEndpoint, batch_job::BatchJob, common::JobPhase,
    training_job::TrainingJob,
};
use serde_json::json;
use support::{TestNamespace, eventually, wait_for};

const T: Duration = Duration::from_secs(60);

/// An operator process with its own log file, killed (SIGKILL) when dropped.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn start(tag: &str, kubeconfig: &str, args: &[&str]) -> Self {
        let mut all = vec!["--metrics-addr", "127.0.0.1:0"];
        all.extend_from_slice(args);
        Self::spawn("operator", tag, kubeconfig, &all)
    }

    /// `mlcompute router --cluster` on 127.0.0.1:`port`, serving `ns`.
    fn router(tag: &str, kubeconfig: &str, ns: &str, port: u16) -> Self {
        let listen = format!("127.0.0.1:{port}");
        Self::spawn(
            "router",
            tag,
            kubeconfig,
            &[
                "--cluster",
                "--namespaces",
                ns,
                "--threads",
                "1",
                "--listen",
                &listen,
            ],
        )
    }

    fn spawn(command: &str, tag: &str, kubeconfig: &str, args: &[&str]) -> Self {
        let log = std::env::temp_dir().join(format!("mlcompute-{command}-{tag}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_mlcompute"))
            .args([command, "--kubeconfig", kubeconfig])
            .args(args)
            .env("RUST_LOG", "info,mlcompute=debug")
            .env_remove("POD_NAMESPACE")
            .env_remove("POD_NAME")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn job(name: &str, instances: i32) -> TrainingJob {
    serde_json::from_value(json!({
        "apiVersion": "mlcompute.io/v1alpha1", "kind": "TrainingJob",
        "metadata": { "name": name },
        "spec": { "command": "python train.py", "image": "python:3.12", "resources": { "instanceCount": instances } }
    }))
    .unwrap()
}

fn phase_is(p: JobPhase) -> impl Fn(Option<&TrainingJob>) -> bool {
    move |j| j.and_then(|j| j.status.as_ref()?.phase) == Some(p)
}

async fn job_pods(pods: &Api<Pod>, job: &str) -> Vec<Pod> {
    pods.list(&ListParams::default().labels(&format!("mlcompute.io/trainingjob={job}")))
        .await
        .unwrap()
        .items
}

async fn finish_all(pods: &Api<Pod>, job: &str, n: usize) {
    let running = eventually(&format!("{n} running pods of {job}"), T, || async {
        let list = job_pods(pods, job).await;
        let running: Vec<String> = list
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .map(|p| p.name_any())
            .collect();
        (running.len() == n).then_some(running)
    })
    .await;
    for name in running {
        let patch =
            json!({ "metadata": { "annotations": { "kwok.mlcompute.io/exit-code": "0" } } });
        pods.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }
}

/// A token of ServiceAccount `sa` in `ns` from the TokenRequest API (`kubectl create token`).
fn service_account_token(ns: &str, sa: &str) -> String {
    let kc = support::kubeconfig_path();
    support::run(
        &support::kubectl(),
        &[
            "--kubeconfig",
            &kc,
            "-n",
            ns,
            "create",
            "token",
            sa,
            "--duration",
            "1h",
        ],
        None,
    )
    .trim()
    .to_owned()
}

/// A kubeconfig for `sa` in `ns`: the admin kubeconfig's server and CA, a token from the
/// TokenRequest API.
fn service_account_kubeconfig(ns: &str, sa: &str) -> PathBuf {
    let kc = support::kubeconfig_path();
    let kubectl = support::kubectl();
    let token = service_account_token(ns, sa);
    let view = |path: &str| {
        support::run(
            &kubectl,
            &[
                "--kubeconfig",
                &kc,
                "config",
                "view",
                "--raw",
                "--minify",
                "-o",
                &format!("jsonpath={path}"),
            ],
            None,
        )
    };
    let server = view("{.clusters[0].cluster.server}");
    let mut ca = view("{.clusters[0].cluster.certificate-authority-data}");
    if ca.is_empty() {
        use std::io::Read;
        let file = view("{.clusters[0].cluster.certificate-authority}");
        let mut pem = Vec::new();
        std::fs::File::open(&file)
            .unwrap()
            .read_to_end(&mut pem)
            .unwrap();
        ca = base64(&pem);
    }
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: plane\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n\
         users:\n- name: {sa}\n  user:\n    token: {}\ncontexts:\n- name: sa\n  context: {{cluster: plane, user: {sa}, namespace: {ns}}}\ncurrent-context: sa\n",
        token.trim()
    );
    let path = std::env::temp_dir().join(format!("mlcompute-sa-{ns}-{sa}.kubeconfig"));
    std::fs::write(&path, config).unwrap();
    path
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The chart's ServiceAccount and RBAC, applied into the plane for one namespace; the
/// cluster-scoped objects are deleted when dropped.
struct ChartRbac {
    release: String,
    kubeconfig: PathBuf,
}

impl ChartRbac {
    /// The chart's ServiceAccount and RBAC alone, bound to `ns` only (watchNamespaces), including
    /// the leader-election Role; a kubeconfig with a token of its ServiceAccount.
    fn apply(ns: &str) -> Self {
        let release = format!("rbac{:06x}", rand::random::<u32>() & 0xffffff);
        let manifests = support::run(
            &support::helm(),
            &[
                "template",
                &release,
                "charts/mlcompute",
                "--namespace",
                ns,
                "--set",
                &format!("operator.watchNamespaces={{{ns}}}"),
                "--show-only",
                "templates/serviceaccounts.yaml",
                "--show-only",
                "templates/rbac.yaml",
            ],
            None,
        );
        let kc = support::kubeconfig_path();
        support::run(
            &support::kubectl(),
            &["--kubeconfig", &kc, "apply", "-f", "-"],
            Some(&manifests),
        );
        let kubeconfig = service_account_kubeconfig(ns, &format!("{release}-mlcompute-operator"));
        Self {
            release,
            kubeconfig,
        }
    }

    fn kubeconfig(&self) -> &str {
        self.kubeconfig.to_str().unwrap()
    }

    /// A kubeconfig with a token of the chart's router ServiceAccount.
    fn router_kubeconfig(&self, ns: &str) -> PathBuf {
        service_account_kubeconfig(ns, &format!("{}-mlcompute-router", self.release))
    }

    /// The operator under this token alone, watching `ns`, with leader election in `ns`.
    fn operator(&self, ns: &str, tag: &str, extra: &[&str]) -> Proc {
        let mut args = vec![
            "--namespaces",
            ns,
            "--leader-elect",
            "--lease-namespace",
            ns,
            "--lease-name",
            "mlcompute-rbac-test",
        ];
        args.extend_from_slice(extra);
        Proc::start(&format!("{tag}-{ns}"), self.kubeconfig(), &args)
    }
}

impl Drop for ChartRbac {
    fn drop(&mut self) {
        let kc = support::kubeconfig_path();
        let kubectl = support::kubectl();
        for kind in ["clusterrole", "clusterrolebinding"] {
            for suffix in ["operator", "operator-cluster", "router"] {
                let _ = Command::new(&kubectl)
                    .args([
                        "--kubeconfig",
                        &kc,
                        "delete",
                        kind,
                        &format!("{}-mlcompute-{suffix}", self.release),
                        "--ignore-not-found",
                    ])
                    .output();
            }
        }
    }
}

fn assert_not_forbidden(op: &Proc) {
    let log = op.log();
    assert!(
        !log.contains("forbidden") && !log.contains("Forbidden"),
        "forbidden calls in the operator log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn operator_runs_with_only_the_charts_rbac() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "mlc-rbac").await;
    let rbac = ChartRbac::apply(ns.name());
    // The ServiceAccount may not act outside its namespace.
    let denied = Command::new(support::kubectl())
        .args([
            "--kubeconfig",
            rbac.kubeconfig(),
            "-n",
            "default",
            "get",
            "pods",
        ])
        .output()
        .unwrap();
    assert!(
        !denied.status.success(),
        "the operator's token must not read pods in other namespaces"
    );

    let op = rbac.operator(ns.name(), "rbac", &[]);
    let jobs: Api<TrainingJob> = ns.api();
    let pods: Api<Pod> = ns.api();
    jobs.create(&PostParams::default(), &job("rbac", 2))
        .await
        .unwrap();
    finish_all(&pods, "rbac", 2).await;
    wait_for(&jobs, "rbac", T, phase_is(JobPhase::Completed)).await;
    assert_not_forbidden(&op);
    drop(op);
}

async fn create<K>(api: &Api<K>, obj: serde_json::Value) -> K
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
{
    let obj: K = serde_json::from_value(obj).unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap()
}

/// A scoring-script OnlineDeployment with an inline image (no Environment needed).
fn scoring_deployment(name: &str, endpoint: &str) -> serde_json::Value {
    json!({
        "apiVersion": "mlcompute.io/v1alpha1", "kind": "OnlineDeployment",
        "metadata": { "name": name },
        "spec": {
            "endpointName": endpoint,
            "image": "python:3.12-slim",
            "model": "https://models.example.com/fraud/model.pkl",
            "codeConfiguration": { "code": "configmap://fraud-code", "scoringScript": "score.py" },
            "instanceCount": 1,
        }
    })
}

/// Claims (models, data, results), BatchEndpoint `scorer` (default deployment `blue`, output
/// under pvc://results/batch) and BatchDeployment `blue` (2 instances, `settings`).
async fn batch_scorer(ns: &TestNamespace, settings: serde_json::Value) {
    let claims: Api<PersistentVolumeClaim> = ns.api();
    for name in ["models", "data", "results"] {
        create(
            &claims,
            json!({
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": { "name": name },
                "spec": { "accessModes": ["ReadWriteMany"], "resources": { "requests": { "storage": "1Gi" } } }
            }),
        )
        .await;
    }
    create(
        &ns.api::<BatchEndpoint>(),
        json!({
            "apiVersion": "mlcompute.io/v1alpha1", "kind": "BatchEndpoint",
            "metadata": { "name": "scorer" },
            "spec": { "defaults": { "deploymentName": "blue", "outputPath": "pvc://results/batch" } }
        }),
    )
    .await;
    create(
        &ns.api::<BatchDeployment>(),
        json!({
            "apiVersion": "mlcompute.io/v1alpha1", "kind": "BatchDeployment",
            "metadata": { "name": "blue" },
            "spec": { "endpointName": "scorer", "model": "pvc://models/m1", "image": "python:3.12-slim",
                      "resources": { "instanceCount": 2 },
                      "settings": settings,
                      "codeConfiguration": { "code": "configmap://score", "scoringScript": "score.py" } }
        }),
    )
    .await;
}

/// Issue 7: the endpoint flows under the chart's ServiceAccount token alone: an OnlineEndpoint
/// with blue/green traffic and a mirror (Deployments, Services, keys, routing ConfigMap,
/// HTTPRoute, applied traffic in status) and a BatchJob run to completion, with nothing forbidden.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn endpoints_work_with_only_the_charts_rbac() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "mlc-rbac-ep").await;
    let rbac = ChartRbac::apply(ns.name());
    let gateway = format!("{}/public", ns.name());
    let op = rbac.operator(ns.name(), "rbac-ep", &["--gateway", &gateway]);

    // Online: blue/green 90/10, a 20 % mirror on shadow (at 0 %).
    let eps: Api<OnlineEndpoint> = ns.api();
    let ods: Api<OnlineDeployment> = ns.api();
    create(
        &eps,
        json!({
            "apiVersion": "mlcompute.io/v1alpha1", "kind": "OnlineEndpoint",
            "metadata": { "name": "fraud" }, "spec": {}
        }),
    )
    .await;
    for d in ["blue", "green", "shadow"] {
        create(&ods, scoring_deployment(d, "fraud")).await;
    }
    for d in ["blue", "green", "shadow"] {
        wait_for(&ods, d, T, |od: Option<&OnlineDeployment>| {
            od.and_then(|o| o.status.as_ref())
                .and_then(|s| s.ready_instances)
                == Some(1)
        })
        .await;
    }
    eps.patch(
        "fraud",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": {
            "traffic": { "blue": 90, "green": 10, "shadow": 0 },
            "mirrorTraffic": { "shadow": 20 },
        } })),
    )
    .await
    .unwrap();
    let ep = wait_for(&eps, "fraud", T, |e: Option<&OnlineEndpoint>| {
        e.and_then(|e| e.status.as_ref()).is_some_and(|s| {
            s.traffic_applied.get("blue") == Some(&90)
                && s.traffic_applied.get("green") == Some(&10)
                && s.mirror_traffic_applied.get("shadow") == Some(&20)
        })
    })
    .await;
    eprintln!(
        "applied: {:?}",
        ep.status.as_ref().map(|s| &s.traffic_applied)
    );
    let deployments: Api<Deployment> = ns.api();
    let services: Api<Service> = ns.api();
    for d in ["blue", "green", "shadow"] {
        assert!(
            deployments.get_opt(d).await.unwrap().is_some(),
            "no Deployment {d}"
        );
        assert!(
            services.get_opt(d).await.unwrap().is_some(),
            "no Service {d}"
        );
    }
    let secrets: Api<Secret> = ns.api();
    assert!(
        secrets.get_opt("fraud-keys").await.unwrap().is_some(),
        "no keys Secret"
    );
    let cms: Api<ConfigMap> = ns.api();
    assert!(
        cms.get_opt("fraud-routing").await.unwrap().is_some(),
        "no routing ConfigMap"
    );
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    let routes: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns.name(), &ApiResource::from_gvk(&gvk));
    eventually("the HTTPRoute", T, || async {
        routes.get_opt("fraud").await.ok()?
    })
    .await;

    // Batch: claims, an endpoint, a deployment, a BatchJob; KWOK completes the Job's Pods.
    batch_scorer(&ns, json!({ "miniBatchSize": 4, "errorThreshold": 5 })).await;
    let bjs: Api<BatchJob> = ns.api();
    create(
        &bjs,
        json!({
            "apiVersion": "mlcompute.io/v1alpha1", "kind": "BatchJob",
            "metadata": { "name": "score1" },
            "spec": { "endpointName": "scorer", "input": { "path": "pvc://data/in" } }
        }),
    )
    .await;
    let done = wait_for(&bjs, "score1", T, |j: Option<&BatchJob>| {
        j.and_then(|j| j.status.as_ref()?.phase)
            .is_some_and(|p| matches!(p, JobPhase::Completed | JobPhase::Failed))
    })
    .await;
    assert_eq!(
        done.status.as_ref().and_then(|s| s.phase),
        Some(JobPhase::Completed),
        "{:?}\n{}",
        done.status,
        op.log()
    );
    assert_not_forbidden(&op);
    drop(op);
}

/// POSTs `body` to 127.0.0.1:`port` and returns the status and the response body.
async fn http_post(port: u16, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{auth}\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    (status, body)
}

/// Issue 6: `POST /api/v1/batch/{endpoint}/invoke` on a router running under the chart's router
/// ServiceAccount alone. Callers are Kubernetes identities (TokenReview) that must be allowed to
/// create BatchJobs in the endpoint's namespace (SubjectAccessReview); the job is created,
/// annotated with the caller, and the operator runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn batch_invoke_over_http_uses_kubernetes_identities() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "mlc-invoke").await;
    let rbac = ChartRbac::apply(ns.name());
    let op = rbac.operator(ns.name(), "invoke", &[]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let router_kc = rbac.router_kubeconfig(ns.name());
    let router = Proc::router(ns.name(), router_kc.to_str().unwrap(), ns.name(), port);

    // Two callers: one may create BatchJobs in the namespace, one may not.
    let grants = format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: caller, namespace: {ns}}}\n---\n\
         apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: stranger, namespace: {ns}}}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: invoker, namespace: {ns}}}\n\
         rules: [{{apiGroups: [mlcompute.io], resources: [batchjobs], verbs: [create]}}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: invoker, namespace: {ns}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: invoker}}\n\
         subjects: [{{kind: ServiceAccount, name: caller, namespace: {ns}}}]\n",
        ns = ns.name()
    );
    let kc = support::kubeconfig_path();
    support::run(
        &support::kubectl(),
        &["--kubeconfig", &kc, "apply", "-f", "-"],
        Some(&grants),
    );
    let caller = service_account_token(ns.name(), "caller");
    let stranger = service_account_token(ns.name(), "stranger");

    batch_scorer(&ns, json!({})).await;
    create(
        &ns.api::<BatchEndpoint>(),
        json!({
            "apiVersion": "mlcompute.io/v1alpha1", "kind": "BatchEndpoint",
            "metadata": { "name": "bare" }, "spec": {}
        }),
    )
    .await;

    let invoke = "/api/v1/batch/scorer/invoke";
    let body = r#"{"input":{"path":"pvc://data/in"},"overrides":{"miniBatchSize":7}}"#;
    // The router is up once it answers; a request without a token never reaches the cluster.
    let (status, text) = eventually("the router answers", T, || async {
        let (status, text) = tokio::time::timeout(Duration::from_secs(2), async {
            match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                Ok(_) => Some(http_post(port, invoke, None, body).await),
                Err(_) => None,
            }
        })
        .await
        .ok()??;
        Some((status, text))
    })
    .await;
    assert_eq!(status, 401, "{text}");
    assert!(!text.contains("scorer"), "a 401 names no endpoint: {text}");
    let (status, _) = http_post(port, invoke, Some("not-a-token"), body).await;
    assert_eq!(status, 401);

    // Authenticated but not allowed, and an endpoint that does not exist: the same 403.
    let (status, text) = http_post(port, invoke, Some(&stranger), body).await;
    assert_eq!(status, 403, "{text}");
    assert!(
        text.contains("system:serviceaccount:") && text.contains("stranger"),
        "{text}"
    );
    let (status, text) = http_post(port, "/api/v1/batch/nothing/invoke", Some(&caller), body).await;
    assert_eq!(status, 403, "{text}");

    // Allowed, with bad input: a reason, and nothing created.
    let (status, text) = http_post(port, invoke, Some(&caller), r#"{"inputs":{}}"#).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("input"), "{text}");
    let (status, text) = http_post(port, "/api/v1/batch/bare/invoke", Some(&caller), body).await;
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("no_default_deployment"), "{text}");
    let bad_override = r#"{"input":{"path":"pvc://data/in"},"overrides":{"miniBatchSize":0}}"#;
    let (status, text) = http_post(port, invoke, Some(&caller), bad_override).await;
    assert_eq!(
        status, 422,
        "the API server's validation reaches the caller: {text}"
    );
    let bjs: Api<BatchJob> = ns.api();
    assert!(
        bjs.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // Allowed: 201, a BatchJob on the default deployment, annotated with the caller, run to the end.
    let (status, text) = http_post(port, invoke, Some(&caller), body).await;
    assert_eq!(status, 201, "{text}\n{}", router.log());
    let created: serde_json::Value = serde_json::from_str(&text).unwrap();
    let name = created["name"].as_str().unwrap().to_owned();
    assert!(name.starts_with("scorer-"), "{created}");
    assert_eq!(created["namespace"], ns.name());
    let invoked_by = format!("system:serviceaccount:{}:caller", ns.name());
    assert_eq!(created["invokedBy"], invoked_by.as_str());
    let job = bjs.get(&name).await.unwrap();
    assert_eq!(
        job.annotations().get("mlcompute.io/invoked-by"),
        Some(&invoked_by)
    );
    assert_eq!(job.spec.input.path, "pvc://data/in");
    assert_eq!(
        job.spec.overrides.as_ref().and_then(|o| o.mini_batch_size),
        Some(7)
    );
    let done = wait_for(&bjs, &name, T, |j: Option<&BatchJob>| {
        j.and_then(|j| j.status.as_ref()?.phase)
            .is_some_and(|p| matches!(p, JobPhase::Completed | JobPhase::Failed))
    })
    .await;
    assert_eq!(
        done.status.as_ref().and_then(|s| s.phase),
        Some(JobPhase::Completed),
        "{:?}\n{}",
        done.status,
        op.log()
    );

    let metrics = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.unwrap();
        buf
    };
    for (result, n) in [
        ("created", 1),
        ("unauthorized", 2),
        ("forbidden", 2),
        ("bad_request", 1),
        ("no_default_deployment", 1),
        ("invalid", 1),
    ] {
        let line = format!("mlcompute_router_batch_invokes_total{{result=\"{result}\"}} {n}");
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }
    assert_not_forbidden(&op);
    // The router's own calls (reviews, lookups, the create) were all allowed by the chart's role.
    let log = router.log();
    assert!(!log.contains("is forbidden"), "{log}");
    drop((op, router));
}

async fn holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases
        .get_opt(name)
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn only_the_leader_writes_and_a_standby_takes_over_within_the_lease_duration() {
    const DURATION: u64 = 6;
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "mlc-leader").await;
    let kc = support::kubeconfig_path();
    let lease_flags = [
        "--namespaces",
        ns.name(),
        "--leader-elect",
        "--lease-namespace",
        ns.name(),
        "--lease-name",
        "mlcompute-operator",
        "--lease-duration-seconds",
        "6",
        "--lease-renew-deadline-seconds",
        "4",
        "--lease-retry-period-seconds",
        "1",
    ];
    let leases: Api<Lease> = ns.api();
    let mut a = Proc::start(&format!("{}-a", ns.name()), &kc, &lease_flags);
    let first = eventually("a leader", T, || async {
        holder(&leases, "mlcompute-operator").await
    })
    .await;
    eventually("a's controllers", T, || async {
        a.log()
            .contains("starting TrainingJob controller")
            .then_some(())
    })
    .await;
    let b = Proc::start(&format!("{}-b", ns.name()), &kc, &lease_flags);
    eventually("b campaigning", T, || async {
        b.log().contains("waiting to become leader").then_some(())
    })
    .await;

    // Only the leader acts.
    let jobs: Api<TrainingJob> = ns.api();
    let pods: Api<Pod> = ns.api();
    jobs.create(&PostParams::default(), &job("one", 2))
        .await
        .unwrap();
    wait_for(&jobs, "one", T, phase_is(JobPhase::Running)).await;
    assert!(
        !b.log().contains("starting TrainingJob controller"),
        "the standby started its controllers:\n{}",
        b.log()
    );

    // The leader dies; the standby takes over within the lease duration (plus its retry).
    a.kill();
    let killed = Instant::now();
    let second = eventually("a new leader", T, || async {
        holder(&leases, "mlcompute-operator")
            .await
            .filter(|h| *h != first)
    })
    .await;
    let took = killed.elapsed();
    eventually("b's controllers", T, || async {
        b.log()
            .contains("starting TrainingJob controller")
            .then_some(())
    })
    .await;
    let acting = killed.elapsed();
    eprintln!(
        "failover: lease taken by {second} {took:?} after SIGKILL, controllers running after {acting:?} (lease duration {DURATION}s)"
    );
    assert!(
        took <= Duration::from_secs(DURATION + 2),
        "the standby took {took:?} to take over a lease of {DURATION}s"
    );

    // The new leader finishes the running job without duplicating its Pods, and runs new jobs.
    finish_all(&pods, "one", 2).await;
    let done = wait_for(&jobs, "one", T, phase_is(JobPhase::Completed)).await;
    assert_eq!(done.status.unwrap().attempts, Some(1));
    assert_eq!(job_pods(&pods, "one").await.len(), 2, "no duplicate pods");
    jobs.create(&PostParams::default(), &job("two", 1))
        .await
        .unwrap();
    finish_all(&pods, "two", 1).await;
    wait_for(&jobs, "two", T, phase_is(JobPhase::Completed)).await;
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local control plane"]
async fn a_leader_shutting_down_releases_the_lease_at_once() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "mlc-release").await;
    let kc = support::kubeconfig_path();
    let flags = [
        "--namespaces",
        ns.name(),
        "--leader-elect",
        "--lease-namespace",
        ns.name(),
        "--lease-name",
        "l",
    ];
    let leases: Api<Lease> = ns.api();
    let a = Proc::start(&format!("{}-a", ns.name()), &kc, &flags);
    eventually("a leader", T, || async { holder(&leases, "l").await }).await;
    // SIGTERM: graceful shutdown gives the lease up, instead of letting it run out (15 s).
    let stopped = Instant::now();
    support::run("kill", &["-TERM", &a.child.id().to_string()], None);
    eventually("the lease released", Duration::from_secs(10), || async {
        holder(&leases, "l").await.is_none().then_some(())
    })
    .await;
    eprintln!("lease released {:?} after SIGTERM", stopped.elapsed());
    drop(a);
}
