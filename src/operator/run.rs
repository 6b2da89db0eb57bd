//! `mlcompute operator`: starts the metrics endpoint and every controller, and stops them on
//! SIGTERM or Ctrl-C.

use futures::future::join_all;
use kube::runtime::events::Reporter;
use tracing::{error, info};

use super::{
    client,
    events::Events,
    http::{self, Readiness},
    leader,
    metrics::Metrics,
    ratelimit::RateLimit,
    settings::Settings,
};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Client(#[from] client::ClientError),
    #[error("registering metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("serving metrics on {addr}: {source}")]
    Serve {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("leader election: {0}")]
    Leader(#[from] leader::LeaderError),
    #[error("stepped down as leader ({0}); exiting so that a fresh process campaigns again")]
    LostLease(leader::Lost),
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed when this is called, not when the
/// future is first polled: a SIGTERM that arrives while start-up is still busy (a loaded node, a
/// slow API server) is then a graceful shutdown, not the default action that kills the process
/// with its Lease still held.
fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        match term {
            Ok(mut term) => tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} },
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
    }
}

pub async fn run(settings: Settings) -> Result<(), RunError> {
    let shutdown = shutdown_signal();
    let limit = RateLimit {
        qps: settings.kube_qps,
        burst: settings.kube_burst,
    };
    let client = client::rate_limited(settings.kubeconfig.as_deref(), limit).await?;
    let metrics = Metrics::new()?;
    let ready = Readiness::default();
    let listener = tokio::net::TcpListener::bind(settings.metrics_addr)
        .await
        .map_err(|source| RunError::Serve {
            addr: settings.metrics_addr,
            source,
        })?;
    tokio::spawn(http::serve_on(listener, metrics.clone(), ready.clone()));

    let reporter = Reporter {
        controller: "mlcompute".into(),
        instance: std::env::var("POD_NAME").ok().or_else(hostname),
    };
    // Events have a client and a budget of their own, so they never delay Pods and status.
    let events_client = client::rate_limited(
        settings.kubeconfig.as_deref(),
        super::events::events_rate(limit),
    )
    .await?;
    let events = Events::start(events_client, reporter, &metrics.registry)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        info!("shutting down");
        let _ = stop_tx.send(true);
    });
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    // With leader election, the controllers start only once this replica holds the Lease. A
    // standby is ready (it serves its role); the Lease and the `mlcompute_leader` gauge say who
    // leads. The Lease has a client of its own, outside the controllers' rate limit.
    let leadership = if settings.leader.leader_elect {
        ready.set(true);
        let config = client::config(settings.kubeconfig.as_deref()).await?;
        let lease_client = kube::Client::try_from(config).map_err(client::ClientError::Build)?;
        tokio::select! {
            l = leader::campaign(lease_client, &settings.leader, &metrics.registry) => Some(l?),
            _ = stopped() => return Ok(()),
        }
    } else {
        None
    };

    let namespaces: Vec<Option<String>> = match settings.watched_namespaces() {
        Some(list) => list.into_iter().map(Some).collect(),
        None => vec![None],
    };
    // One OnlineEndpoint and one BatchEndpoint controller per namespace; an endpoint name (its
    // scoring URI, or its invoke URI) is unique across them all.
    let endpoint_names = super::names::Names::new(namespaces.len());
    let batch_endpoint_names = super::names::Names::new(namespaces.len());
    let mut controllers = Vec::new();
    for ns in namespaces {
        controllers.push(tokio::spawn(crate::environment::run(
            client.clone(),
            metrics.clone(),
            events.clone(),
            ns.clone(),
            settings.concurrency,
            stopped(),
        )));
        controllers.push(tokio::spawn(crate::training::run(
            client.clone(),
            metrics.clone(),
            events.clone(),
            ns.clone(),
            settings.concurrency,
            settings.debounce,
            stopped(),
        )));
        controllers.push(tokio::spawn(crate::online::deployment::run(
            client.clone(),
            metrics.clone(),
            events.clone(),
            ns.clone(),
            settings.concurrency,
            stopped(),
        )));
        controllers.push(tokio::spawn(crate::online::endpoint::run(
            client.clone(),
            metrics.clone(),
            events.clone(),
            ns.clone(),
            settings.concurrency,
            crate::online::endpoint::Options {
                gateway: settings.gateway.clone(),
                router_url: settings.batch.router_url.clone(),
                names: endpoint_names.clone(),
            },
            stopped(),
        )));
        controllers.push(tokio::spawn(crate::batch_endpoint::run(
            client.clone(),
            metrics.clone(),
            events.clone(),
            ns.clone(),
            settings.concurrency,
            crate::batch_endpoint::Options {
                router_url: settings.batch.router_url.clone(),
                names: batch_endpoint_names.clone(),
            },
            stopped(),
        )));
        controllers.push(tokio::spawn(crate::batch_deployment::run(
            client.clone(),
            metrics.clone(),
            events.clone(),
            ns.clone(),
            settings.concurrency,
            stopped(),
        )));
        controllers.push(tokio::spawn(crate::batch_job::run(
            client.clone(),
            metrics.clone(),
            events.clone(),
            ns.clone(),
            settings.concurrency,
            settings.batch.driver_image.clone(),
            stopped(),
        )));
    }
    ready.set(true);
    let Some(mut leadership) = leadership else {
        join_all(controllers).await;
        return Ok(());
    };
    let mut all = std::pin::pin!(join_all(controllers));
    // On shutdown the controllers get a few seconds to finish their reconciles; then the Lease is
    // released either way (the process exits right after, ending whatever still runs).
    let grace = async {
        stopped().await;
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        tracing::warn!("controllers did not stop within 5 s of the shutdown signal");
    };
    let lost = tokio::select! {
        _ = &mut all => None,
        _ = grace => None,
        lost = leadership.lost() => Some(lost),
    };
    match lost {
        None => {
            leadership.release().await;
            Ok(())
        }
        Some(lost) => {
            // Another replica may lead from now on: stop at once, writing nothing more.
            ready.set(false);
            error!(%lost, identity = leadership.identity(), "lost the leader Lease");
            Err(RunError::LostLease(lost))
        }
    }
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
}
