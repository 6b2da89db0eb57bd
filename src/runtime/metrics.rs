//! Prometheus metrics of the operator. Labels are bounded: controller names, phases and error
//! categories are fixed sets; never an object name or an error string.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Metrics shared by every controller.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: IntCounterVec,
    pub reconcile_duration: HistogramVec,
    pub reconcile_errors: IntCounterVec,
    pub pods_created: IntCounterVec,
    pub objects_by_phase: IntGaugeVec,
    pub child_applies: IntCounterVec,
}

impl Metrics {
    /// Registers the metrics in a fresh registry. Fails only on duplicate names (a bug).
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new_custom(Some("mlcompute".into()), None)?;
        let reconciles = IntCounterVec::new(
            Opts::new("reconciles_total", "Reconciles run, by controller"),
            &["controller"],
        )?;
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new(
                "reconcile_duration_seconds",
                "Time spent in one reconcile, by controller",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["controller"],
        )?;
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "reconcile_errors_total",
                "Failed reconciles, by controller and error category",
            ),
            &["controller", "category"],
        )?;
        let pods_created = IntCounterVec::new(
            Opts::new("pods_created_total", "Pods created, by controller"),
            &["controller"],
        )?;
        let objects_by_phase = IntGaugeVec::new(
            Opts::new("objects_by_phase", "Watched objects by kind and phase"),
            &["kind", "phase"],
        )?;
        let child_applies = IntCounterVec::new(
            Opts::new(
                "child_applies_total",
                "Desired children compared with the cache, by controller, kind and result (written or unchanged)",
            ),
            &["controller", "kind", "result"],
        )?;
        registry.register(Box::new(child_applies.clone()))?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(reconcile_errors.clone()))?;
        registry.register(Box::new(pods_created.clone()))?;
        registry.register(Box::new(objects_by_phase.clone()))?;
        Ok(Self {
            registry,
            reconciles,
            reconcile_duration,
            reconcile_errors,
            pods_created,
            objects_by_phase,
            child_applies,
        })
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(err) =
            prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out)
        {
            tracing::warn!(%err, "encoding metrics failed");
        }
        out
    }
}
