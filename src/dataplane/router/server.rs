//! The router's HTTP side: routes, the scoring path, table swaps and graceful drain.
//!
//! Routes (docs/router.md has the status codes and headers):
//! - `/api/v1/endpoint/{endpoint}/score`: the scoring URI (the shape of Azure ML's Kubernetes
//!   router), any method, query string kept; optional `azureml-model-deployment` header pins a
//!   deployment. `/api/v1/endpoint/{endpoint}/swagger.json`: the serving deployment's OpenAPI
//!   document. With host domains, also `/score` and `/swagger.json` on `{endpoint}.{domain}`
//!   ([`super::address`]). Request ids as in [`super::request_id`].
//! - `POST /api/v1/batch/{endpoint}/invoke`: creates a BatchJob ([`super::batch_invoke`]; with
//!   `--cluster` only).
//! - `GET /healthz`: the process is up. `GET /readyz`: a table is loaded and we are not
//!   draining. `GET /metrics`: Prometheus text format. `GET /load`: demand per deployment as
//!   JSON, for the operator's autoscaler ([`crate::contract::load`]).

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tokio::{
    net::{TcpListener, TcpSocket},
    sync::{oneshot, watch},
};
use tracing::Instrument;

use super::{
    address::{self, Addressed, Call, HostDomains},
    auth::Authenticator,
    batch_invoke::{self, BatchInvoker},
    busy_poll,
    cold::{self, ColdWait},
    metrics::{Metrics, NONE, RouteMetrics},
    mirror::{self, MirrorJob},
    pick::percent_roll,
    proxy::{self, Outgoing, ProxyError, Target, enter_serving_thread, strip_hop_by_hop},
    reply::{self, ErrorBody},
    request_id::RequestIds,
    routes::{Compiler, Deployment, Endpoint, Routes},
    table::{RoutingTable, TableError},
};
use crate::contract::{load::LOAD_PATH, router_http};

/// The pinning header, as in Azure ML.
pub const DEPLOYMENT_HEADER: HeaderName = HeaderName::from_static(router_http::PINNING_HEADER);

/// Tunables of the HTTP side.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Copies waiting to be mirrored (per serving thread) before new ones are dropped.
    pub mirror_queue: usize,
    /// Copies being delivered at once (per serving thread).
    pub mirror_workers: usize,
    /// The largest request body accepted.
    pub max_body_bytes: usize,
    /// Poll for I/O without sleeping until this long after the last scoring request (zero: off).
    /// See [`super::busy_poll`].
    pub busy_poll: Duration,
    /// Domains under which `{endpoint}.{domain}` serves `/score` and `/swagger.json`.
    pub host_domains: HostDomains,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            mirror_queue: 1024,
            mirror_workers: 64,
            max_body_bytes: 64 * 1024 * 1024,
            busy_poll: Duration::ZERO,
            host_domains: HostDomains::default(),
        }
    }
}

/// The shared state of a running router.
#[derive(Debug)]
pub struct Router {
    routes: ArcSwap<Routes>,
    /// Ticks on every table swap: wakes requests held for a first instance ([`cold`]).
    tables: watch::Sender<u64>,
    compiler: Compiler,
    metrics: Metrics,
    unknown: RouteMetrics,
    mirror_queue: usize,
    mirror_workers: usize,
    loaded: AtomicBool,
    draining: AtomicBool,
    max_body_bytes: usize,
    busy_poll: Duration,
    host_domains: HostDomains,
    batch: Option<Arc<BatchInvoker>>,
}

