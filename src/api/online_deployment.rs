//! `OnlineDeployment`: one model version served behind an OnlineEndpoint.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    common::{CodeConfiguration, Condition, ResourceRequirements, max_properties, rules},
    online_endpoint::ProvisioningState,
    security_context::{PodSecurityContext, SecurityContext},
};

const RECREATE: &str = "; create a new deployment instead";

/// A set of identical instances serving one model behind an OnlineEndpoint: a Deployment and a
/// Service, scaled manually (`instanceCount`, `kubectl scale`) or by target utilisation.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "mlcompute.io",
    version = "v1alpha1",
    kind = "OnlineDeployment",
    namespaced,
    status = "OnlineDeploymentStatus",
    shortname = "od",
    category = "mlcompute",
    doc = "One model served behind an OnlineEndpoint: identical instances with request settings, probes and scaling.",
    scale(
        spec_replicas_path = ".spec.instanceCount",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".spec.endpointName"),
    printcolumn(name = "State", type_ = "string", json_path = ".status.provisioningState"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyInstances"),
    printcolumn(name = "Instances", type_ = "integer", json_path = ".spec.instanceCount"),
    printcolumn(name = "Instance Type", type_ = "string", json_path = ".spec.instanceType", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = rules::object_name("OnlineDeployment"),
)]
#[x_kube(
    validation = Rule::new("has(self.environment) != has(self.image)").message("set exactly one of environment (a registered Environment) or image (an inline image)"),
    validation = rules::immutable("endpointName", RECREATE),
)]
#[serde(rename_all = "camelCase")]
pub struct OnlineDeploymentSpec {
    /// Name of the OnlineEndpoint in this namespace that this deployment serves. Immutable.
    #[schemars(length(max = 32))]
    #[x_kube(validation = rules::azure_name("endpointName"))]
    pub endpoint_name: String,
    /// Free-text description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// Model files: `pvc://<claim>/<path>` (mounted) or `https://…` (downloaded at start). Exposed
    /// to the scoring script as `AZUREML_MODEL_DIR`. Optional for custom containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = rules::input_uri("model"))]
    pub model: Option<String>,
    /// Where the model is mounted in the container. Default `/var/azureml-app/azureml-models/<deployment>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    #[x_kube(validation = Rule::new(r"self.startsWith('/') && !self.matches(r'(^|/)\.\.(/|$)') && !self.matches(r'[\x00-\x1f\x7f]')").message("modelMountPath must be an absolute path without '..' segments or control characters"))]
    pub model_mount_path: Option<String>,
    /// Scoring code and script, run by the Azure ML inference server. Omitted: the image serves
    /// by itself on the environment's inference routes (custom container).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_configuration: Option<CodeConfiguration>,
    /// Which server runs the scoring script (with `codeConfiguration`; ignored without it).
    /// `auto`: Azure ML's inference server (`azmlinfsrv`, from the azureml-inference-server-http
    /// package) when the image has it on its PATH, else the shipped standard-library server,
    /// decided when the container starts. `azmlinfsrv`: Azure ML's server; a container whose
    /// image lacks it exits with an error saying so. `shipped`: the shipped server
    /// (`python3`, standard library only; `@rawhttp` scripts still need the package). Both serve
    /// on port 5001 with the same entry script, model directory and `WORKER_COUNT`, answer
    /// probes on `GET /`, and the container's log names the one that runs.
    #[serde(default)]
    pub scoring_server: ScoringServer,
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
    /// Environment variables visible to the scoring script.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = max_properties::<128>)]
    #[x_kube(validation = rules::env_var_names())]
    pub environment_variables: BTreeMap<String, String>,
    /// Name of an InstanceType. Omitted: `defaultinstancetype`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    #[x_kube(validation = rules::dns_label("instanceType"))]
    pub instance_type: Option<String>,
    /// Number of instances with scale type `default`; `kubectl scale` sets it. Not used with
    /// `target_utilization`: the operator's autoscaler then sizes the instances' Deployment
    /// between minInstances and maxInstances (see `status.scale`).
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1000))]
    pub instance_count: i32,
    /// Per-instance resources overriding the instance type's (limits must stay within it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Request handling at the router.
    #[serde(default)]
    pub request_settings: RequestSettings,
    /// Liveness probe; a failing instance is restarted.
    #[serde(default)]
    pub liveness_probe: ProbeSettings,
    /// Readiness probe; a failing instance gets no traffic.
    #[serde(default)]
    pub readiness_probe: ProbeSettings,
    /// Manual or utilisation-based scaling.
    #[serde(default)]
    pub scale_settings: ScaleSettings,
    /// ServiceAccount the instances run as. Omitted: no Kubernetes API token is mounted into
    /// them (the namespace's `default` account is used without a token). Named: the account's own
    /// `automountServiceAccountToken` decides whether its token is mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new(format!("self.matches(r'{}')", super::common::DNS_SUBDOMAIN_PATTERN)).message("serviceAccountName must be a ServiceAccount name (lowercase letters, digits, '-' or '.')"))]
    pub service_account_name: Option<String>,
    /// Pod-wide security settings of the instances (user, group, fsGroup, seccomp). Omitted:
    /// the image's user, seccomp `RuntimeDefault`. A non-root `runAsUser` lets the instances run in a
    /// namespace enforcing PodSecurity `restricted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security_context: Option<PodSecurityContext>,
    /// Security settings of every container of the instances, init containers included. Omitted:
    /// no privilege escalation, and all capabilities dropped when running as a non-root user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
}

