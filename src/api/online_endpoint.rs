//! `OnlineEndpoint`: a real-time scoring endpoint with traffic split and mirroring across its
//! deployments.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, percent_map, rules};

/// A real-time endpoint: one scoring URI in front of several OnlineDeployments, with a weighted
/// traffic split (blue/green, canary) and an optional mirror.
///
/// `traffic` and `mirrorTraffic` are keyed by OnlineDeployment name (`metadata.name` of an
/// OnlineDeployment in the same namespace whose `spec.endpointName` is this endpoint).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "mlcompute.io",
    version = "v1alpha1",
    kind = "OnlineEndpoint",
    namespaced,
    status = "OnlineEndpointStatus",
    shortname = "oe",
    category = "mlcompute",
    doc = "A real-time scoring endpoint with a traffic split and an optional mirror across its OnlineDeployments.",
    printcolumn(name = "State", type_ = "string", json_path = ".status.provisioningState"),
    printcolumn(name = "Auth", type_ = "string", json_path = ".spec.authMode"),
    printcolumn(name = "Traffic", type_ = "string", json_path = ".spec.traffic"),
    printcolumn(name = "Mirror", type_ = "string", json_path = ".spec.mirrorTraffic"),
    printcolumn(name = "Scoring URI", type_ = "string", json_path = ".status.scoringUri", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = rules::object_name("OnlineEndpoint"),
)]
#[x_kube(
    validation = Rule::new("self.mirrorTraffic.all(k, !(k in self.traffic) || self.traffic[k] == 0)")
        .message("a deployment cannot receive both live traffic and mirrored traffic: set its traffic to 0 before mirroring to it"),
)]
#[serde(rename_all = "camelCase")]
pub struct OnlineEndpointSpec {
    /// Free-text description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// How callers authenticate: `key` (default; keys in a Secret the operator owns and can
    /// regenerate), `aml_token` (expiring tokens signed with a key the operator keeps in that
    /// Secret; `mlcompute endpoint get-credentials` mints them) or `none`.
    #[serde(default)]
    pub auth_mode: AuthMode,
    /// Percent of live requests per deployment (0–100 each, adding up to 0 or 100). A request with
    /// header `azureml-model-deployment: <name>` goes to that deployment regardless.
    #[serde(default)]
    #[schemars(transform = percent_map::<20, 100>)]
    #[x_kube(
        validation = rules::deployment_name_keys(),
        validation = Rule::new("self.size() == 0 || self.map(k, self[k]).sum() in [0, 100]").message("traffic percentages must add up to 0 or 100"),
    )]
    pub traffic: BTreeMap<String, i32>,
    /// Percent of live requests copied to one deployment (at most 50); its responses are discarded.
    /// The mirror deployment must have no live traffic.
    #[serde(default)]
    #[schemars(transform = percent_map::<1, 50>)]
    #[x_kube(validation = rules::deployment_name_keys())]
    pub mirror_traffic: BTreeMap<String, i32>,
}

/// How callers authenticate to an online endpoint.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    // `Authorization: Bearer <primary or secondary key>`.
    #[default]
    Key,
    // `Authorization: Bearer <token>`, expiring tokens signed with the endpoint's signing key.
    AmlToken,
    // No authentication; for development clusters.
    None,
}

/// Provisioning states of endpoints and deployments, as in Azure ML.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ProvisioningState {
    Creating,
    Updating,
    Scaling,
    Succeeded,
    Failed,
    Deleting,
}

/// Readiness of one deployment behind the endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentReadiness {
    /// OnlineDeployment name.
    pub name: String,
    /// Whether at least one instance is ready (a rolling update keeps a deployment ready, and its
    /// traffic share, while old instances still serve).
    pub ready: bool,
    /// Ready instances.
    #[serde(default)]
    pub ready_instances: i32,
    /// Desired instances.
    #[serde(default)]
    pub instances: i32,
}

/// Observed state of an OnlineEndpoint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OnlineEndpointStatus {
    /// Creating, Updating, Succeeded, Failed or Deleting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<ProvisioningState>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions (`Ready`, `Resolved`), with observedGeneration and lastTransitionTime.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// URI to POST scoring requests to. The endpoint's name is its scoring URI, so one endpoint
    /// per name is routed across the watched namespaces: the oldest. Another one of the same name
    /// gets no scoring URI, `Ready` False with reason `NameTaken`, and takes the name over once
    /// the older one is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scoring_uri: Option<String>,
    /// URI of the endpoint's OpenAPI (swagger) document, beside the scoring URI: `GET` it with the
    /// same key (`?version=3` for OpenAPI 3). The router answers with the `/swagger.json` of the
    /// deployment named in `azureml-model-deployment`, else of the one with the largest traffic
    /// share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openapi_uri: Option<String>,
    /// Secret holding `primaryKey` and `secondaryKey` (auth mode `key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_secret_name: Option<String>,
    /// Traffic split the router is actually applying (deployments that are not ready get none).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub traffic_applied: BTreeMap<String, i32>,
    /// Mirror the router is actually applying.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mirror_traffic_applied: BTreeMap<String, i32>,
    /// Readiness of every deployment of this endpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deployments: Vec<DeploymentReadiness>,
}
