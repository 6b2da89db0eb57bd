#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Data-plane tests: the real `mlcompute router` process, with a static routing table, in front
//! of real HTTP backends (in-process hyper servers, and the shipped Python scoring server
//! running a real `score.py`). Everything listens on 127.0.0.1.
//!
//! These tests assert counts and behaviour, not timings; latency figures belong to
//! `bench/router/run`.

mod support;

use support::local::{TempDir, free_port};

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::{rt::TokioIo, server::graceful::GracefulShutdown};
use tokio::{net::TcpListener, sync::watch, task::JoinSet};

const BIN: &str = env!("CARGO_BIN_EXE_mlcompute");
const KEY: &str = "test-primary-key";

// ---------------------------------------------------------------------------------------------
// Backends

/// An in-process HTTP backend on 127.0.0.1 that counts what it serves.
struct Backend {
    addr: SocketAddr,
    served: Arc<AtomicU64>,
    mirrored: Arc<AtomicU64>,
    kill: watch::Sender<bool>,
}

#[derive(Clone, Copy, Default)]
struct Behaviour {
    delay: Duration,
}

impl Backend {
    async fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicU64::new(0));
        let mirrored = Arc::new(AtomicU64::new(0));
        let (kill, mut killed) = watch::channel(false);
        let (s, m) = (served.clone(), mirrored.clone());
        tokio::spawn(async move {
            let graceful = GracefulShutdown::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let (s, m) = (s.clone(), m.clone());
                        let service = service_fn(move |request: Request<Incoming>| {
                            let (s, m) = (s.clone(), m.clone());
                            async move {
                                let is_mirror = request.headers().contains_key("x-mlcompute-mirror");
                                let seen = Seen::of(&request);
                                let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                                if !behaviour.delay.is_zero() {
                                    tokio::time::sleep(behaviour.delay).await;
                                }
                                if is_mirror { m.fetch_add(1, Ordering::Relaxed); } else { s.fetch_add(1, Ordering::Relaxed); }
                                let mut response = Response::new(Full::new(Bytes::from(format!("{{\"echo\":{}}}", body.len()))));
                                response.headers_mut().insert("x-backend", addr.port().to_string().parse().unwrap());
                                seen.echo(response.headers_mut());
                                Ok::<_, Infallible>(response)
                            }
                        });
                        let connection = graceful.watch(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
                        tokio::spawn(connection);
                    }
                    _ = killed.changed() => break,
                }
            }
            // Like a terminating pod: stop accepting, finish what is in flight, close idle connections.
            drop(listener);
            graceful.shutdown().await;
        });
        Self {
            addr,
            served,
            mirrored,
            kill,
        }
    }

    fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    fn mirrored(&self) -> u64 {
        self.mirrored.load(Ordering::Relaxed)
    }

    fn kill(&self) {
        let _ = self.kill.send(true);
    }
}

/// What a backend saw of a request, echoed in its answer's `x-seen-*` headers.
struct Seen {
    method: String,
    uri: String,
    headers: Vec<(&'static str, http::HeaderValue)>,
}

impl Seen {
    const ECHOED: [&'static str; 6] = [
        "x-request-id",
        "content-length",
        "x-ms-client-request-id",
        "authorization",
        "origin",
        "host",
    ];

    fn of(request: &Request<Incoming>) -> Self {
        Self {
            method: request.method().to_string(),
            uri: request.uri().to_string(),
            headers: Self::ECHOED
                .iter()
                .filter_map(|name| Some((*name, request.headers().get(*name)?.clone())))
                .collect(),
        }
    }

