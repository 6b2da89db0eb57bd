//! `mlcompute operator`: starts the metrics endpoint and every controller, and stops them on
//! SIGTERM or Ctrl-C.

use futures::{StreamExt, stream::FuturesUnordered};
use kube::runtime::events::Reporter;
use tokio::task::JoinHandle;
use tracing::{error, info};

use super::{http, leader, settings::Settings};
use crate::runtime::{
    client,
    events::Events,
    health::{ControllerHealth, Health},
    metrics::Metrics,
    ratelimit::RateLimit,
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
    #[error(
        "the {name} controller stopped ({why}); exiting so that Kubernetes restarts the operator"
    )]
    ControllerEnded { name: String, why: String },
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
    let health = Health::default();
    let listener = tokio::net::TcpListener::bind(settings.metrics_addr)
        .await
        .map_err(|source| RunError::Serve {
            addr: settings.metrics_addr,
            source,
        })?;
    tokio::spawn(http::serve_on(listener, metrics.clone(), health.clone()));

    let reporter = Reporter {
        controller: "mlcompute".into(),
        instance: std::env::var("POD_NAME").ok().or_else(hostname),
    };
    // Events have a client and a budget of their own, so they never delay Pods and status.
    let events_client = client::rate_limited(
        settings.kubeconfig.as_deref(),
        crate::runtime::events::events_rate(limit),
    )
    .await?;
    let events = Events::start(events_client, reporter, &metrics.registry)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopping = {
        let rx = stop_rx.clone();
        move || *rx.borrow()
    };
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
        health.set_serving(true);
        let config = client::config(settings.kubeconfig.as_deref()).await?;
        let lease_client = kube::Client::try_from(config).map_err(client::ClientError::Build)?;
        tokio::select! {
            l = leader::campaign(lease_client, &settings.leader, &metrics.registry) => Some(l?),
            _ = stopped() => return Ok(()),
        }
    } else {
        None
    };

    let options = crate::controllers::Options {
        namespaces: settings.watched_namespaces(),
        concurrency: settings.concurrency,
        debounce: settings.debounce,
        gateway: settings.gateway.clone(),
        router_url: settings.batch.router_url.clone(),
        driver_image: settings.batch.driver_image.clone(),
        autoscaler: settings.autoscaler.clone(),
    };
    let shared = crate::controllers::Shared {
        client: client.clone(),
        metrics: metrics.clone(),
        events: events.clone(),
        health: health.clone(),
    };
    let (caches, controllers) = crate::controllers::start(&shared, &options, &stopped);
    info!(
        watches = caches.watches(),
        "controllers started on shared caches"
    );
    health.set_serving(true);
    let Some(mut leadership) = leadership else {
        return supervise(controllers, stopping).await;
    };
    let mut all = std::pin::pin!(supervise(controllers, stopping));
    // On shutdown the controllers get a few seconds to finish their reconciles; then the Lease is
    // released either way (the process exits right after, ending whatever still runs).
    let grace = async {
        stopped().await;
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        tracing::warn!("controllers did not stop within 5 s of the shutdown signal");
    };
    let (lost, ended) = tokio::select! {
        r = &mut all => (None, r.err()),
        _ = grace => (None, None),
        lost = leadership.lost() => (Some(lost), None),
    };
    match lost {
        None => {
            leadership.release().await;
            ended.map_or(Ok(()), Err)
        }
        Some(lost) => {
            // Another replica may lead from now on: stop at once, writing nothing more.
            health.set_serving(false);
            error!(%lost, identity = leadership.identity(), "lost the leader Lease");
            Err(RunError::LostLease(lost))
        }
    }
}

/// Waits for the controller tasks. A task that ends before shutdown was asked for (it returned,
/// or panicked outside a reconcile) is an error: the objects of its kind would go unreconciled
/// while the process looked healthy. Its end fails `/healthz` and the process exits non-zero.
async fn supervise(
    controllers: Vec<(ControllerHealth, JoinHandle<()>)>,
    stopping: impl Fn() -> bool,
) -> Result<(), RunError> {
    let mut running: FuturesUnordered<_> = controllers
        .into_iter()
        .map(|(health, task)| async move { (health, task.await) })
        .collect();
    while let Some((health, result)) = running.next().await {
        health.set_ended();
        if stopping() {
            continue;
        }
        let why = match result {
            Ok(()) => "its task returned".to_string(),
            Err(e) if e.is_panic() => "its task panicked".to_string(),
            Err(e) => e.to_string(),
        };
        error!(controller = health.name(), %why, "controller stopped");
        return Err(RunError::ControllerEnded {
            name: health.name().to_string(),
            why,
        });
    }
    Ok(())
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_controller_task_that_ends_fails_health_and_the_run() {
        let health = Health::default();
        health.set_serving(true);
        let steady = health.register("trainingjob");
        let broken = health.register("batchjob");
        steady.set_synced();
        broken.set_synced();
        let tasks = vec![
            (steady, tokio::spawn(std::future::pending::<()>())),
            (
                broken,
                tokio::spawn(async { panic!("watch stream gave up") }),
            ),
        ];
        let err = supervise(tasks, || false).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "the batchjob controller stopped (its task panicked); exiting so that Kubernetes restarts the operator"
        );
        assert_eq!(health.live().unwrap_err(), "controller ended: batchjob");
    }

    #[tokio::test]
    async fn tasks_that_end_on_shutdown_are_fine() {
        let health = Health::default();
        let c = health.register("environment");
        let tasks = vec![(c, tokio::spawn(async {}))];
        assert!(supervise(tasks, || true).await.is_ok());
    }
}