fn one() -> i32 {
    1
}

/// How the router treats requests to this deployment (Azure ML's `request_settings`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestSettings {
    /// Time the router waits for a response before answering 504 (at most 300000, as on Azure ML Kubernetes).
    #[serde(default = "default_request_timeout_ms")]
    #[schemars(range(min = 1, max = 300000))]
    pub request_timeout_ms: i32,
    /// Requests one instance handles at once; more wait in the router's queue.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_concurrent_requests_per_instance: i32,
    /// Longest a request waits in the queue for a free instance before a 503 (as on Azure ML
    /// Kubernetes).
    #[serde(default = "default_max_queue_wait_ms")]
    #[schemars(range(min = 0, max = 300000))]
    pub max_queue_wait_ms: i32,
}

impl Default for RequestSettings {
    fn default() -> Self {
        RequestSettings {
            request_timeout_ms: default_request_timeout_ms(),
            max_concurrent_requests_per_instance: 1,
            max_queue_wait_ms: default_max_queue_wait_ms(),
        }
    }
}

fn default_request_timeout_ms() -> i32 {
    5000
}

fn default_max_queue_wait_ms() -> i32 {
    500
}

/// A probe on the serving container (Azure ML's `liveness_probe` / `readiness_probe`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeSettings {
    /// Seconds after the container starts before the first probe.
    #[serde(default = "ten")]
    #[schemars(range(min = 0, max = 3600))]
    pub initial_delay: i32,
    /// Seconds between probes.
    #[serde(default = "ten")]
    #[schemars(range(min = 1, max = 3600))]
    pub period: i32,
    /// Seconds before a probe counts as failed.
    #[serde(default = "two")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout: i32,
    /// Consecutive successes after a failure to count as healthy.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 100))]
    pub success_threshold: i32,
    /// Consecutive failures before giving up (restart for liveness, unready for readiness).
    #[serde(default = "thirty")]
    #[schemars(range(min = 1, max = 1000))]
    pub failure_threshold: i32,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        ProbeSettings {
            initial_delay: 10,
            period: 10,
            timeout: 2,
            success_threshold: 1,
            failure_threshold: 30,
        }
    }
}

fn two() -> i32 {
    2
}

fn ten() -> i32 {
    10
}

fn thirty() -> i32 {
    30
}

/// The server that runs a scoring script.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScoringServer {
    // azmlinfsrv when the image has it, else the shipped server.
    #[default]
    Auto,
    // Azure ML's inference server, required in the image.
    Azmlinfsrv,
    // The shipped standard-library server.
    Shipped,
}

/// Scaling mode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScaleType {
    // instanceCount instances, changed by hand or with `kubectl scale`.
    #[default]
    Default,
    // The operator's autoscaler keeps utilisation near targetUtilizationPercentage, from the
    // router's load reports (Azure ML's formula; no HorizontalPodAutoscaler).
    TargetUtilization,
}

