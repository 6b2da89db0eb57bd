//! A stand-in for a router's load report (`GET /load`, `mlcompute::contract::load`) on 127.0.0.1,
//! with load the test sets. On the KWOK plane the deployments' Pods are fake, so a real router
//! would have nothing to forward to (and must never dial their addresses): the autoscaler's
//! decisions are tested against load reports whose figures the test controls.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Instant,
};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use mlcompute::contract::load::{DeploymentLoad, LoadReport};

#[derive(Default)]
struct Gauges {
    in_flight: u64,
    queued: u64,
    busy_seconds: f64,
    queued_seconds: f64,
    requests: u64,
    /// When the integrals were last brought up to date.
    at: Option<Instant>,
}

impl Gauges {
    fn advance(&mut self, now: Instant) {
        if let Some(at) = self.at {
            let seconds = now.duration_since(at).as_secs_f64();
            self.busy_seconds += self.in_flight as f64 * seconds;
            self.queued_seconds += self.queued as f64 * seconds;
        }
        self.at = Some(now);
    }
}

struct State {
    id: String,
    started: Instant,
    failing: bool,
    loads: HashMap<(String, String), Gauges>,
}

/// A fake router serving `GET /load`; stops when dropped.
pub struct FakeRouter {
    pub url: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeRouter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeRouter {
    /// Listens on 127.0.0.1 (any free port).
    pub async fn start(id: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            id: id.to_string(),
            started: Instant::now(),
            failing: false,
            loads: HashMap::new(),
        }));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(&state)) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            url: format!("http://{addr}"),
            state,
            task,
        }
    }

    /// Sets the requests in flight and queued for a deployment from now on; a change counts as
    /// requests arriving.
    pub fn set(&self, endpoint: &str, deployment: &str, in_flight: u64, queued: u64) {
        let mut state = self.state.lock().unwrap();
        let gauges = state
            .loads
            .entry((endpoint.into(), deployment.into()))
            .or_default();
        gauges.advance(Instant::now());
        if in_flight + queued > gauges.in_flight + gauges.queued {
            gauges.requests += in_flight + queued - gauges.in_flight - gauges.queued;
        }
        gauges.in_flight = in_flight;
        gauges.queued = queued;
    }

    /// Answers 500 instead of a report (or a report again).
    pub fn fail(&self, failing: bool) {
        self.state.lock().unwrap().failing = failing;
    }
}

fn answer(state: &Mutex<State>) -> Response<Full<Bytes>> {
    let mut state = state.lock().unwrap();
    if state.failing {
        let mut response = Response::new(Full::new(Bytes::from_static(b"broken")));
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        return response;
    }
    let now = Instant::now();
    let uptime_seconds = now.duration_since(state.started).as_secs_f64();
    let router_id = state.id.clone();
    let deployments = state
        .loads
        .iter_mut()
        .map(|((endpoint, deployment), g)| {
            g.advance(now);
            DeploymentLoad {
                endpoint: endpoint.clone(),
                deployment: deployment.clone(),
                in_flight: g.in_flight,
                queued: g.queued,
                busy_seconds: g.busy_seconds,
                queued_seconds: g.queued_seconds,
                requests: g.requests,
            }
        })
        .collect();
    let report = LoadReport {
        router_id,
        uptime_seconds,
        deployments,
    };
    Response::new(Full::new(Bytes::from(serde_json::to_vec(&report).unwrap())))
}
