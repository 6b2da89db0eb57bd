//! Holding a request for a deployment that has no ready instance (scaled to zero, or starting),
//! until the routing table lists one.
//!
//! The request counts as queued in the deployment's load report the whole time, which is what
//! makes the operator's autoscaler scale the deployment from zero to one. The wait is bounded by
//! the deployment's queue wait (503 when it runs out, as for no ready instance) and by its
//! request timeout (504 when that is the shorter and runs out). Once an instance is listed the
//! request is forwarded as any other, with its full request timeout for the exchange.

use std::{sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use tokio::{sync::watch, time::Instant};

use super::routes::{Deployment, Routes};

/// Why a held request was not given an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColdWait {
    /// The queue wait ran out first (503).
    QueueWait,
    /// The request timeout ran out first (504).
    Timeout,
}

/// How long a request for `deployment` may wait for a first instance, and what running out means.
pub fn budget(deployment: &Deployment) -> (Duration, ColdWait) {
    if deployment.timeout < deployment.queue_wait {
        (deployment.timeout, ColdWait::Timeout)
    } else {
        (deployment.queue_wait, ColdWait::QueueWait)
    }
}

/// Waits until the current table gives `held` (by endpoint and deployment name) a ready instance,
/// and returns that compiled deployment. `tables` ticks on every table swap into `routes`.
pub async fn first_instance(
    routes: &ArcSwap<Routes>,
    mut tables: watch::Receiver<u64>,
    held: &Arc<Deployment>,
) -> Result<Arc<Deployment>, ColdWait> {
    let (wait, ran_out) = budget(held);
    let _queued = held.load.queued();
    let deadline = Instant::now() + wait;
    loop {
        // Mark the current table seen before reading it, so a swap in between wakes us.
        tables.borrow_and_update();
        let current = routes
            .load()
            .endpoint(&held.endpoint)
            .and_then(|e| e.deployment(held.name.as_bytes()))
            .filter(|d| !d.instances.is_empty())
            .cloned();
        if let Some(ready) = current {
            return Ok(ready);
        }
        tokio::select! {
            changed = tables.changed() => if changed.is_err() {
                // The router is going away: answer as if the wait ran out.
                return Err(ran_out);
            },
            () = tokio::time::sleep_until(deadline) => return Err(ran_out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::router::{metrics::Metrics, routes::Compiler, table::RoutingTable};

    fn table(backends: &str, timeout_ms: u64, queue_wait_ms: u64) -> RoutingTable {
        RoutingTable::parse(&format!(
            "endpoints:\n  - name: e\n    deployments:\n      - {{ name: d, traffic: 100, backends: [{backends}], \
             requestSettings: {{ requestTimeoutMs: {timeout_ms}, maxQueueWaitMs: {queue_wait_ms} }} }}\n"
        ))
        .unwrap()
    }

    fn held(routes: &Routes) -> Arc<Deployment> {
        routes
            .endpoint("e")
            .unwrap()
            .deployment(b"d")
            .unwrap()
            .clone()
    }

    #[test]
    fn the_shorter_of_queue_wait_and_timeout_bounds_the_hold() {
        let compiler = Compiler::new(Metrics::new().unwrap());
        let long_wait = compiler.compile(&table("", 1000, 60_000));
        assert_eq!(
            budget(&held(&long_wait)),
            (Duration::from_millis(1000), ColdWait::Timeout)
        );
        let short_wait = compiler.compile(&table("", 5000, 500));
        assert_eq!(
            budget(&held(&short_wait)),
            (Duration::from_millis(500), ColdWait::QueueWait)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_request_gets_the_first_instance_listed_and_counts_as_queued() {
        let compiler = Compiler::new(Metrics::new().unwrap());
        let routes = Arc::new(ArcSwap::from_pointee(
            compiler.compile(&table("", 30_000, 30_000)),
        ));
        let tables = watch::Sender::new(0u64);
        let deployment = held(&routes.load());
        let (r, rx, d) = (routes.clone(), tables.subscribe(), deployment.clone());
        let waiter = tokio::spawn(async move { first_instance(&r, rx, &d).await });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(compiler.loads().report().deployments[0].queued, 1);
        routes.store(Arc::new(compiler.compile(&table(
            "{address: '127.0.0.1:9'}",
            30_000,
            30_000,
        ))));
        tables.send_modify(|v| *v += 1);
        let ready = waiter.await.unwrap().unwrap();
        assert_eq!(ready.instances.len(), 1);
        let report = compiler.loads().report();
        assert_eq!(report.deployments[0].queued, 0);
        assert!(report.deployments[0].queued_seconds >= 5.0, "{report:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_that_runs_out_says_which_bound_ran_out() {
        let compiler = Compiler::new(Metrics::new().unwrap());
        let routes = ArcSwap::from_pointee(compiler.compile(&table("", 2000, 500)));
        let tables = watch::Sender::new(0u64);
        let deployment = held(&routes.load());
        let outcome = first_instance(&routes, tables.subscribe(), &deployment).await;
        assert_eq!(outcome.unwrap_err(), ColdWait::QueueWait);
        // A table without an instance for it changes nothing.
        let routes = ArcSwap::from_pointee(compiler.compile(&table("", 200, 5000)));
        let deployment = held(&routes.load());
        assert_eq!(
            first_instance(&routes, tables.subscribe(), &deployment)
                .await
                .unwrap_err(),
            ColdWait::Timeout
        );
    }
}
