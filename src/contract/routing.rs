//! The routing table the OnlineEndpoint controller writes and the router reads.
//!
//! Writer: the OnlineEndpoint controller, one [`ClusterRoute`] per endpoint as JSON under
//! [`ROUTING_TABLE_KEY`] of the ConfigMap `<endpoint>-routing`, labelled [`ROUTING_TABLE_LABEL`].
//! Reader: the router's cluster source, which selects those ConfigMaps ([`routing_selector`]),
//! the EndpointSlices of the deployments' Services ([`instance_slice_selector`]) and the keys
//! Secrets ([`super::keys::secret_selector`]), and joins them into its table. Backends are named
//! by Service and port, keys by Secret: instances come and go faster than the controller should
//! rewrite anything.
//!
//! ```json
//! { "endpoint": "fraud", "auth": { "mode": "key", "secretName": "fraud-keys" },
//!   "deployments": [
//!     { "name": "blue", "traffic": 90, "scoringPath": "/score", "service": "blue", "port": 5001, "portName": "http" },
//!     { "name": "green", "traffic": 10, "scoringPath": "/score", "service": "green", "port": 5001, "portName": "http",
//!       "requestSettings": { "requestTimeoutMs": 1000 } } ] }
//! ```
//!
//! **Compatibility.** The operator and the router are separate Deployments that `helm upgrade`
//! rolls independently, so a router may read a route written by a newer or older operator.
//! Readers of this release ignore unknown fields at every level and read an unknown auth mode as
//! [`ClusterAuth::Unknown`], which fails closed (the endpoint is left out, as when its keys are
//! missing). Routers released before this module (commit `1cb0798` and earlier) refuse unknown
//! fields inside `requestSettings` and unknown auth modes, dropping that endpoint: while such
//! routers may still run, a writer must not add either (`tests/version_skew.rs` holds the writer to
//! it). Fields added anywhere else are ignored by every release.

use serde::{Deserialize, Serialize};

use super::labels;
use crate::api::{OnlineDeployment, online_deployment::RequestSettings};

/// Label on every routing ConfigMap (value `"true"`), so the router selects them all with one watch.
pub const ROUTING_TABLE_LABEL: &str = "mlcompute.io/routing-table";
/// The ConfigMap key holding an endpoint's route (JSON).
pub const ROUTING_TABLE_KEY: &str = "route.json";

/// Label selector of every routing ConfigMap.
pub fn routing_selector() -> String {
    format!("{ROUTING_TABLE_LABEL}=true")
}

/// Label selector of the EndpointSlices of every OnlineDeployment's Service (Kubernetes copies a
/// Service's labels onto its slices).
pub fn instance_slice_selector() -> String {
    labels::owner_label_key::<OnlineDeployment>()
}

/// One endpoint's route with backends by Service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRoute {
    /// The OnlineEndpoint name.
    pub endpoint: String,
    /// Who may call it.
    #[serde(default)]
    pub auth: ClusterAuth,
    /// Every deployment of the endpoint, sorted by name (0 % ones are reachable by pinning).
    #[serde(default)]
    pub deployments: Vec<ClusterDeployment>,
}

/// Authentication, with keys kept in a Secret (never in the ConfigMap).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "camelCase")]
pub enum ClusterAuth {
    /// Anyone may call.
    #[default]
    None,
    /// Either key of the Secret.
    #[serde(rename_all = "camelCase")]
    Key { secret_name: String },
    /// A token signed with the Secret's signing key.
    #[serde(rename_all = "camelCase")]
    Token { secret_name: String },
    /// A mode this reader does not know (written by a newer operator). Never written; a reader
    /// fails closed on it: the endpoint is not served.
    #[serde(other)]
    Unknown,
}

impl ClusterAuth {
    /// The keys Secret the mode reads, if any.
    pub fn secret_name(&self) -> Option<&str> {
        match self {
            Self::Key { secret_name } | Self::Token { secret_name } => Some(secret_name),
            Self::None | Self::Unknown => None,
        }
    }
}

