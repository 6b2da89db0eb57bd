//! Forwarding one request to one deployment: keep-alive connection pools per instance,
//! concurrency slots, request timeout, and retry on another instance when connecting fails.
//!
//! Bodies are buffered (scoring payloads are small JSON documents and a mirror copy needs the
//! same bytes), which lets a request that never reached an instance be sent again elsewhere.

use std::{
    borrow::Cow,
    cell::Cell,
    io,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method, Response, header};
use tokio::time::{Duration, Instant};

use super::{
    limit::{Busy, acquire_any},
    pick::instance_order,
    routes::{Deployment, Instance},
    upstream::{Connection, ExchangeError, request_head},
};

type Sender = Connection;

/// Idle connections kept per instance.
const MAX_IDLE_PER_INSTANCE: usize = 512;

/// A request to forward: everything but the destination.
#[derive(Debug)]
pub struct Outgoing {
    /// The client's method.
    pub method: Method,
    /// The client's headers, minus hop-by-hop headers, `Host` and `Authorization`.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// Where on the instance it goes.
    pub target: Target,
}

/// Where on an instance a request goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Target {
    /// The deployment's scoring path.
    #[default]
    Scoring,
    /// The deployment's scoring path with the client's query string (without the `?`).
    ScoringWithQuery(Box<str>),
    /// This path and query, whatever the deployment (the swagger document).
    Path(Box<str>),
}

impl Target {
    /// The scoring path with `query` (none when empty), as the client sent it.
    pub fn scoring(query: Option<&str>) -> Self {
        match query {
            Some(query) if !query.is_empty() => Self::ScoringWithQuery(query.into()),
            _ => Self::Scoring,
        }
    }

    /// The path and query on an instance of `deployment`.
    pub fn path_on<'a>(&'a self, deployment: &'a Deployment) -> Cow<'a, str> {
        let scoring = || {
            deployment
                .scoring_path
                .path_and_query()
                .map_or("/", |p| p.as_str())
        };
        match self {
            Self::Scoring => Cow::Borrowed(scoring()),
            Self::ScoringWithQuery(query) => {
                // A scoring path with a query of its own keeps it, and the client's follows.
                let joint = if deployment.scoring_path.query().is_some() {
                    '&'
                } else {
                    '?'
                };
                Cow::Owned(format!("{}{joint}{query}", scoring()))
            }
            Self::Path(path) => Cow::Borrowed(path),
        }
    }
}

impl Outgoing {
    /// Keeps the end-to-end headers of a client request; it goes to the scoring path.
    pub fn new(method: Method, mut headers: HeaderMap, body: Bytes) -> Self {
        strip_hop_by_hop(&mut headers);
        headers.remove(header::HOST);
        headers.remove(header::AUTHORIZATION);
        // The body is sent whole, so the instance never needs to say "100 Continue".
        headers.remove(header::EXPECT);
        Self {
            method,
            headers,
            body,
            target: Target::Scoring,
        }
    }

    /// The same request, to `target` on the instance.
    pub fn to(self, target: Target) -> Self {
        Self { target, ..self }
    }

    /// The request head for one instance of `deployment`; `extra` adds one header.
    pub(super) fn head(
        &self,
        deployment: &Deployment,
        instance: &Instance,
        extra: Option<(&str, &str)>,
    ) -> Vec<u8> {
        request_head(
            &self.method,
            &self.target.path_on(deployment),
            &instance.host,
            &self.headers,
            extra,
            self.body.len(),
        )
    }

    pub(super) fn is_head(&self) -> bool {
        self.method == Method::HEAD
    }
}

