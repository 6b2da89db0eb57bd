//! What every controller's reconcile loop shares: counting and timing each reconcile, catching a
//! reconcile that panics, what a failed one does (counted by category, logged with its cause at a
//! bounded rate, retried with a per-object exponential backoff), and running the controller's
//! result stream to its end.

use std::{any::Any, panic::AssertUnwindSafe};

use futures::{FutureExt, Stream, StreamExt};
use kube::runtime::controller::Action;
use prometheus::HistogramTimer;
use tracing::Instrument;

use super::{backoff::Backoffs, events::Events, metrics::Metrics};

/// Counts one reconcile of `controller` and times it until the returned guard drops.
pub fn started(metrics: &Metrics, controller: &'static str) -> HistogramTimer {
    metrics.reconciles.with_label_values(&[controller]).inc();
    metrics
        .reconcile_duration
        .with_label_values(&[controller])
        .start_timer()
}

/// A reconcile that panicked: reported on its object like any other error, instead of ending the
/// controller's task (which would stop reconciling every object of the kind).
#[derive(Debug, thiserror::Error)]
#[error("the reconcile panicked: {0}")]
pub struct Panicked(pub String);

/// The `category()` of a [`Panicked`].
pub const PANIC: &str = "panic";

fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// What the shared error policy needs to know of a controller's error.
pub trait ReconcileError: std::error::Error + From<Panicked> {
    /// A bounded label for metrics and Event reasons.
    fn category(&self) -> &'static str;
    /// Whether retrying is pointless until the object (or something it references) changes.
    fn waits_for_change(&self) -> bool {
        false
    }
}

/// The errors of a controller whose only write is its own status (Environment, InstanceType,
/// BatchEndpoint, BatchDeployment).
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("patching status")]
    PatchStatus(#[source] kube::Error),
    #[error(transparent)]
    Panicked(#[from] Panicked),
}

impl ReconcileError for StatusError {
    fn category(&self) -> &'static str {
        match self {
            StatusError::PatchStatus(e) => super::error_category(e),
            StatusError::Panicked(_) => PANIC,
        }
    }
}

/// Runs `reconcile`, turning a panic into an error, and forgets the object's backoff when it
/// succeeds. Every controller's reconcile goes through it.
pub async fn guarded<F, E>(backoffs: &Backoffs, key: String, reconcile: F) -> Result<Action, E>
where
    F: Future<Output = Result<Action, E>>,
    E: From<Panicked>,
{
    let result = match AssertUnwindSafe(reconcile).catch_unwind().await {
        Ok(result) => result,
        Err(payload) => Err(Panicked(panic_message(&*payload)).into()),
    };
    if result.is_ok() {
        backoffs.succeeded(&key);
    }
    result
}

/// The shared error policy's dependencies.
pub struct Policy<'a> {
    pub controller: &'static str,
    pub metrics: &'a Metrics,
    pub backoffs: &'a Backoffs,
    pub events: &'a Events,
}

/// The error policy: counts the failure under its bounded category, logs it (at warning level at
/// most once a minute per object, and when the kind of failure changes), and retries after the
/// object's backoff (a second, doubling, capped at minutes) or, when retrying cannot help, only
/// once the object changes. A panic is also told on the object as a Warning Event.
pub fn failed<K, E>(p: Policy<'_>, obj: &K, err: &E) -> Action
where
    K: kube::Resource<DynamicType = ()>,
    E: ReconcileError,
{
    let (controller, category) = (p.controller, err.category());
    p.metrics
        .reconcile_errors
        .with_label_values(&[controller, category])
        .inc();
    let retry = p.backoffs.failed(&super::backoff::key(obj), category);
    if category == PANIC && retry.log {
        p.events
            .publish(obj, true, "ReconcilePanicked", &err.to_string());
    }
    let (ns, name) = (
        obj.meta().namespace.as_deref().unwrap_or(""),
        obj.meta().name.as_deref().unwrap_or(""),
    );
    if retry.log {
        tracing::warn!(controller, namespace = ns, name, error = %err, source = ?err.source(), category,
            failures = retry.failures, retry_in = ?retry.delay, "reconcile failed");
    } else {
        tracing::debug!(controller, namespace = ns, name, error = %err, category,
            failures = retry.failures, retry_in = ?retry.delay, "reconcile failed");
    }
    if err.waits_for_change() {
        Action::await_change()
    } else {
        Action::requeue(retry.delay)
    }
}

/// Runs a controller's result stream to its end inside `span`, logging failures at debug level
/// (the error policy already logged them).
pub async fn drain<S, T, E>(results: S, span: tracing::Span)
where
    S: Stream<Item = Result<T, E>>,
    E: std::fmt::Display,
{
    results
        .for_each(|res| async move {
            if let Err(err) = res {
                tracing::debug!(%err, "reconcile loop");
            }
        })
        .instrument(span)
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Error {
        #[error(transparent)]
        Panicked(#[from] Panicked),
    }

    #[tokio::test]
    async fn a_panicking_reconcile_becomes_an_error() {
        let b = Backoffs::default();
        let r: Result<Action, Error> = guarded(&b, "u1".into(), async {
            let huge: Option<u32> = None;
            // The kind of bug that ended the TrainingJob controller: arithmetic on user input.
            let _ = huge
                .map(|h| h + 1)
                .unwrap_or_else(|| panic!("deadline overflow"));
            Ok(Action::await_change())
        })
        .await;
        let Err(Error::Panicked(p)) = r else {
            panic!("expected an error, got {r:?}")
        };
        assert_eq!(p.0, "deadline overflow");
        b.failed("u1", "invalid");
        let ok: Result<Action, Error> =
            guarded(&b, "u1".into(), async { Ok(Action::await_change()) }).await;
        assert!(ok.is_ok());
        assert!(b.is_empty(), "a success forgets the backoff");
    }
}
