//! Helpers for integration tests that run against the local control plane (`e2e/cluster/up`).
//!
//! Tests using these are `#[ignore = "needs the local control plane"]` so that a bare `cargo test`
//! runs unit tests only; `e2e/run-tests` brings a plane up and runs them with `--include-ignored`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod fake_router;
pub mod health;
pub mod local;

use std::{fmt::Debug, time::Duration};

use k8s_openapi::api::core::v1::{Event, Namespace};
use kube::{
    Api, Client, Config, Resource,
    api::{ListParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::wait::{Condition, await_condition},
};
use serde::de::DeserializeOwned;

/// The admin kubeconfig of the local plane: `MLC_KUBECONFIG`, else `KUBECONFIG`.
pub fn kubeconfig_path() -> String {
    std::env::var("MLC_KUBECONFIG")
        .or_else(|_| std::env::var("KUBECONFIG"))
        .expect(
            "MLC_KUBECONFIG is not set: start the plane with e2e/cluster/up, or run e2e/run-tests",
        )
}

/// A client for the local plane.
pub async fn client() -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig_path()).expect("read kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is valid");
    Client::try_from(config).expect("build client")
}

/// A kubeconfig (written to a temporary file) that authenticates as ServiceAccount `account` of
/// `ns` with a fresh bound token (TokenRequest), against the local plane.
pub async fn kubeconfig_as(client: &Client, ns: &str, account: &str) -> std::path::PathBuf {
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), ns);
    let request =
        serde_json::from_value(serde_json::json!({ "spec": { "expirationSeconds": 600 } }))
            .unwrap();
    let token = accounts
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let admin: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(kubeconfig_path()).unwrap()).unwrap();
    let cluster = admin["clusters"][0]["cluster"].clone();
    let config = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{ "name": "plane", "cluster": cluster }],
        "users": [{ "name": account, "user": { "token": token } }],
        "contexts": [{ "name": "sa", "context": { "cluster": "plane", "user": account } }],
        "current-context": "sa"
    });
    let path = std::env::temp_dir().join(format!("mlc-kubeconfig-{ns}-{account}.yaml"));
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    path
}

/// A client from the kubeconfig at `path`.
pub async fn client_from(path: &std::path::Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("read kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is valid");
    Client::try_from(config).expect("build client")
}

/// A namespace created for one test and deleted when the test ends (even when it panics).
pub struct TestNamespace {
    name: String,
    client: Client,
}

impl TestNamespace {
    /// Creates a namespace named `<prefix>-<random>`.
    pub async fn new(client: &Client, prefix: &str) -> Self {
        let name = format!("{prefix}-{:08x}", rand::random::<u32>());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": { "mlcompute.io/test": "true" } }
        }))
        .unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create test namespace");
        Self {
            name,
            client: client.clone(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A namespaced API in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Drop cannot await, and blocking the test's runtime here would starve the client's
        // worker task; kubectl deletes without either, and also runs when the test panicked.
        let status = std::process::Command::new(kubectl())
            .args([
                "--kubeconfig",
                &kubeconfig_path(),
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
            ])
            .stdout(std::process::Stdio::null())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("warning: could not delete test namespace {}", self.name);
        }
    }
}

/// The kubectl matching the local plane: `MLC_KUBECTL`, else the one `e2e/cluster/build` made.
pub fn kubectl() -> String {
    std::env::var("MLC_KUBECTL").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/mlcompute/k8s-v1.36.3/kubectl")
    })
}

/// Waits until `cond` holds for the named object, or fails the test after `timeout` with the
/// last observed state.
pub async fn wait_for<K, C>(api: &Api<K>, name: &str, timeout: Duration, cond: C) -> K
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + 'static,
    C: Condition<K>,
{
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, cond)).await {
        Ok(Ok(Some(obj))) => obj,
        Ok(Ok(None)) => panic!("{name} was deleted while waiting"),
        Ok(Err(e)) => panic!("watching {name} failed: {e}"),
        Err(_) => {
            let last = api.get_opt(name).await.ok().flatten();
            panic!("timed out after {timeout:?} waiting for {name}; last state: {last:#?}")
        }
    }
}

/// Waits until the named object is gone (deleted, or garbage-collected).
pub async fn wait_gone<K>(api: &Api<K>, name: &str, timeout: Duration)
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + 'static,
{
    let cond = |obj: Option<&K>| obj.is_none();
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, cond)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => panic!("watching {name} failed: {e}"),
        Err(_) => panic!("timed out after {timeout:?} waiting for {name} to be deleted"),
    }
}

/// Polls `f` until it returns `Some`, every 100 ms, failing after `timeout` with `what`.
/// For conditions spanning several objects, where a single-object watch does not fit.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for a Warning Event with `reason` about the object `name` in `ns`.
pub async fn warning_event(ns: &TestNamespace, reason: &str, name: &str, timeout: Duration) {
    let events: Api<Event> = ns.api();
    eventually(
        &format!("a {reason} Warning Event about {name}"),
        timeout,
        || {
            let events = events.clone();
            async move {
                let list = events.list(&ListParams::default()).await.ok()?;
                list.items
                    .iter()
                    .any(|e| {
                        e.reason.as_deref() == Some(reason)
                            && e.type_.as_deref() == Some("Warning")
                            && e.involved_object.name.as_deref() == Some(name)
                    })
                    .then_some(())
            }
        },
    )
    .await
}

