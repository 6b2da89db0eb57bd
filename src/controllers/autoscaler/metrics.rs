//! The autoscaler's metrics. Labels are bounded: decision reasons and directions are fixed words,
//! never a deployment name.

use prometheus::{IntCounterVec, Opts, Registry};
use tracing::warn;

use super::decide::Reason;

/// Counters of evaluations, scalings, router reads and failed writes.
#[derive(Clone)]
pub struct ScaleMetrics {
    evaluations: IntCounterVec,
    scalings: IntCounterVec,
    reads: IntCounterVec,
    errors: IntCounterVec,
}

impl ScaleMetrics {
    /// Creates the counters and registers them in `registry` (a failed registration, a bug, is
    /// logged: the autoscaler runs without them).
    pub fn register(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str, label: &str| {
            IntCounterVec::new(Opts::new(name, help), &[label])
                .unwrap_or_else(|e| panic!("static metric definition: {e}"))
        };
        let metrics = Self {
            evaluations: counter(
                "autoscaler_evaluations_total",
                "Autoscaler evaluations of target_utilization deployments, by decision reason",
                "reason",
            ),
            scalings: counter(
                "autoscaler_scalings_total",
                "Instance count changes written by the autoscaler, by direction (up, down, from_zero, to_zero)",
                "direction",
            ),
            reads: counter(
                "autoscaler_router_reads_total",
                "Router load reports read, by result (ok, error)",
                "result",
            ),
            errors: counter(
                "autoscaler_write_errors_total",
                "Failed autoscaler writes, by what (scale, status)",
                "what",
            ),
        };
        for c in [
            &metrics.evaluations,
            &metrics.scalings,
            &metrics.reads,
            &metrics.errors,
        ] {
            if let Err(error) = registry.register(Box::new(c.clone())) {
                warn!(%error, "autoscaler metrics not registered");
            }
        }
        metrics
    }

    pub fn evaluated(&self, reason: Reason) {
        self.evaluations.with_label_values(&[reason.as_str()]).inc();
    }

    pub fn scaled(&self, reason: Reason) {
        self.scalings.with_label_values(&[reason.direction()]).inc();
    }

    pub fn read(&self, ok: bool) {
        self.reads
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    pub fn error(&self, what: &'static str) {
        self.errors.with_label_values(&[what]).inc();
    }
}
