//! Where the routers are, and reading their load reports.
//!
//! In a cluster: the ready endpoints of the router Service's EndpointSlices (the chart names the
//! Service; the operator reads them in its own namespace). Outside one (tests, a router on the
//! developer's machine): a fixed list of router base URLs. Every router replica is read, each
//! with a short timeout, at once.

use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::Store;
use tokio::net::TcpStream;

use super::sample::RouterRead;
use crate::contract::load::{LOAD_PATH, LoadReport};

/// A report larger than this is refused (thousands of deployments fit in it).
const MAX_REPORT_BYTES: usize = 4 * 1024 * 1024;

/// The router Service's port name (the chart's).
const ROUTER_PORT_NAME: &str = "http";

/// Operator flags for the autoscaler.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct AutoscalerSettings {
    /// The router Service whose EndpointSlices (in --autoscaler-router-namespace) list the router
    /// replicas the autoscaler reads load from. The chart sets it.
    #[arg(long, env = "MLCOMPUTE_AUTOSCALER_ROUTER_SERVICE")]
    pub autoscaler_router_service: Option<String>,
    /// Namespace of the router Service (default: the operator's own, `POD_NAMESPACE`).
    #[arg(long, env = "MLCOMPUTE_AUTOSCALER_ROUTER_NAMESPACE")]
    pub autoscaler_router_namespace: Option<String>,
    /// Router base URLs to read load from, comma-separated (instead of the Service; for tests
    /// and routers outside the cluster), e.g. `http://127.0.0.1:8080`.
    #[arg(long, env = "MLCOMPUTE_AUTOSCALER_ROUTER_URLS", value_delimiter = ',')]
    pub autoscaler_router_urls: Vec<String>,
    /// How long one router may take to answer its load report, in milliseconds.
    #[arg(
        long,
        env = "MLCOMPUTE_AUTOSCALER_READ_TIMEOUT_MS",
        default_value_t = 800
    )]
    pub autoscaler_read_timeout_ms: u64,
}

impl AutoscalerSettings {
    /// The namespace and name of the router Service, when routers are discovered from one.
    pub fn service(&self) -> Option<(String, String)> {
        let name = self.autoscaler_router_service.clone()?;
        let namespace = self
            .autoscaler_router_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".into());
        Some((namespace, name))
    }

    /// The fixed router URLs, blanks dropped.
    pub fn urls(&self) -> Vec<String> {
        self.autoscaler_router_urls
            .iter()
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .collect()
    }
}

/// Where the routers are.
#[derive(Clone)]
pub enum Routers {
    /// Fixed base URLs.
    Urls(Vec<String>),
    /// The ready endpoints of these EndpointSlices (one Service's).
    Slices(Store<EndpointSlice>),
}

impl Routers {
    /// The base URL of every router replica now.
    pub fn urls(&self) -> Vec<String> {
        match self {
            Self::Urls(urls) => urls.clone(),
            Self::Slices(store) => slice_urls(store.state().iter().map(|s| &**s)),
        }
    }
}

/// `http://ip:port` of every ready endpoint of `slices`, on the router's port (pure).
pub fn slice_urls<'a>(slices: impl Iterator<Item = &'a EndpointSlice>) -> Vec<String> {
    let mut urls: Vec<String> = slices
        .flat_map(|slice| {
            let port = slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(ROUTER_PORT_NAME))
                .and_then(|p| p.port);
            let ipv6 = slice.address_type == "IPv6";
            slice.endpoints.iter().flatten().filter_map(move |e| {
                // Terminating or not yet ready routers have no report worth waiting for.
                let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                let address = e.addresses.first()?;
                let port = port?;
                ready.then(|| {
                    if ipv6 {
                        format!("http://[{address}]:{port}")
                    } else {
                        format!("http://{address}:{port}")
                    }
                })
            })
        })
        .collect();
    urls.sort();
    urls.dedup();
    urls
}

/// Reads every router at once, each within `timeout`.
pub async fn read_all(urls: &[String], timeout: Duration) -> Vec<RouterRead> {
    join_all(urls.iter().map(|url| async move {
        let report = match tokio::time::timeout(timeout, read(url)).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        };
        RouterRead {
            url: url.clone(),
            report,
        }
    }))
    .await
}

async fn read(base: &str) -> Result<LoadReport, String> {
    let uri: Uri = format!("{base}{LOAD_PATH}")
        .parse()
        .map_err(|e| format!("not a URL: {e}"))?;
    let authority = uri.authority().ok_or("the URL has no host")?.clone();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let stream = TcpStream::connect((host, authority.port_u16().unwrap_or(80)))
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    let connection = tokio::spawn(connection);
    let request = Request::get(LOAD_PATH)
        .header(header::HOST, authority.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("building the request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("sending: {e}"))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_REPORT_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    connection.abort();
    if status == http::StatusCode::NOT_FOUND {
        return Err("answered 404: a router release without the load report".into());
    }
    if !status.is_success() {
        return Err(format!("answered {status}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("not a load report: {e}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    // Documentation addresses (RFC 5737, RFC 3849): parsed into URLs, never dialled.
    #[test]
    fn ready_endpoints_on_the_router_port() {
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": { "name": "r-1" },
            "addressType": "IPv4",
            "ports": [{ "name": "metrics", "port": 9 }, { "name": "http", "port": 8080 }],
            "endpoints": [
                { "addresses": ["192.0.2.2"], "conditions": { "ready": true } },
                { "addresses": ["192.0.2.3"], "conditions": { "ready": false } },
                { "addresses": ["192.0.2.1"] }
            ]
        }))
        .unwrap();
        let v6: EndpointSlice = serde_json::from_value(json!({
            "metadata": { "name": "r-2" },
            "addressType": "IPv6",
            "ports": [{ "name": "http", "port": 8080 }],
            "endpoints": [{ "addresses": ["2001:db8::1"], "conditions": { "ready": true } }]
        }))
        .unwrap();
        assert_eq!(
            slice_urls([&slice, &v6].into_iter()),
            vec![
                "http://192.0.2.1:8080",
                "http://192.0.2.2:8080",
                "http://[2001:db8::1]:8080"
            ]
        );
    }

    #[test]
    fn fixed_urls_are_trimmed() {
        let settings = AutoscalerSettings {
            autoscaler_router_urls: vec!["http://127.0.0.1:1/ ".into(), "".into()],
            ..AutoscalerSettings::default()
        };
        assert_eq!(settings.urls(), vec!["http://127.0.0.1:1"]);
    }

    #[tokio::test]
    async fn an_unreachable_router_is_a_message_not_a_report() {
        // A port nothing listens on (bound, then closed).
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let reads = read_all(std::slice::from_ref(&url), Duration::from_millis(500)).await;
        let why = reads[0].report.as_ref().unwrap_err();
        assert!(why.starts_with("connecting"), "{why}");
    }
}
