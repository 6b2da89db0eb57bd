//! The control plane: one folder per controller. Controllers share only `runtime`, `contract`
//! and `api`; none imports another (batch's three live together and share their resolution).
//!
//! [`start`] is the one place that starts them: every controller asks the shared caches for
//! what it reads, then the caches are sealed, so that one readiness signal covers them all.

pub mod batch;
pub mod environment;
pub mod instance_type;
pub mod online;
pub mod training;

use std::time::Duration;

use kube::Client;
use tokio::task::JoinHandle;

use crate::runtime::{
    caches::Caches,
    events::Events,
    handles::Runtime,
    health::{ControllerHealth, Health},
    metrics::Metrics,
    names::Names,
};

/// What the controllers take from the operator's settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// Namespaces to reconcile; `None`: all.
    pub namespaces: Option<Vec<String>>,
    /// Reconciles at once, per controller.
    pub concurrency: u16,
    /// How long the TrainingJob controller folds Pod changes together.
    pub debounce: Duration,
    /// Gateway the OnlineEndpoints' HTTPRoutes attach to; none: no HTTPRoutes.
    pub gateway: Option<online::endpoint::httproute::GatewayRef>,
    /// Base URL of the built-in router, for scoring and invoke URIs.
    pub router_url: String,
    /// Image of the batch driver.
    pub driver_image: String,
}

/// The process-wide handles every controller shares.
#[derive(Clone)]
pub struct Shared {
    pub client: Client,
    pub metrics: Metrics,
    pub events: Events,
    pub health: Health,
}

/// Starts every controller (one instance per watched namespace) on one set of shared caches.
/// Each task ends when the future `stopped()` returns resolves.
pub fn start<S>(
    shared: &Shared,
    options: &Options,
    stopped: impl Fn() -> S,
) -> (Caches, Vec<(ControllerHealth, JoinHandle<()>)>)
where
    S: Future<Output = ()> + Send + Sync + 'static,
{
    let caches = Caches::new(shared.client.clone());
    let namespaces: Vec<Option<String>> = match &options.namespaces {
        Some(list) => list.iter().cloned().map(Some).collect(),
        None => vec![None],
    };
    // An endpoint name (its scoring URI, or its invoke URI) is unique across all namespaces.
    let endpoint_names = Names::new(namespaces.len());
    let batch_endpoint_names = Names::new(namespaces.len());
    let mut tasks = Vec::new();
    for ns in namespaces {
        // One health entry per controller and namespace, so `/readyz` names what is not synced.
        let runtime = |kind: &str| Runtime {
            client: shared.client.clone(),
            metrics: shared.metrics.clone(),
            events: shared.events.clone(),
            caches: caches.clone(),
            synced: caches.synced(),
            health: shared.health.register(match &ns {
                Some(ns) => format!("{kind}/{ns}"),
                None => kind.to_string(),
            }),
            namespace: ns.clone(),
            concurrency: options.concurrency,
        };
        let mut spawn = |rt: Runtime, run: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>| {
            tasks.push((rt.health.clone(), run));
        };
        let rt = runtime("environment");
        spawn(rt.clone(), Box::pin(environment::controller(rt, stopped())));
        let rt = runtime("trainingjob");
        let run = training::controller(rt.clone(), options.debounce, stopped());
        spawn(rt, Box::pin(run));
        let rt = runtime("onlinedeployment");
        spawn(
            rt.clone(),
            Box::pin(online::deployment::controller(rt, stopped())),
        );
        let rt = runtime("onlineendpoint");
        let endpoint_options = online::endpoint::Options {
            gateway: options.gateway.clone(),
            router_url: options.router_url.clone(),
            names: endpoint_names.clone(),
        };
        let run = online::endpoint::controller(rt.clone(), endpoint_options, stopped());
        spawn(rt, Box::pin(run));
        let rt = runtime("batchendpoint");
        let batch_endpoint_options = batch::endpoint::Options {
            router_url: options.router_url.clone(),
            names: batch_endpoint_names.clone(),
        };
        let run = batch::endpoint::controller(rt.clone(), batch_endpoint_options, stopped());
        spawn(rt, Box::pin(run));
        let rt = runtime("batchdeployment");
        spawn(
            rt.clone(),
            Box::pin(batch::deployment::controller(rt, stopped())),
        );
        let rt = runtime("batchjob");
        let run = batch::job::controller(rt.clone(), options.driver_image.clone(), stopped());
        spawn(rt, Box::pin(run));
    }
    // InstanceType is cluster-scoped: one controller whatever the namespaces.
    let rt = Runtime {
        client: shared.client.clone(),
        metrics: shared.metrics.clone(),
        events: shared.events.clone(),
        caches: caches.clone(),
        synced: caches.synced(),
        health: shared.health.register("instancetype"),
        namespace: None,
        concurrency: options.concurrency,
    };
    let run = instance_type::controller(rt.clone(), stopped());
    tasks.push((rt.health.clone(), Box::pin(run)));
    let healths: Vec<ControllerHealth> = tasks.iter().map(|(h, _)| h.clone()).collect();
    caches.seal(move || healths.iter().for_each(ControllerHealth::set_synced));
    let handles = tasks
        .into_iter()
        .map(|(health, run)| (health, tokio::spawn(run)))
        .collect();
    (caches, handles)
}
