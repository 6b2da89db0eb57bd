//! The real-node tier: what only a kubelet decides, checked on a real node (e2e/node/up) with
//! mlcompute installed by `helm install` (e2e/node/install-mlcompute). Processes really run from the
//! images built by e2e/images/build: exit codes and logs, a PyTorch rendezvous, the MPI launcher,
//! probes of the scoring server, router -> Pod traffic through EndpointSlices, the batch driver's
//! init container and Job, PodSecurity admission, an image that cannot be pulled.
//!
//! Run inside the node's network namespace, where the plane and the Pods are:
//!   e2e/node/exec cargo test --test real_node -- --include-ignored
//! (e2e/run-tests does this). Elsewhere these tests fail, saying so: they never pass by skipping.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{io::Write, path::PathBuf, process::Command, time::Duration};

use k8s_openapi::api::{core::v1::Pod, discovery::v1::EndpointSlice};
use kube::{Api, Client, api::ListParams};
use mlcompute::api::{
    batch_job::BatchJob, online_deployment::OnlineDeployment, online_endpoint::OnlineEndpoint,
    training_job::TrainingJob,
};
use support::{TestNamespace, client, eventually, kubeconfig_path, kubectl, wait_for};

/// Image pulls, Python start-up and PyTorch imports on a shared 2-core machine.
const SLOW: Duration = Duration::from_secs(300);

/// The real node's environment, as e2e/node/exec exports it.
struct Node {
    volumes: PathBuf,
}

impl Node {
    fn require() -> Self {
        let run = std::env::var("MLC_NODE_RUN").unwrap_or_default();
        assert!(
            !run.is_empty() && std::env::var("MLC_IMAGE_PYTHON_ML").is_ok(),
            "no real node here (MLC_NODE_RUN / MLC_IMAGE_* unset): run e2e/node/up, then \
             e2e/node/exec cargo test --test real_node -- --include-ignored"
        );
        Node {
            volumes: PathBuf::from(run).join("volumes"),
        }
    }

    /// The instance type, environments and volumes of e2e/demo-data/real-node/setup.yaml in `ns`.
    async fn setup(&self, client: &Client, prefix: &str) -> TestNamespace {
        let ns = TestNamespace::new(client, prefix).await;
        for v in ["models", "datasets", "results"] {
            let dir = self.dir(&ns, v);
            std::fs::create_dir_all(&dir).unwrap();
            // Pods may run as any user (PodSecurity restricted: non-root).
            Command::new("chmod")
                .arg("0777")
                .arg(&dir)
                .status()
                .unwrap();
        }
        self.apply(&ns, &self.render(&ns, "setup.yaml"));
        ns
    }

    fn dir(&self, ns: &TestNamespace, volume: &str) -> PathBuf {
        self.volumes.join(ns.name()).join(volume)
    }

