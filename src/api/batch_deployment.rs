//! `BatchDeployment`: a model and scoring script that batch jobs run, with Azure ML's batch settings.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    common::{
        CodeConfiguration, Condition, MAX_ERROR_THRESHOLD, MAX_RUN_TIMEOUT, max_properties, rules,
    },
    online_endpoint::ProvisioningState,
    security_context::{PodSecurityContext, SecurityContext},
};

/// A model plus scoring code that a BatchEndpoint's jobs run: the input files are split into
/// mini-batches, and each instance runs `maxConcurrencyPerInstance` workers calling the script's
/// `run(mini_batch)`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "mlcompute.io",
    version = "v1alpha1",
    kind = "BatchDeployment",
    namespaced,
    status = "BatchDeploymentStatus",
    shortname = "bd",
    category = "mlcompute",
    doc = "A model and scoring script that batch jobs run, split into mini-batches across instances.",
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".spec.endpointName"),
    printcolumn(name = "Instances", type_ = "integer", json_path = ".spec.resources.instanceCount"),
    printcolumn(name = "Mini-batch", type_ = "integer", json_path = ".spec.settings.miniBatchSize"),
    printcolumn(name = "State", type_ = "string", json_path = ".status.provisioningState"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = rules::object_name("BatchDeployment"),
)]
#[x_kube(
    validation = Rule::new("has(self.environment) != has(self.image)").message("set exactly one of environment (a registered Environment) or image (an inline image)"),
    validation = rules::immutable("endpointName", "; create a new deployment instead"),
)]
#[serde(rename_all = "camelCase")]
pub struct BatchDeploymentSpec {
    /// Name of the BatchEndpoint in this namespace this deployment belongs to. Immutable.
    #[schemars(length(max = 32))]
    #[x_kube(validation = rules::azure_name("endpointName"))]
    pub endpoint_name: String,
    /// Free-text description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// Model files: `pvc://<claim>/<path>` or `https://…`; exposed as `AZUREML_MODEL_DIR`.
    #[schemars(length(max = 2048))]
    #[x_kube(validation = rules::input_uri("model"))]
    pub model: String,
    /// Scoring code and script (defines `init()` and `run(mini_batch)`).
    pub code_configuration: CodeConfiguration,
    /// Registered Environment: `<name>`, `<name>:<version>` or `<name>@latest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 317))]
    #[x_kube(validation = rules::environment_ref())]
    pub environment: Option<String>,
    /// Inline container image, instead of a registered environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = rules::image())]
    pub image: Option<String>,
    /// Instance type and count.
    #[serde(default)]
    pub resources: BatchResources,
    /// Azure ML batch settings.
    #[serde(default)]
    pub settings: BatchSettings,
    /// Pod-wide security settings of the jobs' driver Pods (user, group, fsGroup, seccomp). Omitted:
    /// the image's user, seccomp `RuntimeDefault`. A non-root `runAsUser` lets the jobs' driver Pods run in a
    /// namespace enforcing PodSecurity `restricted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security_context: Option<PodSecurityContext>,
    /// Security settings of every container of the jobs' driver Pods, init containers included. Omitted:
    /// no privilege escalation, and all capabilities dropped when running as a non-root user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
}

/// Instance type and count of a batch deployment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchResources {
    /// Name of an InstanceType. Omitted: `defaultinstancetype`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    #[x_kube(validation = rules::dns_label("instanceType"))]
    pub instance_type: Option<String>,
    /// Instances per job.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1000))]
    pub instance_count: i32,
}

impl Default for BatchResources {
    fn default() -> Self {
        BatchResources {
            instance_type: None,
            instance_count: 1,
        }
    }
}

/// What happens to the results of `run()`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputAction {
    // Every result row is appended to outputFileName.
    #[default]
    AppendRow,
    // Results are dropped; only the job's counters are kept.
    SummaryOnly,
}

