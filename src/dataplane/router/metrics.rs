//! Prometheus metrics of the router. Labels are bounded: endpoint and deployment names come
//! from the routing table, status classes are `1xx`…`5xx`, drop reasons are fixed words.
//! Handles for each deployment are resolved once per table load, so a request touches only
//! atomics.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// The label used when a request never reached an endpoint or a deployment.
pub const NONE: &str = "-";

/// Why a mirror copy was not delivered.
#[derive(Clone, Copy, Debug)]
pub enum MirrorDrop {
    /// The mirror queue was full.
    QueueFull,
    /// Every instance of the mirror deployment was at its concurrency limit.
    Busy,
    /// The mirror deployment had no ready instance.
    NoInstance,
    /// Connecting, sending or waiting failed or timed out.
    Failed,
}

impl MirrorDrop {
    fn label(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::Busy => "busy",
            Self::NoInstance => "no_instance",
            Self::Failed => "failed",
        }
    }
}

/// All router metrics, registered in their own registry.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    mirror_sent: IntCounterVec,
    mirror_dropped: IntCounterVec,
    reloads: IntCounterVec,
    batch_invokes: IntCounterVec,
    busy_polling: IntGauge,
}

/// Pre-resolved handles for one (endpoint, deployment) pair.
#[derive(Clone, Debug)]
pub struct RouteMetrics {
    by_class: [IntCounter; 5],
    latency: Histogram,
    mirror_sent: IntCounter,
    mirror_dropped: [IntCounter; 4],
}

impl RouteMetrics {
    /// Counts one answered request and its duration.
    pub fn observe(&self, status: u16, seconds: f64) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].inc();
        self.latency.observe(seconds);
    }

    /// Counts one mirror copy delivered (any status; the answer is discarded).
    pub fn mirror_sent(&self) {
        self.mirror_sent.inc();
    }

    /// Counts one mirror copy that was not delivered.
    pub fn mirror_dropped(&self, why: MirrorDrop) {
        self.mirror_dropped[why as usize].inc();
    }
}

/// Metric registration failed (a programming error: duplicate names).
#[derive(Debug, thiserror::Error)]
#[error("registering router metrics")]
pub struct MetricsError(#[source] prometheus::Error);

impl MetricsError {
    /// A bounded name for logs.
    pub fn category(&self) -> &'static str {
        "metrics"
    }
}

impl Metrics {
    /// Creates and registers every router metric.
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "mlcompute_router_requests_total",
                "Scoring requests answered, by status class",
            ),
            &["endpoint", "deployment", "class"],
        )
        .map_err(MetricsError)?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "mlcompute_router_request_duration_seconds",
                "Time from request head to response, as seen by the router",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["endpoint", "deployment"],
        )
        .map_err(MetricsError)?;
        let mirror_sent = IntCounterVec::new(
            Opts::new(
                "mlcompute_router_mirror_sent_total",
                "Mirror copies delivered (answers discarded)",
            ),
            &["endpoint", "deployment"],
        )
        .map_err(MetricsError)?;
        let mirror_dropped = IntCounterVec::new(
            Opts::new(
                "mlcompute_router_mirror_dropped_total",
                "Mirror copies not delivered, by reason",
            ),
            &["endpoint", "deployment", "reason"],
        )
        .map_err(MetricsError)?;
        let reloads = IntCounterVec::new(
            Opts::new(
                "mlcompute_router_table_reloads_total",
                "Routing table loads, by result",
            ),
            &["result"],
        )
        .map_err(MetricsError)?;
        let batch_invokes = IntCounterVec::new(
            Opts::new(
                "mlcompute_router_batch_invokes_total",
                "Batch endpoint invocations over HTTP, by result",
            ),
            &["result"],
        )
        .map_err(MetricsError)?;
        let busy_polling = IntGauge::new(
            "mlcompute_router_busy_polling_threads",
            "Serving threads polling for I/O without sleeping (--busy-poll-us) right now",
        )
        .map_err(MetricsError)?;
        registry
            .register(Box::new(busy_polling.clone()))
            .map_err(MetricsError)?;
        for collector in [
            &requests,
            &mirror_sent,
            &mirror_dropped,
            &reloads,
            &batch_invokes,
        ] {
            registry
                .register(Box::new(collector.clone()))
                .map_err(MetricsError)?;
        }
        registry
            .register(Box::new(latency.clone()))
            .map_err(MetricsError)?;
        Ok(Self {
            registry,
            requests,
            latency,
            mirror_sent,
            mirror_dropped,
            reloads,
            batch_invokes,
            busy_polling,
        })
    }

    /// Resolves the handles of one (endpoint, deployment) pair.
    pub fn route(&self, endpoint: &str, deployment: &str) -> RouteMetrics {
        let class = |c: &str| self.requests.with_label_values(&[endpoint, deployment, c]);
        let dropped = |why: MirrorDrop| {
            self.mirror_dropped
                .with_label_values(&[endpoint, deployment, why.label()])
        };
        RouteMetrics {
            by_class: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
            latency: self.latency.with_label_values(&[endpoint, deployment]),
            mirror_sent: self.mirror_sent.with_label_values(&[endpoint, deployment]),
            mirror_dropped: [
                dropped(MirrorDrop::QueueFull),
                dropped(MirrorDrop::Busy),
                dropped(MirrorDrop::NoInstance),
                dropped(MirrorDrop::Failed),
            ],
        }
    }

    /// Counts a table load (`applied` or `rejected`).
    pub fn reload(&self, applied: bool) {
        let result = if applied { "applied" } else { "rejected" };
        self.reloads.with_label_values(&[result]).inc();
    }

    /// Counts a batch invocation by its result (a bounded category).
    pub fn batch_invoke(&self, result: &'static str) {
        self.batch_invokes.with_label_values(&[result]).inc();
    }

    /// The gauge of serving threads busy polling.
    pub fn busy_polling(&self) -> IntGauge {
        self.busy_polling.clone()
    }

    /// The text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 * 1024);
        // Encoding into a Vec cannot fail for well-formed metrics; an error leaves partial output.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_drops_are_counted_with_bounded_labels() {
        let metrics = Metrics::new().unwrap();
        let route = metrics.route("iris", "blue");
        route.observe(200, 0.001);
        route.observe(429, 0.001);
        route.observe(504, 5.0);
        route.mirror_sent();
        route.mirror_dropped(MirrorDrop::QueueFull);
        metrics.reload(true);
        let text = String::from_utf8(metrics.render()).unwrap();
        for line in [
            r#"mlcompute_router_requests_total{class="2xx",deployment="blue",endpoint="iris"} 1"#,
            r#"mlcompute_router_requests_total{class="4xx",deployment="blue",endpoint="iris"} 1"#,
            r#"mlcompute_router_requests_total{class="5xx",deployment="blue",endpoint="iris"} 1"#,
            r#"mlcompute_router_mirror_sent_total{deployment="blue",endpoint="iris"} 1"#,
            r#"mlcompute_router_mirror_dropped_total{deployment="blue",endpoint="iris",reason="queue_full"} 1"#,
            r#"mlcompute_router_request_duration_seconds_count{deployment="blue",endpoint="iris"} 3"#,
            r#"mlcompute_router_table_reloads_total{result="applied"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
