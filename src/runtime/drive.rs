//! Running a controller: the one loop every controller shares. Each reconcile is caught if it
//! panics, its failures go through the shared error policy, and the result stream is drained
//! inside the controller's span until shutdown.

use std::sync::Arc;

use kube::runtime::{Controller, controller::Action};
use serde::de::DeserializeOwned;

use super::{
    backoff::{self, Backoffs},
    events::Events,
    metrics::Metrics,
    reconcile::{Policy, ReconcileError, guarded},
};

/// What the shared loop needs of a controller's context.
pub trait Context: Send + Sync + 'static {
    /// The controller's name in metrics, logs and spans (`trainingjob`, …).
    const CONTROLLER: &'static str;
    fn metrics(&self) -> &Metrics;
    fn events(&self) -> &Events;
    fn backoffs(&self) -> &Backoffs;
}

/// Runs `controller` until `shutdown`, `concurrency` reconciles at once.
pub async fn drive<K, C, E, F, Fut>(
    controller: Controller<K>,
    ctx: Arc<C>,
    concurrency: u16,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    reconcile: F,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    C: Context,
    E: ReconcileError + Send + 'static,
    F: Fn(Arc<K>, Arc<C>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, E>> + Send + 'static,
{
    let reconcile = Arc::new(reconcile);
    let results = controller
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(
            move |obj, ctx: Arc<C>| {
                let reconcile = reconcile.clone();
                async move {
                    let key = backoff::key(&*obj);
                    let backoffs = ctx.backoffs().clone();
                    guarded(&backoffs, key, reconcile(obj, ctx)).await
                }
            },
            |obj, err: &E, ctx: Arc<C>| {
                let policy = Policy {
                    controller: C::CONTROLLER,
                    metrics: ctx.metrics(),
                    backoffs: ctx.backoffs(),
                    events: ctx.events(),
                };
                super::reconcile::failed(policy, &*obj, err)
            },
            ctx,
        );
    super::reconcile::drain(
        results,
        tracing::info_span!("controller", name = C::CONTROLLER),
    )
    .await;
}

/// Implements [`Context`] for a controller's `Ctx` with `metrics`, `events` and `backoffs` fields.
macro_rules! context {
    ($ctx:ty, $controller:expr) => {
        impl $crate::runtime::drive::Context for $ctx {
            const CONTROLLER: &'static str = $controller;
            fn metrics(&self) -> &$crate::runtime::metrics::Metrics {
                &self.metrics
            }
            fn events(&self) -> &$crate::runtime::events::Events {
                &self.events
            }
            fn backoffs(&self) -> &$crate::runtime::backoff::Backoffs {
                &self.backoffs
            }
        }
    };
}
pub(crate) use context;