/// What went wrong forwarding a request.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The deployment has no ready instance.
    #[error("deployment has no ready instance")]
    NoReadyInstance,
    /// Every instance stayed at its concurrency limit for the queue wait.
    #[error("no instance was free within the queue wait")]
    Busy(#[source] Busy),
    /// No instance accepted a connection.
    #[error("could not connect to any of {instances} instances")]
    Connect {
        /// Instances tried.
        instances: usize,
        /// The last failure.
        #[source]
        source: io::Error,
    },
    /// The instance did not answer within the request timeout.
    #[error("no answer within the request timeout of {timeout_ms} ms")]
    Timeout {
        /// The timeout that expired.
        timeout_ms: u128,
    },
    /// The instance broke the exchange (closed, reset, malformed answer).
    #[error("the instance failed the exchange")]
    Upstream(#[source] ExchangeError),
}

impl ProxyError {
    /// A bounded name for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Self::NoReadyInstance => "no_ready_instance",
            Self::Busy(_) => "busy",
            Self::Connect { .. } => "connect",
            Self::Timeout { .. } => "timeout",
            Self::Upstream(_) => "upstream",
        }
    }

    /// The status the client gets: Azure ML's Kubernetes online endpoints answer 503 when the
    /// queue wait (`max_queue_wait_ms`) runs out, 504 at the request timeout (docs/router.md).
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            Self::NoReadyInstance | Self::Busy(_) => S::SERVICE_UNAVAILABLE,
            Self::Connect { .. } | Self::Upstream(_) => S::BAD_GATEWAY,
            Self::Timeout { .. } => S::GATEWAY_TIMEOUT,
        }
    }
}

/// Sends `outgoing` to one ready instance of `deployment` and returns the buffered answer.
///
/// The instance is the least loaded one with a free slot (waiting up to the queue wait). When
/// connecting fails, the next instance is tried; the request timeout starts once a slot is held.
pub async fn forward(
    deployment: &Deployment,
    outgoing: &Outgoing,
) -> Result<Response<Bytes>, ProxyError> {
    let instances = &deployment.instances;
    match instances.as_slice() {
        [] => Err(ProxyError::NoReadyInstance),
        [only] => {
            let (_, _slot) = acquire_any(&[&only.limit], deployment.queue_wait, || {
                deployment.load.queued()
            })
            .await
            .map_err(ProxyError::Busy)?;
            let _busy = deployment.load.busy();
            let deadline = Instant::now() + deployment.timeout;
            match timed(
                deployment,
                deadline,
                send(only, &outgoing.head(deployment, only, None), outgoing),
            )
            .await?
            {
                Ok(response) => Ok(response),
                Err(Failure::Connect(source)) => Err(ProxyError::Connect {
                    instances: 1,
                    source,
                }),
                Err(Failure::Upstream(source)) => Err(ProxyError::Upstream(source)),
            }
        }
        _ => {
            let mut remaining = instance_order(instances, &deployment.cursor);
            let mut deadline = None;
            let mut busy = None;
            loop {
                let limits: Vec<_> = remaining.iter().map(|&i| &instances[i].limit).collect();
                let (position, _slot) =
                    acquire_any(&limits, deployment.queue_wait, || deployment.load.queued())
                        .await
                        .map_err(ProxyError::Busy)?;
                // Busy from the first slot to the answer, across connect retries.
                busy.get_or_insert_with(|| deployment.load.busy());
                let instance = &instances[remaining.remove(position)];
                let deadline = *deadline.get_or_insert_with(|| Instant::now() + deployment.timeout);
                match timed(
                    deployment,
                    deadline,
                    send(
                        instance,
                        &outgoing.head(deployment, instance, None),
                        outgoing,
                    ),
                )
                .await?
                {
                    Ok(response) => return Ok(response),
                    Err(Failure::Upstream(source)) => return Err(ProxyError::Upstream(source)),
                    Err(Failure::Connect(source)) if remaining.is_empty() => {
                        return Err(ProxyError::Connect {
                            instances: instances.len(),
                            source,
                        });
                    }
                    Err(Failure::Connect(source)) => {
                        tracing::debug!(instance = %instance.addr, error = %source, "connect failed, trying another instance");
                    }
                }
            }
        }
    }
}

async fn timed<T>(
    deployment: &Deployment,
    deadline: Instant,
    work: impl Future<Output = T>,
) -> Result<T, ProxyError> {
    tokio::time::timeout_at(deadline, work)
        .await
        .map_err(|_| ProxyError::Timeout {
            timeout_ms: deployment.timeout.as_millis(),
        })
}

