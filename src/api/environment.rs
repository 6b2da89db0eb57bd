//! `Environment`: a registered container image that jobs and deployments refer to by name.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, max_properties, rules};

/// Root rule: a version recorded in `status.versions` keeps its image. On a spec update the API
/// server keeps the old status (the status subresource), so this compares the new spec with what
/// the operator recorded; on the operator's own status writes the spec is unchanged, and the
/// operator records the spec's own image, so they pass.
const PINNED_VERSION_KEEPS_ITS_IMAGE: &str = "!has(self.status) || !has(self.status.versions) || self.status.versions.all(v, v.version != self.spec.version || v.image == self.spec.image)";

/// A versioned container image, with its default environment variables and, for serving, the routes
/// the inference server answers on.
///
/// Referenced from jobs and deployments as `<name>` or `<name>@latest` (whatever this object holds
/// now) or `<name>:<version>` (the current version, or any of the last 20 it held: the operator
/// records each in `status.versions`). The image and version a child actually ran with are recorded
/// in the child's status, so a run stays reproducible.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "mlcompute.io",
    version = "v1alpha1",
    kind = "Environment",
    namespaced,
    status = "EnvironmentStatus",
    shortname = "env",
    category = "mlcompute",
    doc = "A registered container image that jobs and deployments refer to by name (Azure ML environment).",
    printcolumn(name = "Image", type_ = "string", json_path = ".spec.image"),
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.version"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 63").message("Environment names must be at most 63 characters"),
    validation = Rule::new(PINNED_VERSION_KEEPS_ITS_IMAGE).message("spec.version is already recorded in status.versions with another image: a pinned <name>:<version> must keep running what it ran, so give the new image a new version"),
)]
#[x_kube(
    validation = Rule::new("self.version != oldSelf.version || self.image == oldSelf.image")
        .message("image can only change together with version: environments are versioned, so bump spec.version when you change the image"),
)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentSpec {
    /// Container image, e.g. `mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest`.
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = rules::image())]
    pub image: String,
    /// Version label of this environment; references of the form `<name>:<version>` must match it.
    #[serde(default = "default_version")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new(format!("self.matches(r'{}')", super::common::VERSION_PATTERN)).message("version must be letters, digits, '.', '_' or '-', starting with a letter or digit"))]
    pub version: String,
    /// Free-text description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// Names of `kubernetes.io/dockerconfigjson` Secrets in this namespace used to pull the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(max = 253)))]
    #[x_kube(validation = Rule::new(format!("self.all(s, s.matches(r'{}'))", super::common::DNS_SUBDOMAIN_PATTERN)).message("imagePullSecrets entries must be Secret names (lowercase letters, digits, '-' and '.')"))]
    pub image_pull_secrets: Vec<String>,
    /// Environment variables set in every container that uses this environment; the job's or
    /// deployment's own variables win on conflict.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = max_properties::<128>)]
    #[x_kube(validation = rules::env_var_names())]
    pub environment_variables: BTreeMap<String, String>,
    /// Routes of a custom serving container. Omitted: the Azure ML inference server defaults
    /// (port 5001; liveness and readiness `GET /`, scoring `POST /score`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_config: Option<InferenceConfig>,
}

fn default_version() -> String {
    "1".into()
}

/// The HTTP routes an inference container serves.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InferenceConfig {
    /// Route the liveness probe calls.
    pub liveness_route: Route,
    /// Route the readiness probe calls.
    pub readiness_route: Route,
    /// Route scoring requests are forwarded to.
    pub scoring_route: Route,
}

/// One HTTP route of the serving container.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Container port.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// HTTP path, starting with `/`.
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("route path must start with '/'"))]
    pub path: String,
}

/// Observed state of an Environment.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions (`Ready`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Versions this environment has held, oldest first (the last 20), recorded by the operator:
    /// `<name>:<version>` keeps resolving to them after `spec.version` moves on, as Azure ML keeps
    /// every version of an environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub versions: Vec<EnvironmentVersionRecord>,
}

/// One version an environment has held: what a reference to it runs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentVersionRecord {
    /// The version label.
    #[schemars(length(max = 64))]
    pub version: String,
    /// The image of that version.
    #[schemars(length(max = 1024))]
    pub image: String,
    /// Pull Secrets of that version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(max = 253)))]
    pub image_pull_secrets: Vec<String>,
    /// Variables of that version.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = max_properties::<128>)]
    pub environment_variables: BTreeMap<String, String>,
    /// Serving routes of that version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_config: Option<InferenceConfig>,
    /// When the operator first saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

impl EnvironmentVersionRecord {
    /// The record of `spec` (without a time).
    pub fn of(spec: &EnvironmentSpec) -> Self {
        Self {
            version: spec.version.clone(),
            image: spec.image.clone(),
            image_pull_secrets: spec.image_pull_secrets.clone(),
            environment_variables: spec.environment_variables.clone(),
            inference_config: spec.inference_config.clone(),
            registered_at: None,
        }
    }

    /// Whether it says the same as `other`, ignoring when each was recorded.
    pub fn same_content(&self, other: &Self) -> bool {
        Self {
            registered_at: None,
            ..self.clone()
        } == Self {
            registered_at: None,
            ..other.clone()
        }
    }
}

impl Environment {
    /// What `<name>:<version>` runs: the version as first recorded in status (a pinned version
    /// never changes), else the current spec when it is at `version` and not yet recorded.
    pub fn held(&self, version: &str) -> Option<EnvironmentVersionRecord> {
        let recorded = self
            .status
            .as_ref()
            .and_then(|s| s.versions.iter().rev().find(|v| v.version == version))
            .cloned();
        recorded.or_else(|| {
            (self.spec.version == version).then(|| EnvironmentVersionRecord::of(&self.spec))
        })
    }

    /// The versions a reference can name now, for messages.
    pub fn versions_held(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .status
            .iter()
            .flat_map(|s| s.versions.iter().map(|v| v.version.clone()))
            .collect();
        if !all.contains(&self.spec.version) {
            all.push(self.spec.version.clone());
        }
        all
    }
}