/// Scaling (Azure ML's `scale_settings`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.minInstances <= self.maxInstances").message("scaleSettings.minInstances must be less than or equal to maxInstances"),
    validation = Rule::new("self.minInstances >= 1 || self.type == 'target_utilization'").message("scaleSettings.minInstances: 0 (scale to zero) needs type target_utilization: only the autoscaler brings a deployment back from zero"),
)]
pub struct ScaleSettings {
    /// `default` (manual, `instanceCount`) or `target_utilization` (autoscaled).
    #[serde(default, rename = "type")]
    pub type_: ScaleType,
    /// Fewest instances the autoscaler keeps. 0 (with `target_utilization` only) scales the
    /// deployment to zero after `scaleToZeroAfterSeconds` without requests; the router then
    /// holds the next request (up to its `maxQueueWaitMs` and `requestTimeoutMs`) while the
    /// autoscaler starts an instance.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 1000))]
    pub min_instances: i32,
    /// Most instances the autoscaler adds.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_instances: i32,
    /// Utilisation (busy or queued share of capacity) the autoscaler aims for.
    #[serde(default = "seventy")]
    #[schemars(range(min = 1, max = 100))]
    pub target_utilization_percentage: i32,
    /// Seconds between autoscaler evaluations. The router's load is averaged over this interval;
    /// scaling up happens at once, scaling down only after 20 intervals of lower load.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 3600))]
    pub polling_interval: i32,
    /// With `minInstances: 0`: seconds without any request (none arriving, in flight or queued
    /// at any router) before the autoscaler scales the deployment to zero. Not in Azure ML.
    #[serde(default = "five_minutes")]
    #[schemars(range(min = 1, max = 86400))]
    pub scale_to_zero_after_seconds: i32,
}

fn five_minutes() -> i32 {
    300
}

impl Default for ScaleSettings {
    fn default() -> Self {
        ScaleSettings {
            type_: ScaleType::Default,
            min_instances: 1,
            max_instances: 1,
            target_utilization_percentage: 70,
            polling_interval: 1,
            scale_to_zero_after_seconds: five_minutes(),
        }
    }
}

fn seventy() -> i32 {
    70
}

/// Observed state of an OnlineDeployment.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OnlineDeploymentStatus {
    /// Creating, Updating, Scaling, Succeeded, Failed or Deleting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<ProvisioningState>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions (`Resolved`, `Ready`, `Progressing`), with observedGeneration and lastTransitionTime.
    /// When no instance is ready, `Ready` is False and its reason says why: what `Resolved` reports
    /// (e.g. `EndpointNotFound`), `PodsRejected` (admission refuses the Pods), `ImagePullError`,
    /// `ContainerCannotStart` or `CrashLoopBackOff` (naming the instance Pod, container, image and
    /// the kubelet's message), else `NoReadyInstances`. A rollout held up by its new instances keeps
    /// `Ready` and says so in `Progressing` with the same reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Instances (Pods) that exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Instances passing their readiness probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_instances: Option<i32>,
    /// Instances running the current spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_instances: Option<i32>,
    /// Label selector of the instances, for the scale subresource and autoscalers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Image the instances run, as resolved from the environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Version of the Environment resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_version: Option<String>,
    /// What the autoscaler (scale type `target_utilization`) last decided and why. Written by
    /// the autoscaler alone (field manager `mlcompute-autoscaler`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<ScaleStatus>,
}

/// The autoscaler's last decision for one deployment.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleStatus {
    /// Instances the autoscaler asks for.
    pub desired_instances: i32,
    /// Instances the Deployment had when it decided.
    pub current_instances: i32,
    /// Average utilisation over the last polling interval, in percent: requests in flight and
    /// queued at every router, over the capacity of the current instances
    /// (`instances × maxConcurrentRequestsPerInstance`). Absent when the routers could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization_percentage: Option<i32>,
    /// `ScaledUp`, `ScaledDown`, `ScaledToZero`, `ScaledFromZero`, `Steady`, `StabilizingDown`
    /// (lower load, waiting out the scale-down window), `Idle` (zero instances, no request),
    /// `RoutersUnreadable` or `NoRouters` (no load known: only the bounds are enforced).
    pub reason: String,
    /// The decision in words, with the figures it rests on.
    pub message: String,
    /// When the autoscaler last changed the instance count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn omitted_settings_take_azure_ml_defaults() {
        let spec: OnlineDeploymentSpec =
            serde_json::from_value(json!({ "endpointName": "fraud", "image": "nginx" })).unwrap();
        assert_eq!(spec.instance_count, 1);
        assert_eq!(spec.request_settings, RequestSettings::default());
        assert_eq!(
            (
                spec.request_settings.request_timeout_ms,
                spec.request_settings.max_concurrent_requests_per_instance,
                spec.request_settings.max_queue_wait_ms
            ),
            (5000, 1, 500)
        );
        assert_eq!(spec.liveness_probe, ProbeSettings::default());
        assert_eq!(spec.readiness_probe.failure_threshold, 30);
        assert_eq!(spec.scale_settings, ScaleSettings::default());
    }

    #[test]
    fn partial_settings_keep_the_other_defaults() {
        let probe: ProbeSettings = serde_json::from_value(json!({ "initialDelay": 30 })).unwrap();
        assert_eq!(
            (probe.initial_delay, probe.period, probe.timeout),
            (30, 10, 2)
        );
    }
}