impl Router {
    /// A router with an empty table (not ready until a table is applied), serving batch invokes
    /// when given an invoker. Needs a Tokio runtime.
    pub fn new(
        metrics: Metrics,
        options: &ServerOptions,
        batch: Option<Arc<BatchInvoker>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            routes: ArcSwap::from_pointee(Routes::default()),
            tables: watch::Sender::new(0),
            compiler: Compiler::new(metrics.clone()),
            unknown: metrics.route(NONE, NONE),
            metrics,
            mirror_queue: options.mirror_queue,
            mirror_workers: options.mirror_workers,
            loaded: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            max_body_bytes: options.max_body_bytes,
            busy_poll: options.busy_poll,
            host_domains: options.host_domains.clone(),
            batch,
        })
    }

    /// Validates, compiles and swaps in a table. Requests in flight keep the old one.
    pub fn apply(&self, table: &RoutingTable) -> Result<(), TableError> {
        if let Err(error) = table.validate() {
            self.metrics.reload(false);
            return Err(error);
        }
        let routes = self.compiler.compile(table);
        tracing::debug!(endpoints = routes.len(), "routing table applied");
        self.routes.store(Arc::new(routes));
        self.tables
            .send_modify(|version| *version = version.wrapping_add(1));
        self.loaded.store(true, Ordering::Release);
        self.metrics.reload(true);
        Ok(())
    }

    fn ready(&self) -> bool {
        self.loaded.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }

    /// Answers one request.
    pub async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let (endpoint, call) = match address::classify(&request, &self.host_domains) {
            Addressed::Endpoint { name, call } => {
                let routes = self.routes.load();
                (Ok(routes.endpoint(&name).cloned()), call)
            }
            Addressed::UnknownHost(host) => (
                Err(format!(
                    "no endpoint at host {host:?}: /score and /swagger.json are served at <endpoint>.<domain> for domain {}, or use /api/v1/endpoint/<endpoint>/score",
                    self.host_domains.list()
                )),
                Call::Score,
            ),
            Addressed::Elsewhere => return self.own_route(request).await,
        };
        if call == Call::Score {
            busy_poll::request_arrived();
        }
        let ids = match RequestIds::read(request.headers()) {
            Ok(ids) => ids,
            Err(too_long) => return too_long.response(),
        };
        let endpoint = match endpoint {
            Ok(endpoint) => endpoint,
            Err(unknown_host) => {
                let mut response = reply::message(StatusCode::NOT_FOUND, &unknown_host);
                ids.stamp(response.headers_mut());
                return response;
            }
        };
        let span = tracing::debug_span!(
            "request",
            endpoint = endpoint.as_ref().map(|e| e.name.as_str()),
            request_id = ids.request_id.to_str().unwrap_or("-"),
        );
        let started = Instant::now();
        let method = request.method().clone();
        let mut response = self
            .call(endpoint, request, &ids, call)
            .instrument(span.clone())
            .await;
        ids.stamp(response.headers_mut());
        // The access log line, inside the request's span (its request id and endpoint).
        span.in_scope(|| {
            tracing::debug!(
                %method,
                ?call,
                status = response.status().as_u16(),
                micros = started.elapsed().as_micros() as u64,
                "answered"
            );
        });
        response
    }

    /// The router's own routes: batch invoke, health, metrics.
    async fn own_route(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path();
        if let Some(name) = router_http::invoke_endpoint(path) {
            return self.batch_invoke(name.to_owned(), request).await;
        }
        match (request.method(), path) {
            (&Method::GET, "/healthz") => reply::text(StatusCode::OK, "ok\n"),
            (&Method::GET, "/readyz") if self.ready() => reply::text(StatusCode::OK, "ready\n"),
            (&Method::GET, "/readyz") => {
                reply::text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
            (&Method::GET, "/metrics") => {
                let mut response = reply::text(StatusCode::OK, self.metrics.render());
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                response
            }
            (&Method::GET, LOAD_PATH) => {
                let report = self.compiler.loads().report();
                let body = serde_json::to_vec(&report).unwrap_or_else(|_| b"{}".to_vec());
                reply::json(StatusCode::OK, Bytes::from(body))
            }
            _ => reply::error(
                StatusCode::NOT_FOUND,
                &ErrorBody {
                    message: "no such route: score at /api/v1/endpoint/{endpoint}/score, swagger at /api/v1/endpoint/{endpoint}/swagger.json",
                    endpoint: None,
                    deployment: None,
                    reason: "no_route",
                },
            ),
        }
    }

    async fn batch_invoke(
        &self,
        endpoint: String,
        request: Request<Incoming>,
    ) -> Response<Full<Bytes>> {
        let Some(invoker) = &self.batch else {
            return reply::error(
                StatusCode::NOT_FOUND,
                &ErrorBody {
                    message: "batch invoke needs a router that reads the cluster (mlcompute router --cluster)",
                    endpoint: None,
                    deployment: None,
                    reason: "no_route",
                },
            );
        };
        if request.method() != Method::POST {
            return reply::post_only("batch invoke takes POST");
        }
        let (parts, body) = request.into_parts();
        match Limited::new(body, batch_invoke::MAX_BODY_BYTES)
            .collect()
            .await
        {
            Ok(body) => {
                invoker
                    .handle(&endpoint, &parts.headers, body.to_bytes())
                    .await
            }
            Err(_) => reply::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &ErrorBody {
                    message: "batch invoke body too large or unreadable (a job spec, at most 1 MiB)",
                    endpoint: None,
                    deployment: None,
                    reason: "body_too_large",
                },
            ),
        }
    }

    /// A call to an endpoint: scoring (any method, forwarded with its query string to the
    /// scoring path) or its swagger document.
    async fn call(
        &self,
        endpoint: Option<Arc<Endpoint>>,
        request: Request<Incoming>,
        ids: &RequestIds,
        call: Call,
    ) -> Response<Full<Bytes>> {
        let started = Instant::now();
        let Some(endpoint) = endpoint else {
            // Same work and same answer as a wrong key: nothing tells which endpoints exist.
            let _ = Authenticator::unknown_endpoint().allows(request.headers());
            self.unknown.observe(401, started.elapsed().as_secs_f64());
            return reply::unauthorized();
        };
        // A browser's CORS preflight never carries credentials (Fetch standard), so it reaches
        // the instance, whose CORS settings answer it; every other request must authenticate.
        // An anonymous preflight goes on without its body: a @rawhttp script's run() sees
        // OPTIONS too, and a caller without a key must not hand it data.
        let authenticated = endpoint.auth.allows(request.headers());
        if !authenticated && !is_cors_preflight(&request) {
            endpoint
                .metrics
                .observe(401, started.elapsed().as_secs_f64());
            return reply::unauthorized();
        }
        if call == Call::Swagger
            && !matches!(
                *request.method(),
                Method::GET | Method::HEAD | Method::OPTIONS
            )
        {
            return reply::method_not_allowed("the swagger URI takes GET", "GET, HEAD, OPTIONS");
        }
        let pinned = request.headers().get(&DEPLOYMENT_HEADER);
        let (deployment, live) = match choose(&endpoint, pinned, call) {
            Ok(choice) => choice,
            Err(response) => {
                endpoint
                    .metrics
                    .observe(response.status().as_u16(), started.elapsed().as_secs_f64());
                return response;
            }
        };
        deployment.load.arrived();
        let (mut parts, body) = request.into_parts();
        let body = match Limited::new(body, self.max_body_bytes).collect().await {
            Ok(_) if !authenticated => Bytes::new(),
            Ok(collected) => collected.to_bytes(),
            Err(error) => {
                let (status, message, reason) =
                    if error.downcast_ref::<LengthLimitError>().is_some() {
                        (
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "request body too large",
                            "body_too_large",
                        )
                    } else {
                        (
                            StatusCode::BAD_REQUEST,
                            "reading the request body failed",
                            "body_read",
                        )
                    };
                let response = deployment_error(status, message, reason, &deployment);
                deployment
                    .metrics
                    .observe(status.as_u16(), started.elapsed().as_secs_f64());
                return response;
            }
        };
        let deployment = if deployment.instances.is_empty() {
            match cold::first_instance(&self.routes, self.tables.subscribe(), &deployment).await {
                Ok(ready) => ready,
                Err(ran_out) => {
                    let response = cold_error(ran_out, &deployment);
                    deployment
                        .metrics
                        .observe(response.status().as_u16(), started.elapsed().as_secs_f64());
                    return response;
                }
            }
        } else {
            deployment
        };
        ids.forward(&mut parts.headers);
        let query = parts.uri.query();
        let target = match call {
            Call::Score => Target::scoring(query),
            Call::Swagger => Target::Path(match query {
                Some(query) => format!("{}?{query}", router_http::HOST_SWAGGER_PATH).into(),
                None => router_http::HOST_SWAGGER_PATH.into(),
            }),
        };
        let outgoing = Arc::new(Outgoing::new(parts.method, parts.headers, body).to(target));
        if live
            && let Some((mirror, percent)) = &endpoint.mirror
            && percent_roll() < *percent
        {
            mirror::offer_local(MirrorJob {
                deployment: mirror.clone(),
                outgoing: outgoing.clone(),
            });
        }
        let response = match proxy::forward(&deployment, &outgoing).await {
            Ok(answer) => {
                let (mut parts, body) = answer.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                parts
                    .headers
                    .insert(DEPLOYMENT_HEADER, deployment.name_header.clone());
                Response::from_parts(parts, Full::new(body))
            }
            Err(error) => proxy_error(&error, &deployment),
        };
        deployment
            .metrics
            .observe(response.status().as_u16(), started.elapsed().as_secs_f64());
        response
    }
}