/// One deployment: how the router reaches and limits it, with a Service instead of instances.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterDeployment {
    pub name: String,
    /// Share of live traffic in percent.
    #[serde(default)]
    pub traffic: u32,
    /// Share of live traffic copied to this deployment in percent.
    #[serde(default)]
    pub mirror: u32,
    /// The path requests are forwarded to on an instance.
    pub scoring_path: String,
    #[serde(default)]
    pub request_settings: ClusterRequestSettings,
    /// Service in the endpoint's namespace whose EndpointSlices list the instances.
    pub service: String,
    /// The Service port (for an HTTPRoute backendRef).
    pub port: i32,
    /// The Service port's name, looked up in EndpointSlices for the instance port.
    pub port_name: String,
}

/// Azure ML's `request_settings` as the router applies them; a missing field takes the
/// OnlineDeployment's default.
///
/// The previous release's router refuses unknown fields here: see the module's compatibility note
/// before adding one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRequestSettings {
    /// Time allowed for the instance to answer, in milliseconds; then 504.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Requests one instance serves at once; more wait in the router's queue.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent_requests_per_instance: u32,
    /// How long a request may wait for a free instance, in milliseconds; then 429.
    #[serde(default = "default_max_queue_wait_ms")]
    pub max_queue_wait_ms: u64,
}

impl From<&RequestSettings> for ClusterRequestSettings {
    /// The deployment's settings, clamped to what the router can apply (a timeout and a
    /// concurrency of at least 1, no negative wait).
    fn from(rs: &RequestSettings) -> Self {
        Self {
            request_timeout_ms: u64::try_from(rs.request_timeout_ms.max(1)).unwrap_or(1),
            max_concurrent_requests_per_instance: u32::try_from(
                rs.max_concurrent_requests_per_instance.max(1),
            )
            .unwrap_or(1),
            max_queue_wait_ms: u64::try_from(rs.max_queue_wait_ms.max(0)).unwrap_or(0),
        }
    }
}

impl Default for ClusterRequestSettings {
    /// The OnlineDeployment's defaults (Azure ML's): 5000 ms, 1, 500 ms.
    fn default() -> Self {
        Self::from(&RequestSettings::default())
    }
}

fn default_request_timeout_ms() -> u64 {
    ClusterRequestSettings::default().request_timeout_ms
}
fn default_max_concurrent() -> u32 {
    ClusterRequestSettings::default().max_concurrent_requests_per_instance
}
fn default_max_queue_wait_ms() -> u64 {
    ClusterRequestSettings::default().max_queue_wait_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/online/route.json"
    ));

    #[test]
    fn defaults_follow_azure_ml() {
        let d = ClusterRequestSettings::default();
        assert_eq!(
            (
                d.request_timeout_ms,
                d.max_concurrent_requests_per_instance,
                d.max_queue_wait_ms
            ),
            (5000, 1, 500)
        );
        let route: ClusterRoute = serde_json::from_str(ROUTE).unwrap();
        let green = &route.deployments[1].request_settings;
        assert_eq!(
            (green.request_timeout_ms, green.max_queue_wait_ms),
            (1000, 500)
        );
    }

    #[test]
    fn unknown_fields_are_ignored_and_an_unknown_mode_is_unknown() {
        let mut v: serde_json::Value = serde_json::from_str(ROUTE).unwrap();
        v["later"] = serde_json::json!({ "x": 1 });
        v["auth"]["scope"] = serde_json::json!("all");
        v["deployments"][0]["weightHint"] = serde_json::json!(3);
        v["deployments"][1]["requestSettings"]["maxBodyBytes"] = serde_json::json!(1024);
        let lenient: ClusterRoute = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(
            lenient,
            serde_json::from_str::<ClusterRoute>(ROUTE).unwrap()
        );
        v["auth"] = serde_json::json!({ "mode": "entraId", "tenant": "t" });
        let unknown: ClusterRoute = serde_json::from_value(v).unwrap();
        assert_eq!(unknown.auth, ClusterAuth::Unknown);
        assert_eq!(unknown.auth.secret_name(), None);
    }
}
