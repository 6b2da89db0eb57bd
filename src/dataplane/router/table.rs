//! The routing table: what the router needs to know about every endpoint, and nothing else.
//!
//! In standalone mode (and in data-plane tests) it is a file a user writes, so it is parsed
//! strictly: an unknown field is a typo, and refused. In a cluster the router builds it from the
//! operator's routes (`crate::contract::routing`, which accepts unknown fields) and never parses
//! it. It serialises to JSON and YAML with camelCase keys; `examples/router-static.yaml` is a
//! complete example.
//!
//! ```yaml
//! endpoints:
//!   - name: iris
//!     auth: { mode: key, primaryKey: "k1", secondaryKey: "k2" }
//!     deployments:
//!       - name: blue
//!         traffic: 90
//!         backends: [{ address: "127.0.0.1:5001" }]
//!       - name: green
//!         traffic: 10
//!         backends: [{ address: "127.0.0.1:5002", ready: false }]
//! ```
//!
//! [`RoutingTable::validate`] checks the rules the router relies on (traffic sums to 0 or 100,
//! at most one mirror deployment, never both live and mirror, unique names,
//! parseable addresses). A table that fails validation is never applied: the router keeps the
//! last good one.

use std::{collections::BTreeSet, net::SocketAddr};

use serde::{Deserialize, Serialize};

use crate::contract::routing::ClusterRequestSettings;

/// Every endpoint the router serves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoutingTable {
    /// One entry per OnlineEndpoint; names are unique.
    #[serde(default)]
    pub endpoints: Vec<EndpointRoute>,
}

/// How one endpoint is reached and split across its deployments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointRoute {
    /// The endpoint name, as in the scoring URI `/api/v1/endpoint/{name}/score`.
    pub name: String,
    /// Who may call the endpoint.
    #[serde(default)]
    pub auth: Auth,
    /// The endpoint's deployments, including those at 0 % (reachable with the pinning header).
    #[serde(default)]
    pub deployments: Vec<DeploymentRoute>,
}

/// Authentication of scoring requests: `Authorization: Bearer <secret>`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "camelCase", deny_unknown_fields)]
pub enum Auth {
    /// Anyone may call.
    #[default]
    None,
    /// Azure ML `key` mode: either of the two keys is accepted, so keys can be rotated one at a time.
    #[serde(rename_all = "camelCase")]
    Key {
        /// The primary key.
        primary_key: String,
        /// The secondary key.
        secondary_key: String,
    },
    /// Azure ML `aml_token` mode: an unexpired token signed with this key for this endpoint
    /// (see [`crate::contract::token`]; `mlcompute endpoint get-credentials` mints them).
    #[serde(rename_all = "camelCase")]
    Token {
        /// The HMAC-SHA256 signing key.
        signing_key: String,
    },
}

/// One deployment of an endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentRoute {
    /// The deployment name, also the value of the `azureml-model-deployment` pinning header.
    pub name: String,
    /// Share of live traffic in percent (0–100). Over an endpoint these sum to 0 or 100.
    #[serde(default)]
    pub traffic: u32,
    /// Share of live traffic copied to this deployment in percent (0–100); responses are
    /// discarded. Azure ML caps this at 50 % and the OnlineEndpoint schema enforces that cap;
    /// the router itself mirrors any share (standalone use, benchmarks).
    #[serde(default)]
    pub mirror: u32,
    /// The path requests are forwarded to on an instance.
    #[serde(default = "default_scoring_path")]
    pub scoring_path: String,
    /// Timeouts and concurrency, as Azure ML's `request_settings`.
    #[serde(default)]
    pub request_settings: RequestSettings,
    /// The instances (pods) of the deployment.
    #[serde(default)]
    pub backends: Vec<Backend>,
}

/// One instance of a deployment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backend {
    /// `ip:port` of the instance (an IP address, never a name to resolve).
    pub address: String,
    /// Whether the instance may receive traffic (an EndpointSlice's `ready` condition).
    #[serde(default = "default_true")]
    pub ready: bool,
}

/// Azure ML's `request_settings`, with Azure ML's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestSettings {
    /// Time allowed for the instance to answer, in milliseconds (default 5000); then 504.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Requests one instance serves at once (default 1); more wait in the router's queue.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent_requests_per_instance: u32,
    /// How long a request may wait for a free instance, in milliseconds (default 500); then 503.
    #[serde(default = "default_max_queue_wait_ms")]
    pub max_queue_wait_ms: u64,
}