/// Why one send failed.
#[derive(Debug)]
pub enum Failure {
    /// The request never got an answer from the instance: safe to send elsewhere.
    Connect(io::Error),
    /// The instance broke the exchange while answering.
    Upstream(ExchangeError),
}

/// Sends one request to one instance: on an idle pooled connection when there is one, else on
/// a new connection. When a pooled connection turns out closed before any answer (the instance
/// closed it while idle: the keep-alive race), the instance's idle connections in this pool
/// shard are dropped and the request goes out on a new one. When a new connection fails before
/// any answer, the request counts as not delivered, so the caller may send it to another
/// instance: scoring requests are treated as idempotent, as Azure ML's router does on retries.
pub async fn send(
    instance: &Instance,
    head: &[u8],
    outgoing: &Outgoing,
) -> Result<Response<Bytes>, Failure> {
    loop {
        let (mut connection, reused) = match instance.pool.take() {
            Some(connection) => (connection, true),
            None => (
                Connection::open(instance.addr)
                    .await
                    .map_err(Failure::Connect)?,
                false,
            ),
        };
        match connection
            .exchange(head, &outgoing.body, outgoing.is_head())
            .await
        {
            Ok((response, reusable)) => {
                if reusable {
                    instance.pool.put(connection);
                }
                return Ok(response);
            }
            Err(ExchangeError::NothingReceived(_)) if reused => instance.pool.clear(),
            Err(ExchangeError::NothingReceived(error)) => return Err(Failure::Connect(error)),
            Err(error) => return Err(Failure::Upstream(error)),
        }
    }
}

/// Sends `count` complete requests, back to back in `message`, on one connection to `instance`
/// (HTTP/1.1 pipelining) and reads their answers in order, each within `per_answer` of the one
/// before. Returns how many were answered; the rest count as failed. A pooled connection found
/// closed before any answer is dropped and the lot goes out once more on a new connection. Only
/// for copies whose answers are discarded: nothing is retried after the first answer.
pub async fn send_pipelined(
    instance: &Instance,
    message: &[u8],
    count: usize,
    head_request: bool,
    per_answer: Duration,
) -> usize {
    loop {
        let (mut connection, reused) = match instance.pool.take() {
            Some(connection) => (connection, true),
            None => match Connection::open(instance.addr).await {
                Ok(connection) => (connection, false),
                Err(_) => return 0,
            },
        };
        if connection.send_pipelined(message).await.is_err() {
            if reused {
                instance.pool.clear();
                continue;
            }
            return 0;
        }
        let mut answered = 0;
        let mut reusable = true;
        while answered < count {
            match tokio::time::timeout(per_answer, connection.read_response(head_request)).await {
                Ok(Ok((_, keep))) => {
                    answered += 1;
                    reusable = keep;
                    if !keep && answered < count {
                        break; // the instance closes: the rest went unanswered
                    }
                }
                Ok(Err(ExchangeError::NothingReceived(_))) if reused && answered == 0 => break,
                Ok(Err(_)) | Err(_) => {
                    reusable = false;
                    break;
                }
            }
        }
        if answered == 0 && reused && reusable {
            // The keep-alive race: the instance closed the idle connection before our write.
            instance.pool.clear();
            continue;
        }
        if reusable && answered == count && connection.is_drained() {
            instance.pool.put(connection);
        }
        return answered;
    }
}

/// How many shards each pool has: one per serving thread plus one for everything else (the
/// mirror workers). Set once at start-up, before any table is compiled.
static POOL_SHARDS: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Sizes connection pools for `serving_threads` threads (plus one shared shard).
pub fn set_pool_shards(serving_threads: usize) {
    POOL_SHARDS.store(serving_threads + 1, Ordering::Relaxed);
}

/// Marks the current thread as serving thread `index`: it gets a pool shard of its own, so a
/// connection is only ever used by the thread whose runtime drives it.
pub fn enter_serving_thread(index: usize) {
    SHARD.set(index);
}