/// Log verbosity of the batch driver.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LoggingLevel {
    Debug,
    #[default]
    Info,
    Warning,
}

/// Retries of a failed or timed-out mini-batch.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetrySettings {
    /// Retries per mini-batch.
    #[serde(default = "three")]
    #[schemars(range(min = 0, max = 100))]
    pub max_retries: i32,
    /// Longest one `run()` call may take before it counts as failed (Azure ML: 30 seconds); at
    /// most 24h.
    #[serde(default = "thirty_seconds")]
    #[schemars(length(max = 64))]
    #[x_kube(
        validation = rules::duration("retrySettings.timeout"),
        validation = rules::duration_at_most("retrySettings.timeout", MAX_RUN_TIMEOUT),
    )]
    pub timeout: String,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            max_retries: 3,
            timeout: thirty_seconds(),
        }
    }
}

/// Azure ML's batch deployment `settings`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchSettings {
    /// Parallel `run()` workers per instance.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_concurrency_per_instance: i32,
    /// Files per `run()` call.
    #[serde(default = "ten")]
    #[schemars(range(min = 1, max = 100000))]
    pub mini_batch_size: i32,
    /// `append_row` (collect results into outputFileName) or `summary_only`.
    #[serde(default)]
    pub output_action: OutputAction,
    /// Name of the results file in the job's output folder.
    #[serde(default = "predictions_csv")]
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(validation = Rule::new("self.matches(r'^[A-Za-z0-9._-]+$') && self != '.' && self != '..'").message("outputFileName must be a plain file name (letters, digits, '.', '_' or '-'; no '/')"))]
    pub output_file_name: String,
    /// Mini-batch retries.
    #[serde(default)]
    pub retry_settings: RetrySettings,
    /// Failed files tolerated before the job is aborted; -1 tolerates any number.
    #[serde(default = "minus_one")]
    #[schemars(range(min = -1, max = MAX_ERROR_THRESHOLD))]
    pub error_threshold: i32,
    /// `debug`, `info` or `warning`.
    #[serde(default)]
    pub logging_level: LoggingLevel,
    /// Environment variables for the scoring workers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = max_properties::<128>)]
    #[x_kube(validation = rules::env_var_names())]
    pub environment_variables: BTreeMap<String, String>,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            max_concurrency_per_instance: 1,
            mini_batch_size: 10,
            output_action: OutputAction::AppendRow,
            output_file_name: predictions_csv(),
            retry_settings: RetrySettings::default(),
            error_threshold: -1,
            logging_level: LoggingLevel::Info,
            environment_variables: BTreeMap::new(),
        }
    }
}

fn one() -> i32 {
    1
}

fn three() -> i32 {
    3
}

fn ten() -> i32 {
    10
}

fn minus_one() -> i32 {
    -1
}

fn thirty_seconds() -> String {
    "30s".into()
}

fn predictions_csv() -> String {
    "predictions.csv".into()
}

/// Observed state of a BatchDeployment.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchDeploymentStatus {
    /// Creating, Updating, Succeeded, Failed or Deleting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<ProvisioningState>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions (`Resolved`: endpoint, environment and instance type exist).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Image jobs will run, as resolved from the environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Version of the Environment resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_version: Option<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn omitted_settings_take_azure_ml_defaults() {
        let s: BatchSettings = serde_json::from_value(json!({})).unwrap();
        assert_eq!(s, BatchSettings::default());
        assert_eq!(
            (
                s.mini_batch_size,
                s.max_concurrency_per_instance,
                s.error_threshold
            ),
            (10, 1, -1)
        );
        assert_eq!(
            (s.output_action, s.output_file_name.as_str()),
            (OutputAction::AppendRow, "predictions.csv")
        );
        assert_eq!(
            (
                s.retry_settings.max_retries,
                s.retry_settings.timeout.as_str()
            ),
            (3, "30s")
        );
        assert_eq!(s.logging_level, LoggingLevel::Info);
    }
}