/// Whether `request` is a CORS preflight: `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`, which browsers send without credentials.
fn is_cors_preflight<B>(request: &Request<B>) -> bool {
    request.method() == Method::OPTIONS
        && request.headers().contains_key(header::ORIGIN)
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The deployment for a request: pinned by header, else the weighted split (for the swagger
/// document: the deployment with the largest share, so it does not change from one request to
/// the next). `true` when the request is live scoring traffic (only that is mirrored, as in
/// Azure ML).
#[allow(clippy::result_large_err)]
fn choose(
    endpoint: &Endpoint,
    pinned: Option<&HeaderValue>,
    call: Call,
) -> Result<(Arc<Deployment>, bool), Response<Full<Bytes>>> {
    if let Some(name) = pinned {
        return match endpoint.deployment(name.as_bytes()) {
            Some(deployment) => Ok((deployment.clone(), false)),
            None => Err(reply::error(
                StatusCode::NOT_FOUND,
                &ErrorBody {
                    message: &format!(
                        "endpoint has no deployment named {:?} (from the azureml-model-deployment header)",
                        String::from_utf8_lossy(name.as_bytes())
                    ),
                    endpoint: Some(&endpoint.name),
                    deployment: None,
                    reason: "no_such_deployment",
                },
            )),
        };
    }
    let index = match call {
        Call::Score => endpoint.split.choose(percent_roll()),
        Call::Swagger => endpoint.primary,
    };
    match index {
        Some(index) => Ok((endpoint.deployments[index].clone(), call == Call::Score)),
        // Azure ML answers 404 when no deployment has a positive weight and none is pinned.
        None => Err(reply::error(
            StatusCode::NOT_FOUND,
            &ErrorBody {
                message: "endpoint has no deployment with traffic: set traffic, or pin one with the azureml-model-deployment header",
                endpoint: Some(&endpoint.name),
                deployment: None,
                reason: "no_traffic",
            },
        )),
    }
}

fn proxy_error(error: &ProxyError, deployment: &Deployment) -> Response<Full<Bytes>> {
    let message = match error {
        ProxyError::NoReadyInstance => {
            "service unavailable: the deployment has no ready instance".to_owned()
        }
        ProxyError::Busy(busy) => format!(
            "service unavailable: {busy}; each instance serves max_concurrent_requests_per_instance at once, and requests wait at most max_queue_wait_ms for one"
        ),
        ProxyError::Connect { instances, source } => {
            format!("bad gateway: could not connect to any of {instances} instances ({source})")
        }
        ProxyError::Timeout { timeout_ms } => {
            format!(
                "gateway timeout: the deployment did not answer within request_timeout_ms = {timeout_ms}"
            )
        }
        ProxyError::Upstream(source) => {
            format!("bad gateway: the instance broke the exchange ({source})")
        }
    };
    tracing::debug!(deployment = %deployment.name, category = error.category(), "{message}");
    deployment_error(error.status(), &message, error.category(), deployment)
}

/// The answer to a request held for a first instance that never came ([`cold`]).
fn cold_error(ran_out: ColdWait, deployment: &Deployment) -> Response<Full<Bytes>> {
    let (wait, _) = cold::budget(deployment);
    let (status, message, reason) = match ran_out {
        ColdWait::QueueWait => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "service unavailable: no ready instance within max_queue_wait_ms = {} (the deployment is scaled to zero, starting or failing)",
                wait.as_millis()
            ),
            "no_ready_instance",
        ),
        ColdWait::Timeout => (
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "gateway timeout: no ready instance within request_timeout_ms = {} (the deployment is scaled to zero, starting or failing)",
                wait.as_millis()
            ),
            "timeout",
        ),
    };
    deployment_error(status, &message, reason, deployment)
}

