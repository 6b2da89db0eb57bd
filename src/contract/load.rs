//! The router's load report: what each router replica says about the demand on each deployment,
//! so that the operator's autoscaler can apply Azure ML's formula
//! (`utilization = (busy + queued) / replicas`).
//!
//! Writer: the router (`GET /load` on its listener, beside `/metrics`). Reader: the operator's
//! autoscaler, which polls every router replica and sums them.
//!
//! Gauges alone would give the autoscaler an instantaneous sample, which misses a burst between two
//! polls. So each deployment also carries two monotonic integrals since the router started:
//! request-seconds spent in flight and request-seconds spent queued. The difference between two
//! reports divided by the time between them is the average number of requests in flight (queued)
//! over that interval. `routerId` changes when a router restarts (its integrals start again at
//! zero), so a reader never takes a reset for negative load.
//!
//! Unknown fields are ignored: the operator and the routers run different releases in an upgrade.

use serde::{Deserialize, Serialize};

/// The path of the report on the router's listener.
pub const LOAD_PATH: &str = "/load";

/// One router replica's report.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LoadReport {
    /// Identifies this router process; a new value means its integrals restarted from zero.
    pub router_id: String,
    /// Seconds since the router process started, on its monotonic clock; the integrals below
    /// are read at this instant.
    pub uptime_seconds: f64,
    /// Every deployment this router has routed to or holds requests for.
    #[serde(default)]
    pub deployments: Vec<DeploymentLoad>,
}

/// Demand on one deployment, as one router replica saw it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentLoad {
    /// The endpoint's name (unique across namespaces).
    pub endpoint: String,
    /// The deployment's name.
    pub deployment: String,
    /// Requests being served now (holding a concurrency slot on an instance).
    #[serde(default)]
    pub in_flight: u64,
    /// Requests waiting now: for a free slot, or for a first ready instance (scale from zero).
    #[serde(default)]
    pub queued: u64,
    /// Request-seconds in flight since the router started (monotonic).
    #[serde(default)]
    pub busy_seconds: f64,
    /// Request-seconds queued since the router started (monotonic).
    #[serde(default)]
    pub queued_seconds: f64,
    /// Requests that arrived for this deployment since the router started (monotonic); tells
    /// an idle deployment from one whose requests are too short to show in the integrals.
    #[serde(default)]
    pub requests: u64,
}

impl LoadReport {
    /// The report of `deployment` of `endpoint`, if this router knows it.
    pub fn deployment(&self, endpoint: &str, deployment: &str) -> Option<&DeploymentLoad> {
        self.deployments
            .iter()
            .find(|d| d.endpoint == endpoint && d.deployment == deployment)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn unknown_fields_are_ignored_and_missing_counters_are_zero() {
        let report: LoadReport = serde_json::from_value(json!({
            "routerId": "r1", "uptimeSeconds": 12.5, "fromTheFuture": true,
            "deployments": [
                { "endpoint": "e", "deployment": "blue", "inFlight": 2, "busySeconds": 3.5, "p99": 1 },
                { "endpoint": "e", "deployment": "green" }
            ]
        }))
        .unwrap();
        let blue = report.deployment("e", "blue").unwrap();
        assert_eq!(
            (blue.in_flight, blue.queued, blue.busy_seconds),
            (2, 0, 3.5)
        );
        assert_eq!(report.deployment("e", "green").unwrap().requests, 0);
        assert!(report.deployment("e", "red").is_none());
    }

    #[test]
    fn round_trips() {
        let report = LoadReport {
            router_id: "r".into(),
            uptime_seconds: 1.0,
            deployments: vec![DeploymentLoad {
                endpoint: "e".into(),
                deployment: "d".into(),
                in_flight: 1,
                queued: 2,
                busy_seconds: 0.5,
                queued_seconds: 0.25,
                requests: 7,
            }],
        };
        let text = serde_json::to_string(&report).unwrap();
        assert!(text.contains("\"queuedSeconds\":0.25"), "{text}");
        assert_eq!(serde_json::from_str::<LoadReport>(&text).unwrap(), report);
    }
}
