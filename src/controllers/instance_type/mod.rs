//! The InstanceType controller: says in status how many nodes an instance of the type fits on
//! now, and why none does. An InstanceType is a definition: it waits on nothing, so it is never
//! `Reconciling` or `Stalled`, and `Ready` is True once its generation is seen (a GitOps tool
//! reads it as current): reason `NodesFit`, or `NoMatchingNodes` with why no node fits in the
//! message (jobs and deployments naming it stay Pending, where a cluster autoscaler may act).
//!
//! Stages: [`fit::count`] (pure: the nodes against the type) → [`status`] (pure) → status written
//! only when it changed. Any Node change re-counts every type (clusters have few types).

pub mod fit;

use std::sync::Arc;

use k8s_openapi::{api::core::v1::Node, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Client, ResourceExt,
    runtime::{
        Controller,
        controller::Action,
        reflector::{ObjectRef, Store},
    },
};
use tracing::info;

use crate::{
    api::instance_type::{InstanceType, InstanceTypeStatus},
    runtime::{
        backoff::Backoffs,
        conditions::{self, Progress},
        drive::drive,
        events::Events,
        handles::Runtime,
        metrics::Metrics,
        synced::Synced,
    },
};

const CONTROLLER: &str = "instancetype";
/// `Ready` reasons.
pub const NODES_FIT: &str = "NodesFit";
pub const NO_MATCHING_NODES: &str = "NoMatchingNodes";

/// Its only write is its status.
pub use crate::runtime::reconcile::StatusError as Error;

/// What reconciles share.
pub struct Ctx {
    pub client: Client,
    pub nodes: Store<Node>,
    pub metrics: Metrics,
    pub events: Events,
    pub backoffs: Backoffs,
    pub synced: Synced,
}

/// The status `it` should have, given `nodes` (pure).
pub fn status(it: &InstanceType, nodes: &[Arc<Node>], now: &Time) -> InstanceTypeStatus {
    let old = it.status.clone().unwrap_or_default();
    let fit = fit::count(&it.spec, nodes.iter().map(|n| &**n));
    let generation = it.metadata.generation;
    let mut conds = old.conditions.clone();
    let reason = if fit.fits > 0 {
        NODES_FIT
    } else {
        NO_MATCHING_NODES
    };
    conditions::progress(
        &mut conds,
        &Progress::done(reason, fit.message()),
        generation,
        now,
    );
    InstanceTypeStatus {
        observed_generation: generation,
        matching_nodes: Some(i32::try_from(fit.fits).unwrap_or(i32::MAX)),
        conditions: conds,
    }
}

/// Reconciles one InstanceType.
#[tracing::instrument(skip_all, fields(name = %it.name_any()))]
pub async fn reconcile(it: Arc<InstanceType>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let _timer = crate::runtime::reconcile::started(&ctx.metrics, CONTROLLER);
    if !ctx.synced.wait().await {
        return Ok(Action::requeue(std::time::Duration::from_secs(1)));
    }
    let new = status(&it, &ctx.nodes.state(), &Time(Timestamp::now()));
    if it.status.as_ref() != Some(&new) {
        crate::runtime::status::patch_cluster_status(&ctx.client, &*it, &new)
            .await
            .map_err(Error::PatchStatus)?;
    }
    Ok(Action::await_change())
}

crate::runtime::drive::context!(Ctx, CONTROLLER);

/// Asks for the controller's caches now and returns the loop that runs it until `shutdown`.
/// Cluster-scoped: the operator starts one, whatever namespaces it watches.
pub fn controller(
    rt: Runtime,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let nodes = rt.caches.cluster::<Node>(None);
    let types = rt.caches.cluster::<InstanceType>(None);
    let all = types.store();
    let ctx = Arc::new(Ctx {
        client: rt.client.clone(),
        nodes: nodes.store(),
        metrics: rt.metrics.clone(),
        events: rt.events.clone(),
        backoffs: Backoffs::default(),
        synced: rt.synced.clone(),
    });
    let controller = Controller::for_stream(types.changes(), types.store()).watches_stream(
        nodes.changes(),
        move |_: Node| {
            all.state()
                .iter()
                .map(|t| ObjectRef::from_obj(&**t))
                .collect::<Vec<_>>()
        },
    );
    async move {
        info!("starting InstanceType controller");
        drive(controller, ctx, rt.concurrency, shutdown, reconcile).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    #[test]
    fn ready_says_how_many_fit_and_an_unchanged_count_writes_nothing() {
        let it: InstanceType = serde_yaml::from_str(fit::tests::GPU_TYPE).unwrap();
        let nodes: Vec<Arc<Node>> = fit::tests::nodes().into_iter().map(Arc::new).collect();
        let s = status(&it, &nodes, &at(1));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.matching_nodes, Some(1));
        let ready = &s.conditions[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", NODES_FIT)
        );
        let mut again = it.clone();
        again.status = Some(s.clone());
        assert_eq!(
            status(&again, &nodes, &at(2)),
            s,
            "recomputed at a later time: equal"
        );

        // No node fits: still Ready (a definition waits on nothing), saying why.
        let mut seen = it.clone();
        seen.status = Some(s);
        let s = status(&seen, &[], &at(3));
        assert_eq!(s.matching_nodes, Some(0));
        assert_eq!(s.conditions.len(), 1, "{:?}", s.conditions);
        let ready = &s.conditions[0];
        assert_eq!(
            (
                ready.type_.as_str(),
                ready.status.as_str(),
                ready.reason.as_str()
            ),
            ("Ready", "True", NO_MATCHING_NODES)
        );
        assert_eq!(ready.message, "no node in the cluster");
        assert_eq!(
            ready.last_transition_time,
            at(1),
            "still True: not a transition"
        );
    }
}