    fn echo(self, headers: &mut http::HeaderMap) {
        headers.insert("x-seen-method", self.method.parse().unwrap());
        headers.insert("x-seen-uri", self.uri.parse().unwrap());
        for (name, value) in self.headers {
            headers.insert(
                http::HeaderName::try_from(format!("x-seen-{name}")).unwrap(),
                value,
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The router process

struct RouterProcess {
    child: Child,
    addr: SocketAddr,
    table: PathBuf,
    _dir: TempDir,
}

impl RouterProcess {
    async fn start(table: &str, extra: &[&str]) -> Self {
        let dir = TempDir::new("table");
        let path = dir.0.join("table.yaml");
        std::fs::write(&path, table).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(BIN)
            .args(["router", "--listen", &addr.to_string(), "--static-table"])
            .arg(&path)
            .args(["--poll-ms", "50", "--drain-seconds", "5"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let router = Self {
            child,
            addr,
            table: path,
            _dir: dir,
        };
        router.wait_ready().await;
        router
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut conn) = Conn::open(self.addr).await
                && let Ok((status, _, _)) = conn.get("/readyz").await
                && status == StatusCode::OK
            {
                return;
            }
            assert!(Instant::now() < deadline, "router did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Replaces the table atomically (write + rename), as a controller or an editor would.
    fn write_table(&self, table: &str) {
        let tmp = self.table.with_extension("tmp");
        std::fs::write(&tmp, table).unwrap();
        std::fs::rename(&tmp, &self.table).unwrap();
    }

    fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// A keep-alive client

struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
}

type Answer = (StatusCode, http::HeaderMap, Bytes);

impl Conn {
    async fn open(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(connection);
        Ok(Self { sender, addr })
    }

    async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<Answer, hyper::Error> {
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok((parts.status, parts.headers, body))
    }

    async fn get(&mut self, path: &str) -> Result<Answer, hyper::Error> {
        let request = Request::get(path)
            .header("host", self.addr.to_string())
            .body(Full::new(Bytes::new()))
            .unwrap();
        self.send(request).await
    }

    async fn score(
        &mut self,
        endpoint: &str,
        key: Option<&str>,
        pin: Option<&str>,
    ) -> Result<Answer, hyper::Error> {
        let mut request = Request::post(format!("/api/v1/endpoint/{endpoint}/score"))
            .header("host", self.addr.to_string())
            .header("content-type", "application/json");
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        if let Some(pin) = pin {
            request = request.header("azureml-model-deployment", pin);
        }
        self.send(
            request
                .body(Full::new(Bytes::from_static(b"{\"data\":[1,2,3]}")))
                .unwrap(),
        )
        .await
    }
}

/// Sends `total` scoring requests over `connections` keep-alive connections; returns the
/// answers' statuses counted, the latencies, and the wall time.
struct Load {
    statuses: Vec<(StatusCode, u64)>,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Load {
    fn ok(&self) -> u64 {
        self.count(StatusCode::OK)
    }

    fn count(&self, status: StatusCode) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| *s == status)
            .map(|(_, n)| n)
            .sum()
    }

    fn median(&mut self) -> Duration {
        self.latencies.sort_unstable();
        self.latencies[self.latencies.len() / 2]
    }
}

async fn load(addr: SocketAddr, endpoint: &'static str, total: usize, connections: usize) -> Load {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..connections {
        let next = next.clone();
        tasks.spawn(async move {
            let mut conn = Conn::open(addr).await.unwrap();
            let mut statuses = std::collections::HashMap::<StatusCode, u64>::new();
            let mut latencies = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let sent = Instant::now();
                let status = match conn.score(endpoint, Some(KEY), None).await {
                    Ok((status, _, body)) => {
                        if status != StatusCode::OK {
                            eprintln!("{status}: {}", String::from_utf8_lossy(&body));
                        }
                        status
                    }
                    Err(error) => {
                        eprintln!("client-visible transport error: {error}");
                        conn = Conn::open(addr).await.unwrap();
                        StatusCode::IM_A_TEAPOT // stands for "transport error"
                    }
                };
                latencies.push(sent.elapsed());
                *statuses.entry(status).or_default() += 1;
            }
            (statuses, latencies)
        });
    }
    let mut merged = std::collections::HashMap::<StatusCode, u64>::new();
    let mut latencies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (statuses, mut l) = done.unwrap();
        for (status, n) in statuses {
            *merged.entry(status).or_default() += n;
        }
        latencies.append(&mut l);
    }
    Load {
        statuses: merged.into_iter().collect(),
        latencies,
        elapsed: started.elapsed(),
    }
}

// ---------------------------------------------------------------------------------------------
// Tables

fn deployment(
    name: &str,
    traffic: u32,
    mirror: u32,
    backends: &[&Backend],
    settings: &str,
) -> String {
    let backends: Vec<String> = backends
        .iter()
        .map(|b| format!("{{address: \"{}\"}}", b.addr))
        .collect();
    format!(
        "      - {{ name: {name}, traffic: {traffic}, mirror: {mirror}, requestSettings: {{ {settings} }}, backends: [{}] }}\n",
        backends.join(", ")
    )
}

const ROOMY: &str =
    "maxConcurrentRequestsPerInstance: 1000, maxQueueWaitMs: 2000, requestTimeoutMs: 10000";

fn table(endpoint: &str, deployments: &[String]) -> String {
    format!(
        "endpoints:\n  - name: {endpoint}\n    auth: {{ mode: key, primaryKey: {KEY}, secondaryKey: second-key }}\n    deployments:\n{}",
        deployments.concat()
    )
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_90_10_holds_within_one_percent_over_100k_requests() {
    let blue = Backend::start(Behaviour::default()).await;
    let green = Backend::start(Behaviour::default()).await;
    let router = RouterProcess::start(
        &table(
            "iris",
            &[
                deployment("blue", 90, 0, &[&blue], ROOMY),
                deployment("green", 10, 0, &[&green], ROOMY),
            ],
        ),
        &[],
    )
    .await;
    let result = load(router.addr, "iris", 100_000, 32).await;
    assert_eq!(result.ok(), 100_000, "{:?}", result.statuses);
    let (b, g) = (blue.served(), green.served());
    assert_eq!(b + g, 100_000);
    let share = b as f64 / 100_000.0;
    assert!((0.89..=0.91).contains(&share), "blue got {b}, green {g}");
    eprintln!("100k requests in {:?}: blue {b}, green {g}", result.elapsed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinning_header_reaches_a_zero_percent_deployment() {
    let blue = Backend::start(Behaviour::default()).await;
    let green = Backend::start(Behaviour::default()).await;
    let router = RouterProcess::start(
        &table(
            "iris",
            &[
                deployment("blue", 100, 0, &[&blue], ROOMY),
                deployment("green", 0, 0, &[&green], ROOMY),
            ],
        ),
        &[],
    )
    .await;
    let mut conn = Conn::open(router.addr).await.unwrap();
    for _ in 0..50 {
        let (status, headers, _) = conn.score("iris", Some(KEY), Some("green")).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["azureml-model-deployment"], "green");
    }
    for _ in 0..50 {
        let (status, headers, _) = conn.score("iris", Some(KEY), None).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["azureml-model-deployment"], "blue");
    }
    assert_eq!((blue.served(), green.served()), (50, 50));
    let (status, _, body) = conn.score("iris", Some(KEY), Some("purple")).await.unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&body).contains("purple"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_percent_mirror_gets_half_the_copies_and_live_answers_stay_unchanged() {
    let blue = Backend::start(Behaviour::default()).await;
    let shadow = Backend::start(Behaviour::default()).await;
    let plain = table("iris", &[deployment("blue", 100, 0, &[&blue], ROOMY)]);
    let mirrored = table(
        "iris",
        &[
            deployment("blue", 100, 0, &[&blue], ROOMY),
            deployment("shadow", 0, 50, &[&shadow], ROOMY),
        ],
    );
    let router = RouterProcess::start(&plain, &[]).await;
    let mut without = load(router.addr, "iris", 4000, 8).await;
    assert_eq!(without.ok(), 4000);
    router.write_table(&mirrored);
    // The new table is live once copies start to arrive.
    let mut conn = Conn::open(router.addr).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while shadow.mirrored() == 0 {
        assert!(
            Instant::now() < deadline,
            "the mirror table was not applied"
        );
        assert_eq!(
            conn.score("iris", Some(KEY), None).await.unwrap().0,
            StatusCode::OK
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = shadow.mirrored();
    let live_before = blue.served();
    let mut with = load(router.addr, "iris", 4000, 8).await;
    assert_eq!(with.ok(), 4000);
    assert_eq!(blue.served() - live_before, 4000);
    let copies = || shadow.mirrored() - before;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Binomial(4000, 0.5): 2000 ± 32 (1σ); ±200 is > 6σ.
    assert!((1800..=2200).contains(&copies()), "{} copies", copies());
    assert_eq!(
        shadow.served(),
        0,
        "only copies reach the mirror deployment"
    );
    let (a, b) = (without.median(), with.median());
    eprintln!("live median latency: without mirror {a:?}, with 50 % mirror {b:?}");
    // A robust ratio, not a timing threshold: a blocking mirror would double it at least.
    assert!(b < a * 3 + Duration::from_millis(2), "{a:?} → {b:?}");
}

/// The sum of a router counter's samples whose line contains every one of `having`.
fn counter_sum(metrics: &str, name: &str, having: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && having.iter().all(|h| l.contains(h)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_that_pile_up_go_out_together_and_every_one_is_accounted_for() {
    // 64 connections and a full mirror: copies queue faster than one at a time would drain
    // them, so the router pipelines them to the shadow. Every copy is either delivered (and
    // the shadow saw exactly those) or counted as dropped.
    let blue = Backend::start(Behaviour::default()).await;
    let shadow = Backend::start(Behaviour::default()).await;
    let router = RouterProcess::start(
        &table(
            "iris",
            &[
                deployment("blue", 100, 0, &[&blue], ROOMY),
                deployment("shadow", 0, 100, &[&shadow], ROOMY),
            ],
        ),
        &["--threads", "1"],
    )
    .await;
    let result = load(router.addr, "iris", 20_000, 64).await;
    assert_eq!(result.ok(), 20_000, "{:?}", result.statuses);
    let mut conn = Conn::open(router.addr).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, metrics) = conn.get("/metrics").await.unwrap();
        let metrics = String::from_utf8_lossy(&metrics).into_owned();
        let shadow_label = "deployment=\"shadow\"";
        let sent = counter_sum(
            &metrics,
            "mlcompute_router_mirror_sent_total",
            &[shadow_label],
        );
        let dropped = counter_sum(
            &metrics,
            "mlcompute_router_mirror_dropped_total",
            &[shadow_label],
        );
        if sent + dropped >= 20_000.0 || Instant::now() > deadline {
            eprintln!(
                "copies: {sent} delivered, {dropped} dropped; the shadow saw {}",
                shadow.mirrored()
            );
            assert_eq!(
                sent + dropped,
                20_000.0,
                "every copy is delivered or counted as dropped"
            );
            assert_eq!(
                shadow.mirrored() as f64,
                sent,
                "the shadow saw exactly the delivered copies"
            );
            assert!(
                sent >= 19_000.0,
                "a healthy shadow gets nearly every copy: {sent}"
            );
            assert_eq!(shadow.served(), 0);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_dead_mirror_neither_fails_nor_blocks_live_requests() {
    let blue = Backend::start(Behaviour::default()).await;
    let slow = Backend::start(Behaviour {
        delay: Duration::from_secs(1),
    })
    .await;
    let dead = Backend::start(Behaviour::default()).await;
    dead.kill();
    tokio::time::sleep(Duration::from_millis(50)).await;
    for (name, mirror) in [("slow", &slow), ("dead", &dead)] {
        let router = RouterProcess::start(
            &table(
                "iris",
                &[
                    deployment("blue", 100, 0, &[&blue], ROOMY),
                    deployment("shadow", 0, 50, &[mirror], ROOMY),
                ],
            ),
            &["--mirror-queue", "32", "--mirror-workers", "8"],
        )
        .await;
        let result = load(router.addr, "iris", 3000, 8).await;
        assert_eq!(result.ok(), 3000, "{name}: {:?}", result.statuses);
        // ≈1500 copies at 1 s each over 8 mirror workers would take > 180 s if live requests waited.
        assert!(
            result.elapsed < Duration::from_secs(60),
            "{name}: {:?}",
            result.elapsed
        );
        let mut conn = Conn::open(router.addr).await.unwrap();
        let (_, _, metrics) = conn.get("/metrics").await.unwrap();
        let metrics = String::from_utf8_lossy(&metrics);
        let reason = if name == "slow" {
            "queue_full"
        } else {
            "failed"
        };
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with("mlcompute_router_mirror_dropped_total")
                    && l.contains("deployment=\"shadow\"")
                    && l.contains(reason)
            })
            .unwrap_or_else(|| panic!("{name}: no {reason} drops in\n{metrics}"));
        let dropped: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(dropped > 0.0, "{name}: {line}");
        eprintln!(
            "{name} mirror: 3000 live requests in {:?}; {line}",
            result.elapsed
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipping_weights_ten_times_during_a_run_fails_no_request() {
    let blue = Backend::start(Behaviour::default()).await;
    let green = Backend::start(Behaviour::default()).await;
    let split = |b: u32| {
        table(
            "iris",
            &[
                deployment("blue", b, 0, &[&blue], ROOMY),
                deployment("green", 100 - b, 0, &[&green], ROOMY),
            ],
        )
    };
    let router = RouterProcess::start(&split(90), &[]).await;
    let addr = router.addr;
    let running = tokio::spawn(load(addr, "iris", 30_000, 16));
    for flip in 0..10 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        router.write_table(&split(if flip % 2 == 0 { 10 } else { 90 }));
    }
    let result = running.await.unwrap();
    assert_eq!(result.ok(), 30_000, "{:?}", result.statuses);
    assert_eq!(blue.served() + green.served(), 30_000);
    assert!(
        green.served() > 3000,
        "the flips took effect: green {}",
        green.served()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_gets_the_same_401_as_an_unknown_endpoint() {
    let blue = Backend::start(Behaviour::default()).await;
    let router = RouterProcess::start(
        &table("iris", &[deployment("blue", 100, 0, &[&blue], ROOMY)]),
        &[],
    )
    .await;
    let mut conn = Conn::open(router.addr).await.unwrap();
    let wrong = conn.score("iris", Some("not-the-key"), None).await.unwrap();
    let missing = conn.score("iris", None, None).await.unwrap();
    let unknown = conn
        .score("no-such-endpoint", Some(KEY), None)
        .await
        .unwrap();
    for (status, _, body) in [&wrong, &missing, &unknown] {
        assert_eq!(*status, StatusCode::UNAUTHORIZED);
        assert_eq!(body, &unknown.2);
    }
    assert!(!String::from_utf8_lossy(&unknown.2).contains("no-such-endpoint"));
    assert_eq!(
        conn.score("iris", Some(KEY), None).await.unwrap().0,
        StatusCode::OK
    );
    assert_eq!(
        conn.score("iris", Some("second-key"), None)
            .await
            .unwrap()
            .0,
        StatusCode::OK
    );
    assert_eq!(blue.served(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_overflow_past_the_queue_wait_gets_503_and_a_slow_instance_504() {
    let slow = Backend::start(Behaviour {
        delay: Duration::from_millis(400),
    })
    .await;
    let tight = "maxConcurrentRequestsPerInstance: 1, maxQueueWaitMs: 50, requestTimeoutMs: 5000";
    let impatient =
        "maxConcurrentRequestsPerInstance: 10, maxQueueWaitMs: 50, requestTimeoutMs: 100";
    let router = RouterProcess::start(
        &table(
            "iris",
            &[
                deployment("one", 100, 0, &[&slow], tight),
                deployment("hasty", 0, 0, &[&slow], impatient),
            ],
        ),
        &[],
    )
    .await;
    let addr = router.addr;
    let mut calls = JoinSet::new();
    for _ in 0..4 {
        calls.spawn(async move {
            Conn::open(addr)
                .await
                .unwrap()
                .score("iris", Some(KEY), None)
                .await
                .unwrap()
        });
    }
    let mut statuses = Vec::new();
    while let Some(done) = calls.join_next().await {
        let (status, _, body) = done.unwrap();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // Azure ML's Kubernetes endpoints answer 503 once max_queue_wait_ms runs out.
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(
                body["message"]
                    .as_str()
                    .unwrap()
                    .contains("max_queue_wait_ms")
                    && body["deployment"] == "one"
                    && body["reason"] == "busy",
                "{body}"
            );
        }
        statuses.push(status);
    }
    assert!(statuses.contains(&StatusCode::OK), "{statuses:?}");
    assert!(
        statuses.contains(&StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
    let (status, _, body) = Conn::open(addr)
        .await
        .unwrap()
        .score("iris", Some(KEY), Some("hasty"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(String::from_utf8_lossy(&body).contains("request_timeout_ms"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ready_instance_gets_503_no_traffic_404_and_dead_instances_502() {
    let blue = Backend::start(Behaviour::default()).await;
    let gone = Backend::start(Behaviour::default()).await;
    gone.kill();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let unready = format!(
        "      - {{ name: unready, traffic: 100, backends: [{{address: \"{}\", ready: false}}] }}\n",
        blue.addr
    );
    let router = RouterProcess::start(
        &format!(
            "{}  - name: idle\n    deployments:\n{}  - name: broken\n    deployments:\n{}",
            table("iris", &[unready]),
            deployment("standby", 0, 0, &[&blue], ROOMY),
            deployment("main", 100, 0, &[&gone], ROOMY),
        ),
        &[],
    )
    .await;
    let mut conn = Conn::open(router.addr).await.unwrap();
    let (status, _, body) = conn.score("iris", Some(KEY), None).await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&body).contains("no ready instance"));
    let (status, _, body) = conn.score("idle", None, None).await.unwrap();
    // Azure ML: no deployment with a positive weight and none pinned is 404.
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&body).contains("no deployment with traffic"));
    let (status, _, body) = conn.score("broken", None, None).await.unwrap();
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(String::from_utf8_lossy(&body).contains("could not connect"));
    assert_eq!(blue.served(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_backend_instance_gives_no_client_visible_error() {
    let a = Backend::start(Behaviour::default()).await;
    let b = Backend::start(Behaviour::default()).await;
    let router = RouterProcess::start(
        &table("iris", &[deployment("blue", 100, 0, &[&a, &b], ROOMY)]),
        &[],
    )
    .await;
    let running = tokio::spawn(load(router.addr, "iris", 20_000, 16));
    wait_for("traffic on both instances", || {
        a.served() > 1000 && b.served() > 1000
    })
    .await;
    a.kill();
    let at_kill = a.served();
    let result = running.await.unwrap();
    assert_eq!(result.ok(), 20_000, "{:?}", result.statuses);
    assert!(
        a.served() - at_kill < 100,
        "the killed instance stopped serving"
    );
    assert!(b.served() > 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_graceful_drain_on_sigterm() {
    let slow = Backend::start(Behaviour {
        delay: Duration::from_millis(500),
    })
    .await;
    let mut router = RouterProcess::start(
        &table("iris", &[deployment("blue", 100, 0, &[&slow], ROOMY)]),
        &[],
    )
    .await;
    let mut conn = Conn::open(router.addr).await.unwrap();
    assert_eq!(conn.get("/healthz").await.unwrap().0, StatusCode::OK);
    assert_eq!(
        conn.score("iris", Some(KEY), None).await.unwrap().0,
        StatusCode::OK
    );
    let (_, _, metrics) = conn.get("/metrics").await.unwrap();
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains(
            r#"mlcompute_router_requests_total{class="2xx",deployment="blue",endpoint="iris"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains("mlcompute_router_request_duration_seconds_bucket"));
    // A request in flight when SIGTERM arrives still gets its answer.
    let addr = router.addr;
    let in_flight = tokio::spawn(async move {
        Conn::open(addr)
            .await
            .unwrap()
            .score("iris", Some(KEY), None)
            .await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    router.terminate();
    let (status, _, _) = in_flight.await.unwrap().unwrap();
    assert_eq!(status, StatusCode::OK);
    let exit = tokio::task::spawn_blocking(move || {
        let status = router.child.wait().unwrap();
        (status, router)
    })
    .await
    .unwrap();
    assert!(exit.0.success(), "{:?}", exit.0);
    assert!(
        Conn::open(addr).await.is_err(),
        "no new connections after drain"
    );
}

// ---------------------------------------------------------------------------------------------
// The shipped Python scoring server with a real score.py

const SCORE_PY: &str = r#"
import json, os

model = None

def init():
    global model
    with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.json")) as f:
        model = json.load(f)

def run(raw_data):
    data = json.loads(raw_data)["data"]
    if data == "boom":
        raise ValueError("the model cannot score boom")
    return {"prediction": [model["weight"] * x + model["bias"] for x in data]}
"#;

struct PythonServer {
    child: Child,
    addr: SocketAddr,
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn python_server(dir: &Path) -> PythonServer {
    let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/mlcompute_scoring_server.py");
    let models = dir.join("model");
    std::fs::create_dir_all(&models).unwrap();
    std::fs::write(models.join("model.json"), r#"{"weight": 2, "bias": 1}"#).unwrap();
    std::fs::write(dir.join("score.py"), SCORE_PY).unwrap();
    let port = free_port();
    let child = Command::new("python3")
        .arg(&server)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .env("AZUREML_ENTRY_SCRIPT", dir.join("score.py"))
        .env("AZUREML_MODEL_DIR", &models)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut conn) = Conn::open(addr).await
            && let Ok((StatusCode::OK, _, _)) = conn.get("/").await
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "python scoring server did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    PythonServer { child, addr }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_scoring_server_runs_a_real_score_py_behind_the_router() {
    let dir = TempDir::new("python");
    let python = python_server(&dir.0).await;
    let table = format!(
        "endpoints:\n  - name: iris\n    auth: {{ mode: key, primaryKey: {KEY}, secondaryKey: s2 }}\n    deployments:\n      - {{ name: blue, traffic: 100, backends: [{{address: \"{}\"}}] }}\n",
        python.addr
    );
    let router = RouterProcess::start(&table, &[]).await;
    let mut conn = Conn::open(router.addr).await.unwrap();
    // Liveness on the server itself, as a kubelet probe would see it.
    let mut direct = Conn::open(python.addr).await.unwrap();
    assert_eq!(direct.get("/").await.unwrap().0, StatusCode::OK);
    let (status, _, body) = conn.score("iris", Some(KEY), None).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer, serde_json::json!({"prediction": [3, 5, 7]}));
    // Several requests in a row reuse the pooled connection to the server.
    for _ in 0..20 {
        assert_eq!(
            conn.score("iris", Some(KEY), None).await.unwrap().0,
            StatusCode::OK
        );
    }

    // `mlcompute endpoint invoke` end to end.
    std::fs::write(dir.0.join("good.json"), r#"{"data": [0, 10]}"#).unwrap();
    std::fs::write(dir.0.join("bad.json"), r#"{"data": "boom"}"#).unwrap();
    let router_url = format!("http://{}", router.addr);
    let invoke = |file: &str, key: &str| {
        Command::new(BIN)
            .args(["endpoint", "invoke", "iris", "--data"])
            .arg(dir.0.join(file))
            .args([
                "--router",
                &router_url,
                "--key",
                key,
                "--deployment",
                "blue",
            ])
            .output()
            .unwrap()
    };
    let good = tokio::task::block_in_place(|| invoke("good.json", KEY));
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&good.stdout).unwrap();
    assert_eq!(printed, serde_json::json!({"prediction": [1, 21]}));

    // An exception in run() is a 500 with azmlinfsrv's generic message (the exception stays in
    // the server's log); the CLI exits non-zero with one line.
    let bad = tokio::task::block_in_place(|| invoke("bad.json", KEY));
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("500") && stderr.contains("An unexpected error occurred in scoring script"),
        "{stderr}"
    );
    assert!(!stderr.contains("cannot score boom"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    let denied = tokio::task::block_in_place(|| invoke("good.json", "wrong"));
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("401"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_scoring_server_refuses_a_script_without_run() {
    let dir = TempDir::new("python-bad");
    std::fs::write(dir.0.join("score.py"), "def init():\n    pass\n").unwrap();
    let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/mlcompute_scoring_server.py");
    let output = Command::new("python3")
        .arg(&server)
        .arg(dir.0.join("score.py"))
        .args(["--host", "127.0.0.1", "--port", &free_port().to_string()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("UserScriptFunctionNotFound") && stderr.contains("run()"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_polling_runs_while_requests_flow_and_sleeps_when_they_stop() {
    let blue = Backend::start(Behaviour::default()).await;
    let router = RouterProcess::start(
        &table("iris", &[deployment("blue", 100, 0, &[&blue], ROOMY)]),
        &["--busy-poll-us", "200", "--threads", "2"],
    )
    .await;
    let gauge = "mlcompute_router_busy_polling_threads";
    let polling = |addr: SocketAddr| async move {
        let (_, _, metrics) = Conn::open(addr)
            .await
            .unwrap()
            .get("/metrics")
            .await
            .unwrap();
        let metrics = String::from_utf8_lossy(&metrics).into_owned();
        counter_sum(&metrics, gauge, &[])
    };
    assert_eq!(polling(router.addr).await, 0.0, "asleep before any request");

    // While requests flow, serving threads poll; every request is still answered.
    let addr = router.addr;
    let traffic = tokio::spawn(async move { load(addr, "iris", 40_000, 8).await });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = 0.0;
    while seen == 0.0 && !traffic.is_finished() {
        assert!(
            Instant::now() < deadline,
            "no serving thread polled under load"
        );
        seen = polling(router.addr).await;
    }
    let result = traffic.await.unwrap();
    assert_eq!(result.ok(), 40_000, "{:?}", result.statuses);
    assert!(
        seen >= 1.0,
        "the load ended before a scrape saw a polling thread"
    );

    // Once requests stop, every thread goes back to sleeping.
    let deadline = Instant::now() + Duration::from_secs(20);
    while polling(router.addr).await != 0.0 {
        assert!(
            Instant::now() < deadline,
            "threads kept polling with no traffic"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Azure ML's HTTP semantics: methods, query strings, request ids, swagger, host form, curl

/// A request with a method, target and headers (`host` included when given).
fn request(
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &'static [u8],
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(Bytes::from_static(body))).unwrap()
}

fn message(body: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)));
    value["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message in {value}"))
        .to_owned()
}

fn is_uuid_v4(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && text.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit())
        && groups[2].starts_with('4')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_and_query_strings_pass_through_to_the_scoring_path() {
    let blue = Backend::start(Behaviour::default()).await;
    let router = RouterProcess::start(
        &table("iris", &[deployment("blue", 100, 0, &[&blue], ROOMY)]),
        &[],
    )
    .await;
    let mut conn = Conn::open(router.addr).await.unwrap();
    let auth = format!("Bearer {KEY}");
    let host = router.addr.to_string();
    for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"] {
        let (status, headers, _) = conn
            .send(request(
                method,
                "/api/v1/endpoint/iris/score?model=small&q=a%20b",
                &[("host", &host), ("authorization", &auth)],
                b"",
            ))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{method}");
        assert_eq!(headers["x-seen-method"], method);
        assert_eq!(
            headers["x-seen-uri"], "/score?model=small&q=a%20b",
            "{method}"
        );
        assert_eq!(headers["azureml-model-deployment"], "blue");
        // The key stays with the router.
        assert!(!headers.contains_key("x-seen-authorization"));
    }
    // Every method still needs the key...
    let (status, _, _) = conn
        .send(request(
            "GET",
            "/api/v1/endpoint/iris/score",
            &[("host", &host)],
            b"",
        ))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = conn
        .send(request(
            "OPTIONS",
            "/api/v1/endpoint/iris/score",
            &[("host", &host)],
            b"",
        ))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // ...except a CORS preflight, which browsers send without credentials: the instance answers.
    let (status, headers, _) = conn
        .send(request(
            "OPTIONS",
            "/api/v1/endpoint/iris/score",
            &[
                ("host", &host),
                ("origin", "https://app.example"),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "authorization,content-type",
                ),
            ],
            b"{\"data\": \"from a caller without a key\"}",
        ))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-seen-method"], "OPTIONS");
    assert_eq!(headers["x-seen-origin"], "https://app.example");
    // Without a key, nothing of the body reaches the script (a @rawhttp run() sees OPTIONS).
    assert_eq!(headers["x-seen-content-length"], "0");
    assert_eq!(blue.served(), 8);
    // The router's own routes stay as they are.
    let (status, _, _) = conn
        .send(request("POST", "/healthz", &[("host", &host)], b""))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_made_forwarded_and_echoed_as_azure_ml_does() {
    let blue = Backend::start(Behaviour::default()).await;
    let router = RouterProcess::start(
        &table("iris", &[deployment("blue", 100, 0, &[&blue], ROOMY)]),
        &[],
    )
    .await;
    let mut conn = Conn::open(router.addr).await.unwrap();
    let host = router.addr.to_string();
    let auth = format!("Bearer {KEY}");
    let score = |extra: &[(&str, &str)]| {
        let mut headers = vec![("host", host.as_str()), ("authorization", auth.as_str())];
        headers.extend_from_slice(extra);
        request("POST", "/api/v1/endpoint/iris/score", &headers, b"{}")
    };

    // None sent: the router makes a UUID, the instance gets it, the answer carries it.
    let (status, headers, _) = conn.send(score(&[])).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let id = headers["x-request-id"].to_str().unwrap().to_owned();
    assert!(is_uuid_v4(&id), "{id}");
    assert_eq!(headers["x-seen-x-request-id"], id.as_str());
    assert_eq!(headers["x-ms-request-id"], id.as_str());
    assert!(!headers.contains_key("x-ms-client-request-id"));
    let (_, again, _) = conn.send(score(&[])).await.unwrap();
    assert_ne!(again["x-request-id"], id.as_str(), "a new id per request");

    // The client's ids: kept, forwarded, echoed.
    let (_, headers, _) = conn
        .send(score(&[
            ("x-request-id", "req-1"),
            ("x-ms-client-request-id", "client-1"),
        ]))
        .await
        .unwrap();
    assert_eq!(headers["x-request-id"], "req-1");
    assert_eq!(headers["x-seen-x-request-id"], "req-1");
    assert_eq!(headers["x-seen-x-ms-client-request-id"], "client-1");
    assert_eq!(headers["x-ms-client-request-id"], "client-1");
    assert_eq!(headers["x-ms-request-id"], "client-1");

    // The router's own answers carry them too: a wrong key, an unknown endpoint.
    let (status, headers, body) = conn
        .send(request(
            "POST",
            "/api/v1/endpoint/iris/score",
            &[("host", &host), ("x-request-id", "req-401")],
            b"{}",
        ))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["x-request-id"], "req-401");
    assert!(message(&body).starts_with("unauthorized"));
    let (status, headers, _) = conn
        .send(request(
            "POST",
            "/api/v1/endpoint/nope/score",
            &[("host", &host)],
            b"{}",
        ))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(is_uuid_v4(headers["x-request-id"].to_str().unwrap()));

    // Over 100 characters: azmlinfsrv's 431 and message, before anything reaches the instance.
    let served = blue.served();
    let long = "x".repeat(101);
    let (status, headers, body) = conn.send(score(&[("x-request-id", &long)])).await.unwrap();
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(
        message(&body),
        "x-request-id must not exceed 100 characters"
    );
    assert!(!headers.contains_key("x-request-id"));
    let (status, headers, body) = conn
        .send(score(&[
            ("x-request-id", "ok"),
            ("x-ms-client-request-id", &long),
        ]))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(
        message(&body),
        "x-ms-request-id and x-ms-client-request-id must not exceed 100 characters"
    );
    assert_eq!(headers["x-request-id"], "ok");
    assert_eq!(blue.served(), served);
    let exactly = "y".repeat(100);
    let (status, _, _) = conn
        .send(score(&[("x-request-id", &exactly)]))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_comes_from_the_serving_deployment_with_its_query_string() {
    let blue = Backend::start(Behaviour::default()).await;
    let green = Backend::start(Behaviour::default()).await;
    let router = RouterProcess::start(
        &table(
            "iris",
            &[
                deployment("blue", 20, 0, &[&blue], ROOMY),
                deployment("green", 80, 0, &[&green], ROOMY),
            ],
        ),
        &[],
    )
    .await;
    let mut conn = Conn::open(router.addr).await.unwrap();
    let host = router.addr.to_string();
    let auth = format!("Bearer {KEY}");
    let green_port = green.addr.port().to_string();
    // Unpinned: the deployment with the largest share, every time.
    for _ in 0..10 {
        let (status, headers, _) = conn
            .send(request(
                "GET",
                "/api/v1/endpoint/iris/swagger.json?version=3",
                &[("host", &host), ("authorization", &auth)],
                b"",
            ))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-seen-uri"], "/swagger.json?version=3");
        assert_eq!(headers["x-backend"], green_port.as_str());
        assert_eq!(headers["azureml-model-deployment"], "green");
        assert!(headers.contains_key("x-request-id"));
    }
    // Pinned: that deployment's.
    let (_, headers, _) = conn
        .send(request(
            "GET",
            "/api/v1/endpoint/iris/swagger.json",
            &[
                ("host", &host),
                ("authorization", &auth),
                ("azureml-model-deployment", "blue"),
            ],
            b"",
        ))
        .await
        .unwrap();
    assert_eq!(headers["x-seen-uri"], "/swagger.json");
    assert_eq!(headers["x-backend"], blue.addr.port().to_string().as_str());
    // It needs the key, and takes GET (and HEAD, OPTIONS) only.
    let (status, _, _) = conn
        .send(request(
            "GET",
            "/api/v1/endpoint/iris/swagger.json",
            &[("host", &host)],
            b"",
        ))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, headers, body) = conn
        .send(request(
            "POST",
            "/api/v1/endpoint/iris/swagger.json",
            &[("host", &host), ("authorization", &auth)],
            b"{}",
        ))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "GET, HEAD, OPTIONS");
    assert!(message(&body).contains("GET"));
    assert_eq!(blue.served() + green.served(), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_form_routes_by_endpoint_name_under_configured_domains() {
    let blue = Backend::start(Behaviour::default()).await;
    let router = RouterProcess::start(
        &table("iris", &[deployment("blue", 100, 0, &[&blue], ROOMY)]),
        &["--host-domains", "inference.test,ml.example.com"],
    )
    .await;
    let mut conn = Conn::open(router.addr).await.unwrap();
    let auth = format!("Bearer {KEY}");
    let port = router.addr.port();
    for host in [
        format!("iris.inference.test:{port}"),
        "iris.ml.example.com".to_owned(),
        "IRIS.Inference.Test".to_owned(),
    ] {
        let (status, headers, _) = conn
            .send(request(
                "POST",
                "/score?verbose=1",
                &[("host", &host), ("authorization", &auth)],
                b"{}",
            ))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{host}");
        assert_eq!(headers["x-seen-uri"], "/score?verbose=1");
        assert!(headers.contains_key("x-request-id"));
        let (status, headers, _) = conn
            .send(request(
                "GET",
                "/swagger.json?version=3",
                &[("host", &host), ("authorization", &auth)],
                b"",
            ))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{host}");
        assert_eq!(headers["x-seen-uri"], "/swagger.json?version=3");
    }
    // The path form still works on any host.
    let (status, _, _) = conn
        .send(request(
            "POST",
            "/api/v1/endpoint/iris/score",
            &[("host", "iris.inference.test"), ("authorization", &auth)],
            b"{}",
        ))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    // A host under no configured domain: a clear 404.
    let (status, headers, body) = conn
        .send(request(
            "POST",
            "/score",
            &[("host", "iris.elsewhere.net"), ("authorization", &auth)],
            b"{}",
        ))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(headers.contains_key("x-request-id"));
    let text = message(&body);
    assert!(
        text.contains("iris.elsewhere.net") && text.contains("inference.test"),
        "{text}"
    );
    // An unknown endpoint under a configured domain: the same 401 as on the path form.
    let (status, _, _) = conn
        .send(request(
            "POST",
            "/score",
            &[("host", "nope.inference.test"), ("authorization", &auth)],
            b"{}",
        ))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(blue.served(), 7);
}

/// Runs `curl` with these arguments; returns its exit status, stdout and the response headers
/// it dumped (`--dump-header`, which does not change the request).
fn curl(args: &[String], dir: &Path) -> (bool, String, String) {
    let headers = dir.join("headers.txt");
    let output = Command::new("curl")
        .args(args)
        .arg("--dump-header")
        .arg(&headers)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        std::fs::read_to_string(&headers).unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_as_azure_mls_documentation_calls_an_endpoint_path_and_host_form() {
    let blue = Backend::start(Behaviour::default()).await;
    let green = Backend::start(Behaviour::default()).await;
    let router = RouterProcess::start(
        &table(
            "iris",
            &[
                deployment("blue", 0, 0, &[&blue], ROOMY),
                deployment("green", 100, 0, &[&green], ROOMY),
            ],
        ),
        &["--host-domains", "inference.test"],
    )
    .await;
    let dir = TempDir::new("curl");
    std::fs::write(dir.0.join("request.json"), r#"{"data": [[1, 2, 3, 4]]}"#).unwrap();
    let port = router.addr.port();
    let path_form = format!("http://127.0.0.1:{port}/api/v1/endpoint/iris/score");
    let host_form = format!("http://iris.inference.test:{port}/score");
    // The documented call, word for word; the host form resolves the name to 127.0.0.1.
    let documented = |scoring_uri: &str| -> Vec<String> {
        [
            "--request",
            "POST",
            scoring_uri,
            "--header",
            &format!("Authorization: Bearer {KEY}"),
            "--header",
            "Content-Type: application/json",
            "--header",
            "azureml-model-deployment: blue",
            "--data",
            "@request.json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let mut host_args = documented(&host_form);
    host_args.extend([
        "--resolve".to_owned(),
        format!("iris.inference.test:{port}:127.0.0.1"),
    ]);
    for (form, args) in [("path", documented(&path_form)), ("host", host_args)] {
        let args2 = args.clone();
        let dir_path = dir.0.clone();
        let (ok, stdout, headers) = tokio::task::spawn_blocking(move || curl(&args2, &dir_path))
            .await
            .unwrap();
        assert!(ok, "{form} form: curl failed");
        assert!(
            headers.starts_with("HTTP/1.1 200"),
            "{form} form:\n{headers}"
        );
        // The backend's answer: the 24-byte request.json arrived whole.
        assert_eq!(stdout, r#"{"echo":24}"#, "{form} form");
        let lower = headers.to_ascii_lowercase();
        for header in [
            "azureml-model-deployment: blue",
            "x-request-id: ",
            "x-ms-request-id: ",
            "x-seen-method: post",
            "x-seen-uri: /score",
        ] {
            assert!(
                lower.contains(header),
                "{form} form: no {header:?} in\n{headers}"
            );
        }
    }
    assert_eq!((blue.served(), green.served()), (2, 0));
}

// ---------------------------------------------------------------------------------------------
// Autoscaling: the load report and holding requests for a deployment without instances

async fn load_report(addr: SocketAddr) -> mlcompute::contract::load::DeploymentLoad {
    let mut conn = Conn::open(addr).await.unwrap();
    let (status, _, body) = conn
        .get(mlcompute::contract::load::LOAD_PATH)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let report: mlcompute::contract::load::LoadReport = serde_json::from_slice(&body).unwrap();
    report
        .deployment("slow", "blue")
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_report_counts_requests_in_flight_and_queued_and_their_seconds() {
    let backend = Backend::start(Behaviour {
        delay: Duration::from_millis(800),
    })
    .await;
    let settings =
        "maxConcurrentRequestsPerInstance: 1, maxQueueWaitMs: 5000, requestTimeoutMs: 5000";
    let router = RouterProcess::start(
        &table("slow", &[deployment("blue", 100, 0, &[&backend], settings)]),
        &[],
    )
    .await;
    let addr = router.addr;
    let requests: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(async move {
                let mut conn = Conn::open(addr).await.unwrap();
                conn.score("slow", Some(KEY), None).await.unwrap().0
            })
        })
        .collect();
    // One holds the instance's only slot, the other waits for it.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = load_report(addr).await;
        if (now.in_flight, now.queued) == (1, 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never saw 1 in flight + 1 queued: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for r in requests {
        assert_eq!(r.await.unwrap(), StatusCode::OK);
    }
    let after = load_report(addr).await;
    assert_eq!((after.in_flight, after.queued, after.requests), (0, 0, 2));
    // Each request was in flight for at least the backend's 0.8 s; the second also waited for
    // the first to finish.
    assert!(after.busy_seconds >= 1.6, "{after:?}");
    assert!(after.queued_seconds >= 0.7, "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_a_deployment_without_instances_waits_for_the_first_one() {
    let backend = Backend::start(Behaviour::default()).await;
    let held =
        "maxConcurrentRequestsPerInstance: 1, maxQueueWaitMs: 20000, requestTimeoutMs: 30000";
    let router = RouterProcess::start(
        &table("slow", &[deployment("blue", 100, 0, &[], held)]),
        &[],
    )
    .await;
    let addr = router.addr;
    let request = tokio::spawn(async move {
        let mut conn = Conn::open(addr).await.unwrap();
        conn.score("slow", Some(KEY), None).await.unwrap()
    });
    // Held, and reported queued: that is what makes the autoscaler start an instance.
    let deadline = Instant::now() + Duration::from_secs(5);
    while load_report(addr).await.queued != 1 {
        assert!(
            Instant::now() < deadline,
            "the held request was not reported queued"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!request.is_finished());
    router.write_table(&table(
        "slow",
        &[deployment("blue", 100, 0, &[&backend], held)],
    ));
    let (status, headers, _) = request.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["x-backend"],
        backend.addr.port().to_string().as_str()
    );
    assert_eq!(backend.served(), 1);

    // No instance within the queue wait: 503; within the request timeout (the shorter): 504.
    for (settings, expected, reason) in [
        (
            "maxQueueWaitMs: 300, requestTimeoutMs: 5000",
            StatusCode::SERVICE_UNAVAILABLE,
            "no_ready_instance",
        ),
        (
            "maxQueueWaitMs: 5000, requestTimeoutMs: 300",
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
        ),
    ] {
        router.write_table(&table("slow", &[deployment("blue", 100, 0, &[], settings)]));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut conn = Conn::open(addr).await.unwrap();
            let (status, _, body) = conn.score("slow", Some(KEY), None).await.unwrap();
            if status == expected {
                let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(body["reason"], reason, "{body}");
                break;
            }
            // The table is re-read by polling: the first answers may come from the old one.
            assert!(Instant::now() < deadline, "still {status} for {settings}");
        }
    }
}
