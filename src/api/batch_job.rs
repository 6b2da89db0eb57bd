//! `BatchJob`: one invocation of a batch endpoint over a folder of input files.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, JobPhase, MAX_ERROR_THRESHOLD, MAX_RUN_TIMEOUT, rules};

const RESUBMIT: &str = "; a BatchJob is one invocation, submit a new one instead";

/// One batch scoring run: the files under `input.path` are split into mini-batches and scored by
/// a BatchDeployment; results land in the output folder. Created by `mlcompute batch invoke`, the
/// REST invoke API, or applied directly. Only `cancel` can change after creation.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "mlcompute.io",
    version = "v1alpha1",
    kind = "BatchJob",
    namespaced,
    status = "BatchJobStatus",
    shortname = "bj",
    category = "mlcompute",
    doc = "One invocation of a BatchEndpoint over a folder of input files.",
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".spec.endpointName"),
    printcolumn(name = "Deployment", type_ = "string", json_path = ".status.deploymentName"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Succeeded", type_ = "integer", json_path = ".status.miniBatchesSucceeded"),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.miniBatchesFailed"),
    printcolumn(name = "Total", type_ = "integer", json_path = ".status.miniBatchesTotal"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = rules::object_name_dns_label("BatchJob", 52, "its Job, Pods (<name>-<suffix>, whose hostnames must be DNS labels) and driver ServiceAccount (<name>-driver) are named after it"),
)]
#[x_kube(
    validation = rules::immutable("endpointName", RESUBMIT),
    validation = rules::immutable_optional("deploymentName", RESUBMIT),
    validation = rules::immutable("input", RESUBMIT),
    validation = rules::immutable_optional("outputPath", RESUBMIT),
    validation = rules::immutable_optional("overrides", RESUBMIT),
)]
#[serde(rename_all = "camelCase")]
pub struct BatchJobSpec {
    /// BatchEndpoint in this namespace to invoke.
    #[schemars(length(max = 32))]
    #[x_kube(validation = rules::azure_name("endpointName"))]
    pub endpoint_name: String,
    /// BatchDeployment to run on. Omitted: the endpoint's `defaults.deploymentName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = rules::azure_name("deploymentName"))]
    pub deployment_name: Option<String>,
    /// The files to score.
    pub input: BatchInput,
    /// Folder the results are written to: `pvc://<claim>/<path>`. Omitted: `<endpoint
    /// defaults.outputPath>/<job name>`. The results file must not already exist there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = rules::output_uri("outputPath"))]
    pub output_path: Option<String>,
    /// Per-job overrides of the deployment's settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<BatchOverrides>,
    /// Set to true to cancel the job; it ends in phase `Canceled`. Cannot be undone.
    #[serde(default)]
    #[x_kube(validation = Rule::new("oldSelf == false || self == true").message("cancel cannot be undone"))]
    pub cancel: bool,
}

/// Whether the input is one file or a folder of files.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BatchInputType {
    #[default]
    UriFolder,
    UriFile,
}

/// Input of a batch job.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.type == 'uri_file' || !self.path.startsWith('https://')")
        .message("an https:// input must be a single file (type uri_file): a folder cannot be listed over HTTPS"),
)]
pub struct BatchInput {
    /// `uri_folder` (default; every file below the folder) or `uri_file`.
    #[serde(default, rename = "type")]
    pub type_: BatchInputType,
    /// `pvc://<claim>/<path>` or `https://…` (`https://` only with `uri_file`).
    #[schemars(length(max = 2048))]
    #[x_kube(validation = rules::input_uri("input.path"))]
    pub path: String,
}

/// Settings a single job may override (as `az ml batch-endpoint invoke --set …`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchOverrides {
    /// Name of the results file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(validation = Rule::new("self.matches(r'^[A-Za-z0-9._-]+$') && self != '.' && self != '..'").message("outputFileName must be a plain file name (letters, digits, '.', '_' or '-'; no '/')"))]
    pub output_file_name: Option<String>,
    /// Files per `run()` call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub mini_batch_size: Option<i32>,
    /// Instances for this job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub instance_count: Option<i32>,
    /// Retries per mini-batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub max_retries: Option<i32>,
    /// Longest one `run()` call may take; at most 24h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(
        validation = rules::duration("overrides.timeout"),
        validation = rules::duration_at_most("overrides.timeout", MAX_RUN_TIMEOUT),
    )]
    pub timeout: Option<String>,
    /// Failed files tolerated; -1 for any number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1, max = MAX_ERROR_THRESHOLD))]
    pub error_threshold: Option<i32>,
}

/// Observed state of a BatchJob.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchJobStatus {
    /// Queued, Starting, Running, Completed, Failed or Canceled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<JobPhase>,
    /// Machine-readable reason for the phase, e.g. `NoDefaultDeployment`, `ErrorThresholdExceeded`;
    /// while Starting, `ImagePullError`, `ContainerCannotStart` or `CrashLoopBackOff` when a driver
    /// Pod cannot run (the message names the Pod, container, image and the kubelet's message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable explanation of the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions, with observedGeneration and lastTransitionTime.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// BatchDeployment the job runs on (after applying the endpoint default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_name: Option<String>,
    /// Mini-batches the input was split into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mini_batches_total: Option<i32>,
    /// Mini-batches scored successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mini_batches_succeeded: Option<i32>,
    /// Mini-batches that failed after all retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mini_batches_failed: Option<i32>,
    /// Input files that could not be scored (counted against errorThreshold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items_failed: Option<i32>,
    /// Folder holding the results: `pvc://<claim>/<path>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_location: Option<String>,
    /// When the job's Pods were created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the job reached a terminal phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
}