fn deployment_error(
    status: StatusCode,
    message: &str,
    reason: &str,
    deployment: &Deployment,
) -> Response<Full<Bytes>> {
    let mut response = reply::error(
        status,
        &ErrorBody {
            message,
            endpoint: Some(&deployment.endpoint),
            deployment: Some(&deployment.name),
            reason,
        },
    );
    response
        .headers_mut()
        .insert(DEPLOYMENT_HEADER, deployment.name_header.clone());
    response
}

/// Serves on `threads` threads, each with its own single-threaded runtime and its own
/// `SO_REUSEPORT` listener on `listen` (the kernel spreads connections over them), so a request
/// never crosses threads. Returns the bound address once every thread listens, and a handle
/// that finishes when they have all drained after `shutdown`.
pub async fn serve(
    router: Arc<Router>,
    listen: SocketAddr,
    threads: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let (stop, stopped) = watch::channel(false);
    let mut addr = listen;
    let mut finished = Vec::new();
    for index in 0..threads.max(1) {
        let (bound, listening) = oneshot::channel();
        let (done, finish) = oneshot::channel::<()>();
        let (router, stopped) = (router.clone(), stopped.clone());
        std::thread::Builder::new()
            .name(format!("router-{index}"))
            .spawn(move || serving_thread(index, addr, router, stopped, drain, bound, done))?;
        addr = listening
            .await
            .map_err(|_| std::io::Error::other("serving thread ended before listening"))??;
        finished.push(finish);
    }
    let handle = tokio::spawn(async move {
        shutdown.await;
        router.draining.store(true, Ordering::Release);
        tracing::info!(
            drain_seconds = drain.as_secs_f64(),
            "draining: no new connections, finishing open requests"
        );
        let _ = stop.send(true);
        for finish in finished {
            let _ = finish.await;
        }
    });
    Ok((addr, handle))
}

