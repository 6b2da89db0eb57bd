//! `BatchEndpoint`: a stable name that batch jobs are submitted to, routed to a default deployment.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{
    common::{Condition, rules},
    online_endpoint::ProvisioningState,
};

/// A batch scoring endpoint. A BatchJob names the endpoint and optionally a deployment; without
/// one it runs on `spec.defaults.deploymentName`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "mlcompute.io",
    version = "v1alpha1",
    kind = "BatchEndpoint",
    namespaced,
    status = "BatchEndpointStatus",
    shortname = "be",
    category = "mlcompute",
    doc = "A batch scoring endpoint: BatchJobs submitted to it run on its default (or a named) BatchDeployment.",
    printcolumn(name = "Default Deployment", type_ = "string", json_path = ".spec.defaults.deploymentName"),
    printcolumn(name = "State", type_ = "string", json_path = ".status.provisioningState"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = rules::object_name("BatchEndpoint"),
)]
#[serde(rename_all = "camelCase")]
pub struct BatchEndpointSpec {
    /// Free-text description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// What a job gets when it does not say.
    #[serde(default)]
    pub defaults: BatchEndpointDefaults,
}

/// Defaults for jobs submitted to a batch endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchEndpointDefaults {
    /// BatchDeployment that jobs without `deploymentName` run on. Unset: such jobs fail with
    /// reason `NoDefaultDeployment`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = rules::azure_name("defaults.deploymentName"))]
    pub deployment_name: Option<String>,
    /// Folder under which each job without `outputPath` writes, in a subfolder named after the job:
    /// `pvc://<claim>/<path>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = rules::output_uri("defaults.outputPath"))]
    pub output_path: Option<String>,
}

/// Observed state of a BatchEndpoint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchEndpointStatus {
    /// Creating, Updating, Succeeded, Failed or Deleting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<ProvisioningState>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions (`Ready`: the default deployment exists and is ready, and no other
    /// namespace holds the endpoint's name: reason `NameTaken`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// URI of the REST invoke API for this endpoint. The endpoint's name is its invoke URI, so one
    /// endpoint per name is invoked across the watched namespaces: the oldest. Another one of the
    /// same name gets no invoke URI, `Ready` False with reason `NameTaken`, and takes the name over
    /// once the older one is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoke_uri: Option<String>,
}