/// Idle keep-alive connections to one instance, sharded by serving thread.
#[derive(Debug)]
pub struct Pool {
    shards: Box<[Mutex<Vec<Sender>>]>,
}

impl Default for Pool {
    fn default() -> Self {
        let shards = POOL_SHARDS.load(Ordering::Relaxed).max(1);
        Self {
            shards: (0..shards).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }
}

impl Pool {
    fn shard(&self) -> &Mutex<Vec<Sender>> {
        let last = self.shards.len() - 1;
        &self.shards[SHARD.get().min(last)]
    }

    fn take(&self) -> Option<Sender> {
        self.shard().lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    fn put(&self, connection: Sender) {
        let mut idle = self.shard().lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_PER_INSTANCE {
            idle.push(connection);
        }
    }

    fn clear(&self) {
        self.shard()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes headers that describe one hop, not the message (RFC 9110 §7.6.1), and the length
/// (the buffered body sets its own).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names first: most messages carry none of these.
    let present = headers.keys().any(|name| {
        HOP_BY_HOP.contains(name) || name == header::CONTENT_LENGTH || name.as_str() == "keep-alive"
    });
    if !present {
        return;
    }
    if let Some(listed) = headers
        .get(header::CONNECTION)
        .and_then(|v| v.to_str().ok())
    {
        let listed: Vec<HeaderName> = listed
            .split(',')
            .filter_map(|name| HeaderName::try_from(name.trim()).ok())
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove(header::CONTENT_LENGTH);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_secrets_are_not_forwarded() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("authorization", "Bearer secret"),
            ("host", "router"),
            ("content-type", "application/json"),
            ("azureml-model-deployment", "blue"),
        ] {
            headers.insert(HeaderName::from_static(name), value.parse().unwrap());
        }
        let outgoing = Outgoing::new(Method::POST, headers, Bytes::new());
        let names: Vec<&str> = outgoing.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.contains(&"content-type") && names.contains(&"azureml-model-deployment"));
    }

    #[test]
    fn errors_map_to_statuses_and_categories() {
        let timeout = ProxyError::Timeout { timeout_ms: 5000 };
        assert_eq!(timeout.status(), 504);
        assert_eq!(timeout.category(), "timeout");
        assert_eq!(ProxyError::NoReadyInstance.status(), 503);
        let connect = ProxyError::Connect {
            instances: 2,
            source: io::Error::from(io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(connect.status(), 502);
        let busy = ProxyError::Busy(Busy {
            instances: 1,
            waited_ms: 500,
        });
        assert_eq!(
            busy.status(),
            503,
            "Azure ML's Kubernetes endpoints: 503 past the queue wait"
        );
    }

    #[test]
    fn targets_keep_the_clients_query_string() {
        use super::super::{metrics::Metrics, routes::Compiler, table::RoutingTable};
        let table = RoutingTable::parse(
            "endpoints:\n  - name: e\n    deployments:\n      - { name: plain, traffic: 100, backends: [] }\n      - { name: custom, scoringPath: '/v1/models/m:predict?format=json', backends: [] }\n",
        )
        .unwrap();
        let routes = Compiler::new(Metrics::new().unwrap()).compile(&table);
        let e = routes.endpoint("e").unwrap();
        let (plain, custom) = (&e.deployments[0], &e.deployments[1]);
        assert_eq!(Target::scoring(None).path_on(plain), "/score");
        assert_eq!(Target::scoring(Some("")), Target::Scoring);
        assert_eq!(
            Target::scoring(Some("a=1&b=x%20y")).path_on(plain),
            "/score?a=1&b=x%20y"
        );
        assert_eq!(
            Target::scoring(Some("a=1")).path_on(custom),
            "/v1/models/m:predict?format=json&a=1"
        );
        let swagger = Target::Path("/swagger.json?version=3".into());
        assert_eq!(swagger.path_on(custom), "/swagger.json?version=3");
        let outgoing = Outgoing::new(Method::GET, HeaderMap::new(), Bytes::new()).to(swagger);
        assert_eq!(outgoing.target.path_on(plain), "/swagger.json?version=3");
    }
}