fn serving_thread(
    index: usize,
    addr: SocketAddr,
    router: Arc<Router>,
    stopped: watch::Receiver<bool>,
    drain: Duration,
    bound: oneshot::Sender<std::io::Result<SocketAddr>>,
    _done: oneshot::Sender<()>,
) {
    enter_serving_thread(index);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = bound.send(Err(error));
            return;
        }
    };
    runtime.block_on(async move {
        let listener = match reuseport_listener(addr) {
            Ok(listener) => listener,
            Err(error) => {
                let _ = bound.send(Err(error));
                return;
            }
        };
        mirror::start_local(router.mirror_queue, router.mirror_workers);
        if !router.busy_poll.is_zero() {
            tokio::spawn(busy_poll::poll_while_busy(
                router.busy_poll,
                router.metrics.busy_polling(),
            ));
        }
        let _ = bound.send(listener.local_addr());
        accept_loop(router, listener, stopped, drain).await;
    });
}

fn reuseport_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Accepts connections until told to stop, then stops accepting and lets open requests finish
/// for at most `drain`.
async fn accept_loop(
    router: Arc<Router>,
    listener: TcpListener,
    mut stopped: watch::Receiver<bool>,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).keep_alive(true);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let router = router.clone();
                    let service = service_fn(move |request| {
                        let router = router.clone();
                        async move { Ok::<_, Infallible>(router.handle(request).await) }
                    });
                    let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                    tokio::spawn(async move {
                        if let Err(error) = connection.await {
                            tracing::debug!(%peer, %error, "client connection ended with an error");
                        }
                    });
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            _ = stopped.wait_for(|stop| *stop) => break,
        }
    }
    drop(listener);
    match tokio::time::timeout(drain, graceful.shutdown()).await {
        Ok(()) => tracing::debug!("serving thread drained"),
        Err(_) => tracing::warn!("drain timeout: closing the connections still open"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::router_http::scoring_endpoint;

    #[test]
    fn scoring_paths() {
        assert_eq!(
            scoring_endpoint("/api/v1/endpoint/iris/score"),
            Some("iris")
        );
        assert_eq!(scoring_endpoint("/api/v1/endpoint//score"), None);
        assert_eq!(scoring_endpoint("/api/v1/endpoint/a/b/score"), None);
        assert_eq!(scoring_endpoint("/api/v1/endpoint/iris"), None);
    }

    fn endpoint(deployments: &str) -> Arc<Endpoint> {
        let table = RoutingTable::parse(&format!(
            "endpoints:\n  - name: e\n    deployments:\n{deployments}"
        ))
        .unwrap();
        let routes = Compiler::new(Metrics::new().unwrap()).compile(&table);
        routes.endpoint("e").unwrap().clone()
    }

    fn chosen(result: Result<(Arc<Deployment>, bool), Response<Full<Bytes>>>) -> (String, bool) {
        let (deployment, live) = result.unwrap();
        (deployment.name.clone(), live)
    }

    #[test]
    fn choosing_a_deployment_for_scoring_and_for_swagger() {
        let split = endpoint(
            "      - { name: blue, traffic: 30, backends: [] }\n      - { name: green, traffic: 70, backends: [] }\n      - { name: dark, backends: [] }\n",
        );
        let dark = HeaderValue::from_static("dark");
        // Pinned: that deployment, not live traffic (not mirrored), for either call.
        for call in [Call::Score, Call::Swagger] {
            assert_eq!(
                chosen(choose(&split, Some(&dark), call)),
                ("dark".into(), false)
            );
        }
        // Swagger without a pin: always the largest share.
        for _ in 0..20 {
            assert_eq!(
                chosen(choose(&split, None, Call::Swagger)),
                ("green".into(), false)
            );
        }
        let (name, live) = chosen(choose(&split, None, Call::Score));
        assert!(live && (name == "blue" || name == "green"), "{name}");
        // An unknown pin, and no positive weight without a pin: 404, as Azure ML answers.
        let purple = HeaderValue::from_static("purple");
        let unknown = choose(&split, Some(&purple), Call::Score).unwrap_err();
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
        let idle = endpoint("      - { name: blue, backends: [] }\n");
        for call in [Call::Score, Call::Swagger] {
            assert_eq!(
                choose(&idle, None, call).unwrap_err().status(),
                StatusCode::NOT_FOUND
            );
        }
    }

    #[test]
    fn cors_preflights_are_told_apart_from_other_options_requests() {
        let request = |headers: &[(&str, &str)]| {
            let mut builder = Request::options("/api/v1/endpoint/e/score");
            for (name, value) in headers {
                builder = builder.header(*name, *value);
            }
            builder.body(()).unwrap()
        };
        assert!(is_cors_preflight(&request(&[
            ("origin", "https://app.example"),
            ("access-control-request-method", "POST"),
        ])));
        assert!(!is_cors_preflight(&request(&[(
            "origin",
            "https://app.example"
        )])));
        assert!(!is_cors_preflight(&request(&[])));
        let post = Request::post("/")
            .header("origin", "x")
            .header("access-control-request-method", "POST")
            .body(())
            .unwrap();
        assert!(!is_cors_preflight(&post));
    }
}