/// An `mlcompute operator` process watching one namespace, killed when dropped. Each test runs
/// its own, so tests in parallel never share a controller (and a test can kill and restart it).
pub struct Operator {
    child: std::process::Child,
    pub namespace: String,
}

impl Operator {
    /// Starts the operator binary of this build on the local plane, watching `namespace`.
    pub fn start(namespace: &str) -> Self {
        Self::start_with(namespace, &[])
    }

    /// As [`Operator::start`], with extra flags.
    pub fn start_with(namespace: &str, extra: &[&str]) -> Self {
        let log = std::fs::File::create(
            std::env::temp_dir().join(format!("mlcompute-operator-{namespace}.log")),
        )
        .expect("operator log file");
        // MLC_OPERATOR_BIN runs another build (e.g. an older release, to compare against).
        let bin = std::env::var("MLC_OPERATOR_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_mlcompute").to_string());
        let child = std::process::Command::new(bin)
            .args([
                "operator",
                "--kubeconfig",
                &kubeconfig_path(),
                "--namespaces",
                namespace,
            ])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "info,mlcompute=debug")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the mlcompute operator");
        Self {
            child,
            namespace: namespace.to_string(),
        }
    }

    /// Path of this operator's log file (for failure messages).
    pub fn log_path(&self) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("mlcompute-operator-{}.log", self.namespace))
    }

    /// Whether the process is still alive.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The address the operator serves `/metrics` on, read off its log once it is listening.
    pub async fn metrics_addr(&self) -> String {
        let log = self.log_path();
        eventually(
            "the operator's metrics address",
            Duration::from_secs(30),
            || {
                let log = log.clone();
                async move {
                    let text = std::fs::read_to_string(&log).ok()?;
                    let line = text.lines().find(|l| l.contains("serving /metrics"))?;
                    let addr = line.split("addr=").nth(1)?.split_whitespace().next()?;
                    Some(addr.trim_matches('"').to_string())
                }
            },
        )
        .await
    }

    /// GET `path` from the operator's metrics listener: the whole HTTP response, empty on error.
    pub async fn http_get(&self, path: &str) -> String {
        let addr = self.metrics_addr().await;
        let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(&addr).ok()?;
            s.write_all(request.as_bytes()).ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            Some(out)
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
    }

    /// Waits until the operator's `/readyz` answers 200: every cache holds its first list.
    pub async fn ready(&self) {
        let what = format!("the operator ready (log: {})", self.log_path().display());
        eventually(&what, Duration::from_secs(60), || async {
            self.http_get("/readyz")
                .await
                .starts_with("HTTP/1.1 200")
                .then_some(())
        })
        .await
    }

    /// The value of the operator's metric `name{labels}` now (the first series whose labels
    /// include every `k="v"` in `labels`), 0 when absent.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let body = self.http_get("/metrics").await;
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .filter(|l| {
                labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .next()
            .unwrap_or(0.0)
    }

    /// Waits until `controller` has finished at least `n` reconciles since this process started
    /// (each one's writes included: the count moves when a reconcile ends). What a test waits on
    /// instead of a fixed sleep before asserting that nothing changed.
    pub async fn reconciled(&self, controller: &str, n: u64) {
        let what = format!(
            "{n} finished {controller} reconciles (log: {})",
            self.log_path().display()
        );
        eventually(&what, Duration::from_secs(60), || async {
            let done = self
                .metric(
                    "mlcompute_reconcile_duration_seconds_count",
                    &[("controller", controller)],
                )
                .await;
            (done >= n as f64).then_some(())
        })
        .await
    }

    /// How many reconciles of `controller` have finished so far.
    pub async fn finished(&self, controller: &str) -> u64 {
        self.metric(
            "mlcompute_reconcile_duration_seconds_count",
            &[("controller", controller)],
        )
        .await as u64
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The helm the local plane's build made (`MLC_HELM` overrides).
pub fn helm() -> String {
    std::env::var("MLC_HELM").unwrap_or_else(|_| {
        let cache = std::env::var("MLC_CACHE").unwrap_or_else(|_| {
            format!(
                "{}/.cache/mlcompute",
                std::env::var("HOME").unwrap_or_default()
            )
        });
        format!("{cache}/helm-v3.22.0/helm")
    })
}

/// Runs `program` in the repository root with `stdin`, fails the test with its output unless it
/// succeeds, and returns its stdout.
pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> String {
    use std::{
        io::Write,
        process::{Command, Stdio},
    };
    let mut child = Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {program}: {e}"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{program} {}\n--- stdout\n{}\n--- stderr\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The host Python venv with azmlinfsrv (`e2e/python/requirements.txt`): `e2e/python/venv` builds
/// it once into `${XDG_CACHE_HOME:-$HOME/.cache}/mlcompute/venv-<hash>` and prints its path (it is
/// idempotent; `e2e/install-deps` runs it first, so this finds the venv at once). Run once per test
/// binary; a failing build fails the test with the script's output.
pub fn python_venv() -> std::path::PathBuf {
    static VENV: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    VENV.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/e2e/python/venv");
        std::path::PathBuf::from(run(script, &[], None).trim())
    })
    .clone()
}