    /// A file of e2e/demo-data/real-node with images, namespace and volume directory filled in.
    fn render(&self, ns: &TestNamespace, file: &str) -> String {
        let out = Command::new("e2e/demo-data/real-node/render")
            .arg(ns.name())
            .arg(self.volumes.join(ns.name()))
            .arg(format!("e2e/demo-data/real-node/{file}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "render {file}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    /// Applies YAML (from `render`, or literal) in `ns`. One at a time: every test's setup holds the
    /// same cluster-scoped InstanceType, and two client-side applies creating it at once make one
    /// fail with AlreadyExists.
    fn apply(&self, ns: &TestNamespace, yaml: &str) {
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _turn = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut child = Command::new(kubectl())
            .args([
                "--kubeconfig",
                &kubeconfig_path(),
                "apply",
                "-n",
                ns.name(),
                "-f",
                "-",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(yaml.as_bytes())
            .unwrap();
        assert!(
            child.wait().unwrap().success(),
            "kubectl apply failed:\n{yaml}"
        );
    }
}

fn phase_is(phase: &'static str) -> impl Fn(Option<&TrainingJob>) -> bool + Send + Clone + 'static {
    move |j: Option<&TrainingJob>| {
        j.and_then(|j| j.status.as_ref()?.phase.as_ref())
            .map(|p| format!("{p:?}") == phase)
            .unwrap_or(false)
    }
}

/// Every log line of the Pods of TrainingJob `job`.
async fn job_logs(ns: &TestNamespace, job: &str) -> String {
    let pods: Api<Pod> = ns.api();
    let mut all = String::new();
    for p in pods
        .list(&ListParams::default().labels(&format!("mlcompute.io/trainingjob={job}")))
        .await
        .unwrap()
    {
        let name = p.metadata.name.unwrap();
        let logs = pods
            .logs(&name, &kube::api::LogParams::default())
            .await
            .unwrap_or_default();
        all.push_str(&format!("--- {name}\n{logs}"));
    }
    all
}

#[tokio::test]
#[ignore = "needs a real node: e2e/run-tests runs this inside e2e/node/exec"]
async fn a_real_exit_code_and_its_logs_reach_the_job() {
    let node = Node::require();
    let client = client().await;
    let ns = node.setup(&client, "rn-exit").await;
    node.apply(
        &ns,
        r#"
apiVersion: mlcompute.io/v1alpha1
kind: TrainingJob
metadata: {name: exits-3}
spec:
  command: python3 -c "import sys; print('hello from a real container', flush=True); sys.exit(3)"
  environment: sklearn:1
  resources: {instanceType: real-cpu}
  retryPolicy: {maxRetries: 0}
"#,
    );
    let jobs: Api<TrainingJob> = ns.api();
    let job = wait_for(&jobs, "exits-3", SLOW, phase_is("Failed")).await;
    let st = job.status.unwrap();
    assert_eq!(st.instances[0].exit_code, Some(3), "{st:#?}");
    assert!(
        st.message.as_deref().unwrap_or_default().contains('3'),
        "the message names the exit code: {st:#?}"
    );
    let logs = job_logs(&ns, "exits-3").await;
    assert!(logs.contains("hello from a real container"), "{logs}");
    // The CLI streams the same logs and, like `az ml job stream`, fails for a failed job.
    let out = Command::new(env!("CARGO_BIN_EXE_mlcompute"))
        .args(["logs", "trainingjob/exits-3", "-n", ns.name()])
        .args(["--kubeconfig", &kubeconfig_path()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("hello from a real container"), "{out:?}");
    assert!(!out.status.success(), "{out:?}");
}

#[tokio::test]
#[ignore = "needs a real node: e2e/run-tests runs this inside e2e/node/exec"]
async fn scikit_learn_trains_in_a_pod_and_writes_the_model_to_a_volume() {
    let node = Node::require();
    let client = client().await;
    let ns = node.setup(&client, "rn-train").await;
    node.apply(&ns, &node.render(&ns, "training.yaml"));
    let jobs: Api<TrainingJob> = ns.api();
    wait_for(&jobs, "iris-train", SLOW, phase_is("Completed")).await;
    let model = node.dir(&ns, "models").join("iris");
    assert!(
        model.join("model.pkl").is_file(),
        "no model.pkl in {model:?}"
    );
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("model.json")).unwrap()).unwrap();
    assert!(meta["accuracy"].as_f64().unwrap() > 0.8, "{meta}");
    assert!(job_logs(&ns, "iris-train").await.contains("test accuracy"));

    // The gang of the same file: instance 1 really exits 3 once; the whole gang restarts.
    let job = wait_for(&jobs, "flaky-gang", SLOW, phase_is("Completed")).await;
    assert_eq!(job.status.unwrap().attempts, Some(2));
}

#[tokio::test]
#[ignore = "needs a real node: e2e/run-tests runs this inside e2e/node/exec"]
async fn pytorch_ranks_rendezvous_through_the_headless_service_and_all_reduce() {
    let node = Node::require();
    let client = client().await;
    let ns = node.setup(&client, "rn-ddp").await;
    let training = node.render(&ns, "training.yaml");
    // Only the DDP job (and its code) of the file.
    let ddp: Vec<&str> = training
        .split("\n---")
        .filter(|d| d.contains("name: ddp"))
        .collect();
    assert_eq!(ddp.len(), 2, "ddp-code and ddp in training.yaml");
    node.apply(&ns, &ddp.join("\n---\n"));
    let jobs: Api<TrainingJob> = ns.api();
    wait_for(&jobs, "ddp", SLOW, phase_is("Completed")).await;
    let logs = job_logs(&ns, "ddp").await;
    for rank in 0..2 {
        assert!(
            logs.contains(&format!("rank {rank}/2 on ")) && logs.contains("= 3, expected 3"),
            "{logs}"
        );
        assert!(
            logs.contains(&format!(
                "rank {rank}: weights identical across ranks: True"
            )),
            "{logs}"
        );
    }
}

#[tokio::test]
#[ignore = "needs a real node: e2e/run-tests runs this inside e2e/node/exec"]
async fn the_mpi_launcher_reaches_every_worker_over_ssh() {
    let node = Node::require();
    let client = client().await;
    let ns = node.setup(&client, "rn-mpi").await;
    node.apply(
        &ns,
        r#"
apiVersion: mlcompute.io/v1alpha1
kind: TrainingJob
metadata: {name: mpi}
spec:
  command: >-
    python3 -c "from mpi4py import MPI; c = MPI.COMM_WORLD;
    print('mpi rank', c.Get_rank(), 'of', c.Get_size(), 'sum', c.allreduce(c.Get_rank() + 1), flush=True)"
  environment: pytorch:1
  distribution: {type: mpi, processCountPerInstance: 1, launcher: separate}
  resources: {instanceType: real-cpu, instanceCount: 2}
"#,
    );
    let jobs: Api<TrainingJob> = ns.api();
    wait_for(&jobs, "mpi", SLOW, phase_is("Completed")).await;
    let logs = job_logs(&ns, "mpi").await;
    for rank in 0..2 {
        assert!(
            logs.contains(&format!("mpi rank {rank} of 2 sum 3")),
            "{logs}"
        );
    }
}

#[tokio::test]
#[ignore = "needs a real node: e2e/run-tests runs this inside e2e/node/exec"]
async fn the_scoring_server_passes_its_probes_and_the_router_reaches_it() {
    let node = Node::require();
    let client = client().await;
    let ns = node.setup(&client, "rn-serve").await;
    node.apply(
        &ns,
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: sum-code}
data:
  score.py: |
    import json, os
    def init():
        pass
    def run(raw_data):
        return {"sum": sum(json.loads(raw_data)["data"]), "deployment": os.environ["DEPLOYMENT_NAME"]}
---
apiVersion: mlcompute.io/v1alpha1
kind: OnlineEndpoint
metadata: {name: adder}
spec: {authMode: key, traffic: {blue: 100}}
---
apiVersion: mlcompute.io/v1alpha1
kind: OnlineDeployment
metadata: {name: blue}
spec:
  endpointName: adder
  codeConfiguration: {code: configmap://sum-code, scoringScript: score.py}
  environment: sklearn:1
  environmentVariables: {DEPLOYMENT_NAME: blue}
  instanceType: real-cpu
  instanceCount: 1
"#,
    );
    let endpoints: Api<OnlineEndpoint> = ns.api();
    wait_for(&endpoints, "adder", SLOW, |e: Option<&OnlineEndpoint>| {
        e.and_then(|e| e.status.as_ref())
            .map(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
            .unwrap_or(false)
    })
    .await;
    // The readiness probe of the scoring container passed on the kubelet.
    let pods: Api<Pod> = ns.api();
    let ready = pods
        .list(&ListParams::default().labels("mlcompute.io/onlinedeployment=blue"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count();
    assert_eq!(ready, 1);
    // The router finds the Pod through its EndpointSlice.
    let slices: Api<EndpointSlice> = ns.api();
    let addresses: Vec<String> = slices
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .flat_map(|s| s.endpoints.into_iter().flatten().flat_map(|e| e.addresses))
        .collect();
    // The node's bridge subnet (a /24 around MLC_NODE_IP, as e2e/node/up makes it).
    let node_ip = std::env::var("MLC_NODE_IP").unwrap();
    let subnet = &node_ip[..=node_ip.rfind('.').unwrap()];
    assert!(
        addresses.iter().any(|a| a.starts_with(subnet)),
        "{addresses:?} not in {subnet}0/24"
    );

    let key = credentials(&ns, "adder");
    let body = score(&ns, "adder", &key, r#"{"data": [1, 2, 39]}"#).await;
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["sum"], 42, "{body}");
    assert_eq!(answer["deployment"], "blue", "{body}");
}

/// The endpoint's primary key, from the CLI.
fn credentials(ns: &TestNamespace, endpoint: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mlcompute"))
        .args(["endpoint", "get-credentials", endpoint, "-n", ns.name()])
        .args(["--kubeconfig", &kubeconfig_path()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["primaryKey"].as_str().unwrap().to_string()
}

/// One scoring request through the router's Service, retried while routes propagate.
async fn score(ns: &TestNamespace, endpoint: &str, key: &str, body: &str) -> String {
    let router = router_url().await;
    let file = std::env::temp_dir().join(format!("{}-req.json", ns.name()));
    std::fs::write(&file, body).unwrap();
    eventually(
        "a 200 answer through the router",
        Duration::from_secs(60),
        || {
            let (router, file) = (router.clone(), file.clone());
            async move {
                let out = Command::new(env!("CARGO_BIN_EXE_mlcompute"))
                    .args([
                        "endpoint", "invoke", endpoint, "--router", &router, "--key", key,
                    ])
                    .arg("--data")
                    .arg(&file)
                    .output()
                    .ok()?;
                out.status
                    .success()
                    .then(|| String::from_utf8_lossy(&out.stdout).to_string())
            }
        },
    )
    .await
}

/// The router's Service, as installed by the chart.
async fn router_url() -> String {
    let client = client().await;
    let svc: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client, "mlcompute-system");
    let ip = svc
        .get("mlcompute-router")
        .await
        .unwrap()
        .spec
        .unwrap()
        .cluster_ip
        .unwrap();
    format!("http://{ip}:80")
}

#[tokio::test]
#[ignore = "needs a real node: e2e/run-tests runs this inside e2e/node/exec"]
async fn the_batch_driver_scores_files_in_a_job_into_predictions_csv() {
    let node = Node::require();
    let client = client().await;
    let ns = node.setup(&client, "rn-batch").await;
    // The model: trained by a real job first.
    let training = node.render(&ns, "training.yaml");
    let iris: Vec<&str> = training
        .split("\n---")
        .filter(|d| d.contains("iris-train"))
        .collect();
    node.apply(&ns, &iris.join("\n---\n"));
    let jobs: Api<TrainingJob> = ns.api();
    wait_for(&jobs, "iris-train", SLOW, phase_is("Completed")).await;

    let input = node.dir(&ns, "datasets").join("flowers");
    std::fs::create_dir_all(&input).unwrap();
    for f in 0..5 {
        std::fs::write(
            input.join(format!("part-{f}.csv")),
            "5.1,3.5,1.4,0.2\n6.2,2.9,4.3,1.3\n7.7,3.0,6.1,2.3\n",
        )
        .unwrap();
    }
    node.apply(&ns, &node.render(&ns, "batch.yaml"));
    node.apply(
        &ns,
        r#"
apiVersion: mlcompute.io/v1alpha1
kind: BatchJob
metadata: {name: flowers}
spec:
  endpointName: iris-batch
  input: {type: uri_folder, path: pvc://datasets/flowers}
"#,
    );
    let batch: Api<BatchJob> = ns.api();
    wait_for(&batch, "flowers", SLOW, |j: Option<&BatchJob>| {
        j.and_then(|j| j.status.as_ref()?.phase.as_ref())
            .is_some_and(|p| format!("{p:?}") == "Completed")
    })
    .await;
    let csv = std::fs::read_to_string(
        node.dir(&ns, "results")
            .join("iris")
            .join("flowers")
            .join("predictions.csv"),
    )
    .unwrap();
    let rows: Vec<&str> = csv.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(rows.len(), 15, "{csv}");
    for species in ["setosa", "versicolor", "virginica"] {
        assert_eq!(
            rows.iter().filter(|r| r.ends_with(species)).count(),
            5,
            "{csv}"
        );
    }
}

#[tokio::test]
#[ignore = "needs a real node: e2e/run-tests runs this inside e2e/node/exec"]
async fn a_restricted_namespace_runs_a_compliant_job_as_non_root() {
    let node = Node::require();
    let client = client().await;
    let ns = node.setup(&client, "rn-psa").await;
    Command::new(kubectl())
        .args([
            "--kubeconfig",
            &kubeconfig_path(),
            "label",
            "namespace",
            ns.name(),
        ])
        .arg("pod-security.kubernetes.io/enforce=restricted")
        .status()
        .unwrap();
    node.apply(
        &ns,
        r#"
apiVersion: mlcompute.io/v1alpha1
kind: TrainingJob
metadata: {name: whoami}
spec:
  command: python3 -c "import os; print('uid', os.getuid(), 'gid', os.getgid(), flush=True)"
  environment: sklearn:1
  resources: {instanceType: real-cpu}
  podSecurityContext: {runAsNonRoot: true, runAsUser: 1000, runAsGroup: 1000, seccompProfile: {type: RuntimeDefault}}
  securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
"#,
    );
    let jobs: Api<TrainingJob> = ns.api();
    wait_for(&jobs, "whoami", SLOW, phase_is("Completed")).await;
    assert!(job_logs(&ns, "whoami").await.contains("uid 1000 gid 1000"));
}

#[tokio::test]
#[ignore = "needs a real node: e2e/run-tests runs this inside e2e/node/exec"]
async fn an_image_that_cannot_be_pulled_is_reported_in_status() {
    let node = Node::require();
    let client = client().await;
    let ns = node.setup(&client, "rn-pull").await;
    let registry = std::env::var("MLC_IMAGE_PYTHON_ML").unwrap();
    let registry = registry.split('/').next().unwrap();
    node.apply(
        &ns,
        &format!(
            r#"
apiVersion: mlcompute.io/v1alpha1
kind: TrainingJob
metadata: {{name: no-image}}
spec:
  command: "true"
  image: {registry}/mlcompute/does-not-exist:1
  resources: {{instanceType: real-cpu}}
"#
        ),
    );
    let jobs: Api<TrainingJob> = ns.api();
    let job = wait_for(&jobs, "no-image", SLOW, |j: Option<&TrainingJob>| {
        j.and_then(|j| j.status.as_ref()?.reason.as_deref()) == Some("ImagePullError")
    })
    .await;
    let message = job.status.unwrap().message.unwrap_or_default();
    assert!(message.contains("does-not-exist"), "{message}");

    // The same for an online deployment: its Ready condition says which image and why.
    node.apply(
        &ns,
        &format!(
            r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: noop-code}}
data:
  score.py: |
    def init(): pass
    def run(raw): return raw
---
apiVersion: mlcompute.io/v1alpha1
kind: OnlineEndpoint
metadata: {{name: no-image}}
spec: {{authMode: key, traffic: {{blue: 100}}}}
---
apiVersion: mlcompute.io/v1alpha1
kind: OnlineDeployment
metadata: {{name: blue}}
spec:
  endpointName: no-image
  codeConfiguration: {{code: configmap://noop-code, scoringScript: score.py}}
  image: {registry}/mlcompute/does-not-exist:2
  instanceType: real-cpu
  instanceCount: 1
"#
        ),
    );
    let deployments: Api<OnlineDeployment> = ns.api();
    let od = wait_for(
        &deployments,
        "blue",
        SLOW,
        |d: Option<&OnlineDeployment>| {
            d.and_then(|d| d.status.as_ref()).is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.reason == "ImagePullError")
            })
        },
    )
    .await;
    let ready = od
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(ready.message.contains("does-not-exist:2"), "{ready:?}");
}

/// One scoring request through the router on a keep-alive connection: status and latency.
async fn post_score(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    host: &str,
    endpoint: &str,
    key: &str,
) -> (u16, Duration) {
    let started = std::time::Instant::now();
    let request = http::Request::post(format!("/api/v1/endpoint/{endpoint}/score"))
        .header("host", host)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"{\"data\": [1, 2, 3]}",
        )))
        .unwrap();
    sender.ready().await.unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    use http_body_util::BodyExt;
    let _ = response.into_body().collect().await.unwrap();
    (status, started.elapsed())
}

async fn router_connection(
    url: &str,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>> {
    let addr = url.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    sender
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real node: e2e/run-tests runs this inside e2e/node/exec"]
async fn a_burst_through_the_router_scales_the_deployment_up_and_back_and_zero_scales_from_zero() {
    use k8s_openapi::api::apps::v1::Deployment;
    let node = Node::require();
    let client = client().await;
    let ns = node.setup(&client, "rn-scale").await;
    // Each request keeps an instance busy for 0.2 s; one request per instance at a time.
    node.apply(
        &ns,
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: slow-code}
data:
  score.py: |
    import json, time
    def init():
        pass
    def run(raw_data):
        time.sleep(0.2)
        return {"n": len(json.loads(raw_data)["data"])}
---
apiVersion: mlcompute.io/v1alpha1
kind: OnlineEndpoint
metadata: {name: burst}
spec: {authMode: key, traffic: {blue: 100}}
---
apiVersion: mlcompute.io/v1alpha1
kind: OnlineDeployment
metadata: {name: blue}
spec:
  endpointName: burst
  codeConfiguration: {code: configmap://slow-code, scoringScript: score.py}
  environment: sklearn:1
  instanceType: real-cpu
  readinessProbe: {initialDelay: 1, period: 1}
  requestSettings: {maxConcurrentRequestsPerInstance: 1, maxQueueWaitMs: 60000, requestTimeoutMs: 90000}
  scaleSettings:
    type: target_utilization
    minInstances: 0
    maxInstances: 3
    targetUtilizationPercentage: 70
    pollingInterval: 1
    scaleToZeroAfterSeconds: 40
"#,
    );
    let deploys: Api<Deployment> = ns.api();
    let ods: Api<OnlineDeployment> = ns.api();
    let replicas = |d: &Deployment| d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(-1);
    let ready = |d: &Deployment| {
        d.status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
    };
    wait_for(&deploys, "blue", SLOW, |d: Option<&Deployment>| {
        d.is_some_and(|d| ready(d) >= 1)
    })
    .await;
    let key = credentials(&ns, "burst");
    let router = router_url().await;
    let host = router.trim_start_matches("http://").to_string();
    // The route is in place once one request is answered.
    score(&ns, "burst", &key, r#"{"data": [1]}"#).await;

    // The burst: 6 clients back to back for 30 s (demand 6 instances, max 3).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u16, Duration, Duration)>();
    let burst_start = std::time::Instant::now();
    let until = std::time::Instant::now() + Duration::from_secs(30);
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let (tx, router, host, key) = (tx.clone(), router.clone(), host.clone(), key.clone());
            tokio::spawn(async move {
                let mut sender = router_connection(&router).await;
                while std::time::Instant::now() < until {
                    let (status, latency) = post_score(&mut sender, &host, "burst", &key).await;
                    let _ = tx.send((status, latency, burst_start.elapsed()));
                }
            })
        })
        .collect();
    drop(tx);
    let mut peak = 0;
    let mut peak_ready = 0;
    let started = std::time::Instant::now();
    while std::time::Instant::now() < until {
        let d = deploys.get("blue").await.unwrap();
        peak = peak.max(replicas(&d));
        peak_ready = peak_ready.max(ready(&d));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for c in clients {
        c.await.unwrap();
    }
    let mut answers = Vec::new();
    while let Some(a) = rx.recv().await {
        answers.push(a);
    }
    let ok = answers.iter().filter(|(s, _, _)| *s == 200).count();
    // Answers per 10 s: the throughput follows the instances the router reaches.
    let per_window: Vec<usize> = (0..3)
        .map(|w| {
            answers
                .iter()
                .filter(|(_, _, at)| at.as_secs() / 10 == w)
                .count()
        })
        .collect();
    let scale = ods
        .get("blue")
        .await
        .unwrap()
        .status
        .unwrap()
        .scale
        .unwrap();
    println!(
        "burst: {} requests in {:.0} s ({per_window:?} per 10 s), {ok} answered 200; replicas peaked at {peak} ({peak_ready} ready); status.scale: {} {}",
        answers.len(),
        started.elapsed().as_secs_f64(),
        scale.reason,
        scale.message
    );
    assert_eq!(
        peak, 3,
        "the burst did not scale the deployment to maxInstances"
    );
    assert!(peak_ready >= 2, "the new instances never became ready");
    assert_eq!(ok, answers.len(), "requests failed during the burst");

    // After the burst: down once the window (20 × 1 s) has seen lower load, then to zero after
    // 40 s without a request.
    let calm = std::time::Instant::now();
    wait_for(
        &deploys,
        "blue",
        Duration::from_secs(120),
        |d: Option<&Deployment>| d.is_some_and(|d| replicas(d) < 3),
    )
    .await;
    let down = calm.elapsed();
    wait_for(
        &deploys,
        "blue",
        Duration::from_secs(150),
        |d: Option<&Deployment>| d.is_some_and(|d| replicas(d) == 0),
    )
    .await;
    let zero = calm.elapsed();
    println!(
        "after the burst: first scale-down after {:.0} s, at zero after {:.0} s",
        down.as_secs_f64(),
        zero.as_secs_f64()
    );
    let pods: Api<Pod> = ns.api();
    eventually("every instance gone", Duration::from_secs(90), || async {
        let left = pods
            .list(&ListParams::default().labels("mlcompute.io/onlinedeployment=blue"))
            .await
            .ok()?;
        left.items.is_empty().then_some(())
    })
    .await;

    // Scale from zero: the first request is held at the router and answered.
    let mut sender = router_connection(&router).await;
    let (status, cold) = post_score(&mut sender, &host, "burst", &key).await;
    println!(
        "cold start: the first request from zero answered {status} after {:.2} s",
        cold.as_secs_f64()
    );
    assert_eq!(status, 200);
    let scale = ods
        .get("blue")
        .await
        .unwrap()
        .status
        .unwrap()
        .scale
        .unwrap();
    assert!(scale.desired_instances >= 1, "{scale:?}");
}
