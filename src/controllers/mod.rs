//! The control plane: one folder per controller. Controllers share only `runtime`, `contract`
//! and `api`; none imports another (batch's three live together and share their resolution).
//!
//! [`start`] is the one place that starts them: every controller asks the shared caches for
//! what it reads, then the caches are sealed, so that one readiness signal covers them all.

pub mod autoscaler;
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
    /// Where the autoscaler reads the routers' load.
    pub autoscaler: autoscaler::routers::AutoscalerSettings,
}

/// The process-wide handles every controller shares.
#[derive(Clone)]
pub struct Shared {
    pub client: Client,
    pub metrics: Metrics,
    pub events: Events,
    pub health: Health,
}

/// A controller's health entry and its loop, not yet spawned.
type Task = (
    ControllerHealth,
    std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
);

fn task(rt: &Runtime, run: impl Future<Output = ()> + Send + 'static) -> Task {
    (rt.health.clone(), Box::pin(run))
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
    // One health entry per controller and namespace, so `/readyz` names what is not synced.
    let runtime = |kind: &str, ns: &Option<String>| Runtime {
        client: shared.client.clone(),
        metrics: shared.metrics.clone(),
        events: shared.events.clone(),
        caches: caches.clone(),
        synced: caches.synced(),
        health: shared.health.register(match ns {
            Some(ns) => format!("{kind}/{ns}"),
            None => kind.to_string(),
        }),
        namespace: ns.clone(),
        concurrency: options.concurrency,
    };
    let mut tasks: Vec<Task> = Vec::new();
    for ns in &namespaces {
        let rt = runtime("environment", ns);
        tasks.push(task(&rt, environment::controller(rt.clone(), stopped())));
        let rt = runtime("trainingjob", ns);
        let run = training::controller(rt.clone(), options.debounce, stopped());
        tasks.push(task(&rt, run));
        let rt = runtime("onlinedeployment", ns);
        tasks.push(task(
            &rt,
            online::deployment::controller(rt.clone(), stopped()),
        ));
        let rt = runtime("onlineendpoint", ns);
        let endpoint_options = online::endpoint::Options {
            gateway: options.gateway.clone(),
            router_url: options.router_url.clone(),
            names: endpoint_names.clone(),
        };
        let run = online::endpoint::controller(rt.clone(), endpoint_options, stopped());
        tasks.push(task(&rt, run));
        let rt = runtime("batchendpoint", ns);
        let batch_endpoint_options = batch::endpoint::Options {
            router_url: options.router_url.clone(),
            names: batch_endpoint_names.clone(),
        };
        let run = batch::endpoint::controller(rt.clone(), batch_endpoint_options, stopped());
        tasks.push(task(&rt, run));
        let rt = runtime("batchdeployment", ns);
        tasks.push(task(
            &rt,
            batch::deployment::controller(rt.clone(), stopped()),
        ));
        let rt = runtime("batchjob", ns);
        let run = batch::job::controller(rt.clone(), options.driver_image.clone(), stopped());
        tasks.push(task(&rt, run));
    }
    // The autoscaler reads the routers (shared by every namespace) once per round: one loop.
    let rt = runtime("autoscaler", &None);
    let run = autoscaler::controller(rt.clone(), &namespaces, &options.autoscaler, stopped());
    tasks.push(task(&rt, run));
    // InstanceType is cluster-scoped: one controller whatever the namespaces.
    let rt = runtime("instancetype", &None);
    tasks.push(task(&rt, instance_type::controller(rt.clone(), stopped())));
    let healths: Vec<ControllerHealth> = tasks.iter().map(|(h, _)| h.clone()).collect();
    caches.seal(move || healths.iter().for_each(ControllerHealth::set_synced));
    let handles = tasks
        .into_iter()
        .map(|(health, run)| (health, tokio::spawn(run)))
        .collect();
    (caches, handles)
}
