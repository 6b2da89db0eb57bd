//! The data plane: `mlcompute router`, an HTTP router in front of online deployments.
//!
//! Per request: authenticate (key or token, constant time), pick a deployment (pinning header,
//! else the weighted split), offer a mirror copy to a bounded queue, take a concurrency slot on
//! the least-loaded ready instance (waiting at most the queue wait), forward on a keep-alive
//! connection with the request timeout, and retry another instance when connecting fails.
//!
//! Files: `table` (the router's table; strict, as users write it for standalone mode),
//! `cluster_table` and `cluster_source` (the table from the operator's routes, see
//! `crate::contract::routing`), `source` (where tables come from), `routes`
//! (their compiled form), `pick`, `auth`, `limit`, `load` (demand per deployment, for the
//! autoscaler), `cold` (holding a request until a deployment has an instance), `proxy`,
//! `upstream` (the HTTP/1.1 client to instances), `mirror`, `metrics`, `reply` (the router's own
//! answers), `request_id` (Azure ML's request-id headers), `address` (which endpoint a request
//! names: by path or by host), `server` (listener, routes, drain) and `busy_poll` (optional
//! polling instead of sleeping while traffic flows). docs/router.md has the HTTP semantics and
//! the status codes.

pub mod address;
pub mod auth;
pub mod batch_invoke;
pub mod busy_poll;
pub mod cluster_source;
pub mod cluster_table;
pub mod cold;
pub mod limit;
pub mod load;
pub mod metrics;
pub mod mirror;
pub mod pick;
pub mod proxy;
pub mod reply;
pub mod request_id;
pub mod routes;
pub mod server;
pub mod source;
pub mod table;
pub mod upstream;

#[cfg(test)]
mod proptests;

use std::{net::SocketAddr, time::Duration};

use tokio::signal::unix::SignalKind;

pub use batch_invoke::BatchInvoker;
pub use server::{Router, ServerOptions};
pub use source::{RoutingSource, SourceError, StaticFile, TableSink};
pub use table::RoutingTable;

/// How the router runs.
#[derive(Clone, Debug)]
pub struct RouterOptions {
    /// Where to listen.
    pub listen: SocketAddr,
    /// How long open requests may finish after SIGTERM.
    pub drain: Duration,
    /// Serving threads (each with its own runtime and listener).
    pub threads: usize,
    /// HTTP-side tunables.
    pub server: ServerOptions,
    /// With a cluster: serve `POST /api/v1/batch/{endpoint}/invoke` with this client over these
    /// namespaces (empty: all).
    pub batch_invoke: Option<batch_invoke::ClusterAccess>,
}

/// The router could not run.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// The listen address is taken or not ours.
    #[error("listening on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Metrics could not be registered.
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    /// The routing source failed.
    #[error("routing source stopped")]
    Source(#[from] SourceError),
    /// Signal handlers could not be installed.
    #[error("installing the SIGTERM handler")]
    Signal(#[source] std::io::Error),
}

impl RouterError {
    /// A bounded name for logs.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Bind { .. } => "bind",
            Self::Metrics(_) => "metrics",
            Self::Source(error) => error.category(),
            Self::Signal(_) => "signal",
        }
    }
}

/// Runs the router until SIGTERM or Ctrl-C, then drains.
pub async fn run(options: RouterOptions, source: impl RoutingSource) -> Result<(), RouterError> {
    let mut terminate =
        tokio::signal::unix::signal(SignalKind::terminate()).map_err(RouterError::Signal)?;
    let threads = options.threads.max(1);
    proxy::set_pool_shards(threads);
    let metrics = metrics::Metrics::new()?;
    let batch = options
        .batch_invoke
        .map(|access| BatchInvoker::new(access, metrics.clone()));
    let router = Router::new(metrics, &options.server, batch);
    let sink = TableSink::new(router.clone());
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt"),
        }
    };
    let (addr, mut serving) =
        server::serve(router, options.listen, threads, shutdown, options.drain)
            .await
            .map_err(|source| RouterError::Bind {
                addr: options.listen,
                source,
            })?;
    tracing::info!(listen = %addr, threads, "router listening");
    let mut source = tokio::spawn(source.run(sink));
    tokio::select! {
        _ = &mut serving => {
            source.abort();
            tracing::info!("drained");
            Ok(())
        }
        ended = &mut source => match ended {
            Ok(Err(error)) => Err(error.into()),
            // A source that ends cleanly or panics leaves the last table in force.
            Ok(Ok(())) | Err(_) => {
                let _ = serving.await;
                Ok(())
            }
        },
    }
}

/// Serving threads by default: one per CPU this process may run on.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