impl Default for RequestSettings {
    fn default() -> Self {
        Self {
            request_timeout_ms: default_request_timeout_ms(),
            max_concurrent_requests_per_instance: default_max_concurrent(),
            max_queue_wait_ms: default_max_queue_wait_ms(),
        }
    }
}

fn default_scoring_path() -> String {
    "/score".to_owned()
}
fn default_true() -> bool {
    true
}
// Azure ML's defaults, as the operator writes them (one spelling, in `api`).
fn default_request_timeout_ms() -> u64 {
    ClusterRequestSettings::default().request_timeout_ms
}
fn default_max_concurrent() -> u32 {
    ClusterRequestSettings::default().max_concurrent_requests_per_instance
}
fn default_max_queue_wait_ms() -> u64 {
    ClusterRequestSettings::default().max_queue_wait_ms
}

/// Why a routing table was refused.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The text is not a routing table.
    #[error("routing table does not parse")]
    Parse(#[source] serde_yaml::Error),
    /// Two endpoints share a name.
    #[error("endpoint {0:?} appears twice")]
    DuplicateEndpoint(String),
    /// Two deployments of one endpoint share a name.
    #[error("endpoint {endpoint:?}: deployment {deployment:?} appears twice")]
    DuplicateDeployment {
        endpoint: String,
        deployment: String,
    },
    /// Traffic percentages do not add up to 0 or 100.
    #[error("endpoint {endpoint:?}: traffic sums to {sum}, not 0 or 100")]
    TrafficSum { endpoint: String, sum: u32 },
    /// The mirror rules are broken.
    #[error("endpoint {endpoint:?}: {reason}")]
    Mirror {
        endpoint: String,
        reason: &'static str,
    },
    /// A backend address is not `ip:port`.
    #[error("endpoint {endpoint:?}, deployment {deployment:?}: backend {address:?} is not ip:port")]
    Address {
        endpoint: String,
        deployment: String,
        address: String,
    },
    /// A scoring path does not start with `/`.
    #[error(
        "endpoint {endpoint:?}, deployment {deployment:?}: scoring path {path:?} must start with /"
    )]
    ScoringPath {
        endpoint: String,
        deployment: String,
        path: String,
    },
}

impl TableError {
    /// A bounded name for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Parse(_) => "parse",
            Self::DuplicateEndpoint(_) | Self::DuplicateDeployment { .. } => "duplicate",
            Self::TrafficSum { .. } => "traffic_sum",
            Self::Mirror { .. } => "mirror",
            Self::Address { .. } => "address",
            Self::ScoringPath { .. } => "scoring_path",
        }
    }
}

/// The largest mirror share the router accepts (Azure ML's own cap of 50 % is enforced by the
/// OnlineEndpoint schema, not here).
pub const MAX_MIRROR_PERCENT: u32 = 100;

impl RoutingTable {
    /// Parses YAML or JSON (JSON is YAML) and validates the result.
    pub fn parse(text: &str) -> Result<Self, TableError> {
        let table: Self = serde_yaml::from_str(text).map_err(TableError::Parse)?;
        table.validate()?;
        Ok(table)
    }

    /// Checks the invariants the router relies on.
    pub fn validate(&self) -> Result<(), TableError> {
        let mut names = BTreeSet::new();
        for endpoint in &self.endpoints {
            if !names.insert(endpoint.name.as_str()) {
                return Err(TableError::DuplicateEndpoint(endpoint.name.clone()));
            }
            endpoint.validate()?;
        }
        Ok(())
    }
}

