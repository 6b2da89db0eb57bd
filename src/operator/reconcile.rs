//! What every controller's reconcile loop shares: counting and timing each reconcile, what a
//! failed one does (counted by category, logged with its cause, retried with backoff), and running
//! the controller's result stream to its end.

use futures::{Stream, StreamExt};
use kube::runtime::controller::Action;
use prometheus::HistogramTimer;
use tracing::Instrument;

use super::{error_backoff, metrics::Metrics};

/// Counts one reconcile of `controller` and times it until the returned guard drops.
pub fn started(metrics: &Metrics, controller: &'static str) -> HistogramTimer {
    metrics.reconciles.with_label_values(&[controller]).inc();
    metrics
        .reconcile_duration
        .with_label_values(&[controller])
        .start_timer()
}

/// The error policy: counts the failure under its bounded `category`, logs it with its source,
/// and retries after a backoff (longer when the API server throttles).
pub fn failed(
    metrics: &Metrics,
    controller: &'static str,
    category: &'static str,
    err: &dyn std::error::Error,
) -> Action {
    metrics
        .reconcile_errors
        .with_label_values(&[controller, category])
        .inc();
    tracing::warn!(controller, error = %err, source = ?err.source(), category, "reconcile failed");
    Action::requeue(error_backoff(category, 0))
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
