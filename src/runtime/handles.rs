//! What the operator hands every controller it starts: one bundle instead of a growing argument
//! list, so adding shared machinery touches one place.

use kube::Client;

use super::{
    caches::Caches, events::Events, health::ControllerHealth, metrics::Metrics, synced::Synced,
};

/// The shared handles of one controller instance.
#[derive(Clone)]
pub struct Runtime {
    pub client: Client,
    pub metrics: Metrics,
    pub events: Events,
    /// The process's shared caches: ask here, never start a watch of your own.
    pub caches: Caches,
    /// Whether every cache holds its first list; wait on it before acting.
    pub synced: Synced,
    /// This controller's entry in `/healthz` and `/readyz`.
    pub health: ControllerHealth,
    /// The namespace it watches; `None`: all.
    pub namespace: Option<String>,
    /// Reconciles at once.
    pub concurrency: u16,
}