impl EndpointRoute {
    fn validate(&self) -> Result<(), TableError> {
        let mut names = BTreeSet::new();
        let mut sum = 0u32;
        let mut mirrors = 0;
        for deployment in &self.deployments {
            if !names.insert(deployment.name.as_str()) {
                return Err(TableError::DuplicateDeployment {
                    endpoint: self.name.clone(),
                    deployment: deployment.name.clone(),
                });
            }
            sum = sum.saturating_add(deployment.traffic);
            if deployment.mirror > 0 {
                mirrors += 1;
                let reason = if deployment.mirror > MAX_MIRROR_PERCENT {
                    Some("mirror traffic is at most 100 %")
                } else if deployment.traffic > 0 {
                    Some("a deployment cannot take both live and mirror traffic")
                } else {
                    None
                };
                if let Some(reason) = reason {
                    return Err(TableError::Mirror {
                        endpoint: self.name.clone(),
                        reason,
                    });
                }
            }
            if !deployment.scoring_path.starts_with('/') {
                return Err(TableError::ScoringPath {
                    endpoint: self.name.clone(),
                    deployment: deployment.name.clone(),
                    path: deployment.scoring_path.clone(),
                });
            }
            for backend in &deployment.backends {
                if backend.address.parse::<SocketAddr>().is_err() {
                    return Err(TableError::Address {
                        endpoint: self.name.clone(),
                        deployment: deployment.name.clone(),
                        address: backend.address.clone(),
                    });
                }
            }
        }
        if sum != 0 && sum != 100 {
            return Err(TableError::TrafficSum {
                endpoint: self.name.clone(),
                sum,
            });
        }
        if mirrors > 1 {
            return Err(TableError::Mirror {
                endpoint: self.name.clone(),
                reason: "only one deployment may receive mirror traffic",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/router-static.yaml"
    ));

    #[test]
    fn example_file_parses_with_defaults() {
        let table = RoutingTable::parse(EXAMPLE).unwrap();
        let iris = &table.endpoints[0];
        assert_eq!(iris.name, "iris");
        assert!(matches!(iris.auth, Auth::Key { .. }));
        let blue = &iris.deployments[0];
        assert_eq!(blue.traffic, 90);
        assert_eq!(blue.scoring_path, "/score");
        assert!(blue.backends.iter().all(|b| b.ready));
        let shadow = iris.deployments.iter().find(|d| d.mirror > 0).unwrap();
        assert_eq!(shadow.request_settings, RequestSettings::default());
    }

    #[test]
    fn defaults_follow_azure_ml() {
        let settings = RequestSettings::default();
        assert_eq!(settings.request_timeout_ms, 5000);
        assert_eq!(settings.max_concurrent_requests_per_instance, 1);
        assert_eq!(settings.max_queue_wait_ms, 500);
    }

    #[test]
    fn json_is_accepted_and_round_trips() {
        let table = RoutingTable::parse(EXAMPLE).unwrap();
        let json = serde_json::to_string(&table).unwrap();
        assert_eq!(RoutingTable::parse(&json).unwrap(), table);
    }

    fn one(deployments: &str) -> Result<RoutingTable, TableError> {
        RoutingTable::parse(&format!(
            "endpoints:\n  - name: e\n    deployments: {deployments}\n"
        ))
    }

    #[test]
    fn traffic_must_sum_to_0_or_100() {
        assert!(one("[{name: a, traffic: 0}, {name: b}]").is_ok());
        assert!(one("[{name: a, traffic: 60}, {name: b, traffic: 40}]").is_ok());
        let err = one("[{name: a, traffic: 60}, {name: b, traffic: 30}]").unwrap_err();
        assert_eq!(err.category(), "traffic_sum");
    }

    #[test]
    fn mirror_rules() {
        assert!(one("[{name: a, traffic: 100}, {name: b, mirror: 50}]").is_ok());
        assert!(one("[{name: a, traffic: 100}, {name: b, mirror: 100}]").is_ok());
        for bad in [
            "[{name: a, traffic: 100}, {name: b, mirror: 101}]",
            "[{name: a, traffic: 100, mirror: 10}]",
            "[{name: a, traffic: 100}, {name: b, mirror: 10}, {name: c, mirror: 10}]",
        ] {
            assert_eq!(one(bad).unwrap_err().category(), "mirror", "{bad}");
        }
    }

    #[test]
    fn bad_addresses_names_and_fields_are_refused() {
        let bad = one("[{name: a, traffic: 100, backends: [{address: 'pod-1:5001'}]}]");
        assert_eq!(bad.unwrap_err().category(), "address");
        let dup = one("[{name: a, traffic: 100}, {name: a}]");
        assert_eq!(dup.unwrap_err().category(), "duplicate");
        let typo = one("[{name: a, trafic: 100}]");
        assert_eq!(typo.unwrap_err().category(), "parse");
        let path = one("[{name: a, traffic: 100, scoringPath: score}]");
        assert_eq!(path.unwrap_err().category(), "scoring_path");
    }
}
