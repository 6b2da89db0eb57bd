//! `TrainingJob`: an Azure ML command job, single-instance or distributed.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    common::{
        Condition, DNS_SUBDOMAIN_PATTERN, JobInput, JobOutput, JobPhase, MAX_JOB_TIMEOUT,
        MAX_TTL_SECONDS, max_properties, rules,
    },
    security_context::{PodSecurityContext, SecurityContext},
};

const RECREATE: &str = "; delete and recreate the TrainingJob to change it";

/// Every `${{...}}` in the command is `${{inputs.<declared>}}` or `${{outputs.<declared>}}`: the
/// controller substitutes exactly those, so anything else would reach the shell as typed.
const PLACEHOLDERS_DECLARED: &str = r"self.command.findAll(r'\$\{\{[^}]*\}\}').all(m, (m.startsWith('${{inputs.') && has(self.inputs) && m.substring(10, m.size() - 2) in self.inputs) || (m.startsWith('${{outputs.') && has(self.outputs) && m.substring(11, m.size() - 2) in self.outputs))";

/// A command run on one or more instances, with inputs, outputs, an environment and optional
/// distribution (PyTorch, TensorFlow or MPI). One Pod per instance, plus a headless Service for
/// rendezvous.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "mlcompute.io",
    version = "v1alpha1",
    kind = "TrainingJob",
    namespaced,
    status = "TrainingJobStatus",
    shortname = "tj",
    category = "mlcompute",
    doc = "A training (command) job: a command run on one or more instances, optionally distributed with PyTorch, TensorFlow or MPI.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Instances", type_ = "integer", json_path = ".spec.resources.instanceCount"),
    printcolumn(name = "Distribution", type_ = "string", json_path = ".spec.distribution.type"),
    printcolumn(name = "Attempts", type_ = "integer", json_path = ".status.attempts"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.reason", priority = 1),
    validation = rules::object_name_for_children("TrainingJob", 52, "its instance Pods (<name>-worker-<index>, whose hostnames must be DNS labels of at most 63 characters) and its headless Service (<name>, a DNS-1035 label) are named after it"),
)]
#[x_kube(
    validation = Rule::new("has(self.environment) != has(self.image)").message("set exactly one of environment (a registered Environment) or image (an inline image)"),
    validation = Rule::new("!has(self.distribution) || self.distribution.type != 'tensorflow' || !has(self.distribution.workerCount) || self.distribution.workerCount + (has(self.distribution.parameterServerCount) ? self.distribution.parameterServerCount : 0) == self.resources.instanceCount")
        .message("for tensorflow, workerCount + parameterServerCount must equal resources.instanceCount (one Pod per worker or parameter server)"),
    validation = Rule::new("!has(self.distribution) || self.distribution.type != 'tensorflow' || !has(self.distribution.parameterServerCount) || self.distribution.parameterServerCount < self.resources.instanceCount")
        .message("for tensorflow, parameterServerCount must be less than resources.instanceCount (at least one worker)"),
    validation = Rule::new(PLACEHOLDERS_DECLARED).message("command may only use ${{inputs.<name>}} and ${{outputs.<name>}} with names declared in inputs and outputs (no spaces inside the braces)"),
    validation = rules::immutable("command", RECREATE),
    validation = rules::immutable_optional("environment", RECREATE),
    validation = rules::immutable_optional("image", RECREATE),
    validation = rules::immutable_optional("code", RECREATE),
    validation = rules::immutable_optional("distribution", RECREATE),
    validation = rules::immutable_optional("inputs", RECREATE),
    validation = rules::immutable_optional("outputs", RECREATE),
    validation = rules::immutable("resources.instanceCount", RECREATE),
    validation = rules::immutable_optional("resources.instanceType", RECREATE),
    validation = rules::immutable("resources.shmSize", RECREATE),
)]
#[serde(rename_all = "camelCase")]
pub struct TrainingJobSpec {
    /// Human-friendly name shown by the CLI; need not be unique.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub display_name: Option<String>,
    /// Experiment this job belongs to, for grouping runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub experiment_name: Option<String>,
    /// Free-text description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub description: Option<String>,
    /// Shell command run in every instance (via `/bin/sh -c`). `${{inputs.<name>}}` and
    /// `${{outputs.<name>}}` are replaced with local paths (or literal values). Immutable.
    #[schemars(length(min = 1, max = 32768))]
    pub command: String,
    /// Code to run the command in: `configmap://<name>` or `pvc://<claim>/<path>`, mounted as the
    /// working directory. Omitted: the code is in the image. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = rules::code_uri("code"))]
    pub code: Option<String>,
    /// Registered Environment: `<name>`, `<name>:<version>` or `<name>@latest`. Exactly one of
    /// `environment` and `image` is set. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 317))]
    #[x_kube(validation = rules::environment_ref())]
    pub environment: Option<String>,
    /// Inline container image, instead of a registered environment. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = rules::image())]
    pub image: Option<String>,
    /// Environment variables for the command (on top of the environment's own).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = max_properties::<128>)]
    #[x_kube(validation = rules::env_var_names())]
    pub environment_variables: BTreeMap<String, String>,
    /// Named inputs: data (`pvc://`, `https://`) or literal values. Immutable.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = max_properties::<64>)]
    #[x_kube(validation = rules::io_names("inputs"))]
    pub inputs: BTreeMap<String, JobInput>,
    /// Named outputs, written to `pvc://` locations. Immutable.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = max_properties::<64>)]
    #[x_kube(validation = rules::io_names("outputs"))]
    pub outputs: BTreeMap<String, JobOutput>,
    /// Instance type, count and shared memory. Immutable.
    #[serde(default)]
    pub resources: JobResources,
    /// How the command is distributed across instances and processes. Omitted: every instance runs
    /// the command once, with no framework wiring. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<Distribution>,
    /// Longest the job may run, counted from its first start (e.g. `2h`, `90m`); then it is
    /// canceled by the system and fails with reason `Timeout`. At most 720h (30 days). Omitted:
    /// no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(
        validation = rules::duration("timeout"),
        validation = rules::duration_at_most("timeout", MAX_JOB_TIMEOUT),
    )]
    pub timeout: Option<String>,
    /// When a failed attempt is retried.
    #[serde(default)]
    pub retry_policy: RetryPolicy,
    /// Seconds to keep the job's Pods and Service after it finishes; the TrainingJob object itself
    /// stays. At most 2592000 (30 days). Omitted: kept until the TrainingJob is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_TTL_SECONDS))]
    pub ttl_seconds_after_finished: Option<i32>,
    /// While true, no Pods run: a queued job waits and a running job's Pods are deleted (the job
    /// restarts from the beginning when resumed). Set by queueing systems such as Kueue.
    #[serde(default)]
    pub suspend: bool,
    /// Set to true to cancel the job: its Pods are deleted and it ends in phase `Canceled`.
    /// Cannot be undone.
    #[serde(default)]
    #[x_kube(validation = Rule::new("oldSelf == false || self == true").message("cancel cannot be undone"))]
    pub cancel: bool,
    /// Kueue LocalQueue to submit to; set as the `kueue.x-k8s.io/queue-name` label on the job's Pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    #[x_kube(validation = rules::dns_label("queueName"))]
    pub queue_name: Option<String>,
    /// PriorityClass of the job's Pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new(format!("self.matches(r'{DNS_SUBDOMAIN_PATTERN}')")).message("priorityClassName must be the name of a PriorityClass (lowercase letters, digits, '-' and '.')"))]
    pub priority_class_name: Option<String>,
    /// ServiceAccount the job's Pods run as. Omitted: no Kubernetes API token is mounted into
    /// them (the namespace's `default` account is used without a token). Named: the account's own
    /// `automountServiceAccountToken` decides whether its token is mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new(format!("self.matches(r'{}')", super::common::DNS_SUBDOMAIN_PATTERN)).message("serviceAccountName must be a ServiceAccount name (lowercase letters, digits, '-' or '.')"))]
    pub service_account_name: Option<String>,
    /// Pod-wide security settings of the job's Pods (user, group, fsGroup, seccomp). Omitted:
    /// the image's user, seccomp `RuntimeDefault`. A non-root `runAsUser` lets the job's Pods run in a
    /// namespace enforcing PodSecurity `restricted`. MPI runs sshd and keeps its keys in `/root/.ssh`: a non-root MPI job needs an image prepared for that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security_context: Option<PodSecurityContext>,
    /// Security settings of every container of the job's Pods, init containers included. Omitted:
    /// no privilege escalation, and all capabilities dropped when running as a non-root user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
}

/// Instance type, count and shared memory of a job.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobResources {
    /// Name of an InstanceType. Omitted: `defaultinstancetype`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    #[x_kube(validation = rules::dns_label("instanceType"))]
    pub instance_type: Option<String>,
    /// Number of instances (Pods).
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1000))]
    pub instance_count: i32,
    /// Size of `/dev/shm` in each instance: Azure ML's `<n><b|k|m|g>` (e.g. `2g`) or a Kubernetes
    /// binary quantity (`2Gi`); more than 0 and at most `1Ti`.
    #[serde(default = "default_shm_size")]
    #[schemars(length(max = 32))]
    #[x_kube(
        validation = rules::shm_size("shmSize"),
        validation = rules::shm_size_at_most("shmSize"),
    )]
    pub shm_size: String,
}

impl Default for JobResources {
    fn default() -> Self {
        JobResources {
            instance_type: None,
            instance_count: 1,
            shm_size: default_shm_size(),
        }
    }
}

fn one() -> i32 {
    1
}

fn default_shm_size() -> String {
    "2g".into()
}

/// Which framework wires the instances together.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DistributionType {
    // torch.distributed: MASTER_ADDR, MASTER_PORT, WORLD_SIZE, NODE_RANK, RANK, LOCAL_RANK.
    #[default]
    Pytorch,
    // TF_CONFIG with worker and ps task lists.
    Tensorflow,
    // mpirun from a launcher over SSH to every instance.
    Mpi,
}

/// Where the MPI launcher runs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MpiLauncher {
    // The first instance runs mpirun as well as its share of ranks (Azure ML's behaviour).
    #[default]
    Worker,
    // A separate small launcher Pod runs mpirun; it uses no accelerator.
    Separate,
}

/// Distribution settings, as in Azure ML's `distribution` block. Each field applies only to the
/// distribution types listed in its description.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.type == 'tensorflow' || (!has(self.workerCount) && !has(self.parameterServerCount))")
        .message("workerCount and parameterServerCount apply only to distribution type tensorflow"),
    validation = Rule::new("self.type != 'tensorflow' || !has(self.processCountPerInstance)")
        .message("processCountPerInstance applies only to distribution types pytorch and mpi"),
    validation = Rule::new("self.type != 'mpi' || has(self.processCountPerInstance)")
        .message("distribution type mpi requires processCountPerInstance"),
    validation = Rule::new("self.type == 'mpi' || !has(self.launcher)")
        .message("launcher applies only to distribution type mpi"),
)]
pub struct Distribution {
    /// `pytorch`, `tensorflow` or `mpi`.
    #[serde(rename = "type")]
    pub type_: DistributionType,
    /// pytorch, mpi: processes per instance, usually one per GPU. pytorch default 1; mpi requires it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 128))]
    pub process_count_per_instance: Option<i32>,
    /// tensorflow: number of workers. Default: `resources.instanceCount - parameterServerCount`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub worker_count: Option<i32>,
    /// tensorflow: number of parameter servers, one per instance. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub parameter_server_count: Option<i32>,
    /// mpi: `worker` (default; the first instance also runs mpirun) or `separate` (a launcher Pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launcher: Option<MpiLauncher>,
}

/// Retries of failed attempts, after Kubeflow's run policy. An attempt fails when any instance
/// exits non-zero or its Pod is lost; a retry reruns all instances.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.retryOnExitCodes.all(c, !(c in self.failOnExitCodes))")
        .message("an exit code cannot be both in retryOnExitCodes and failOnExitCodes"),
)]
pub struct RetryPolicy {
    /// Retries after the first attempt (so `maxRetries + 1` attempts at most).
    #[serde(default)]
    #[schemars(range(min = 0, max = 100))]
    pub max_retries: i32,
    /// Exit codes that may be retried. Empty: any failure may be retried, except `failOnExitCodes`.
    #[serde(default)]
    #[schemars(length(max = 32), inner(range(min = 1, max = 255)))]
    pub retry_on_exit_codes: Vec<i32>,
    /// Exit codes that fail the job at once (permanent errors such as a bad argument).
    #[serde(default)]
    #[schemars(length(max = 32), inner(range(min = 1, max = 255)))]
    pub fail_on_exit_codes: Vec<i32>,
}

impl RetryPolicy {
    /// Whether an attempt that ended with `exit_code` may be retried (ignoring the retry budget).
    /// Pod loss (no exit code) is always retryable.
    pub fn retryable(&self, exit_code: Option<i32>) -> bool {
        match exit_code {
            None => true,
            Some(code) if self.fail_on_exit_codes.contains(&code) => false,
            Some(code) => {
                self.retry_on_exit_codes.is_empty() || self.retry_on_exit_codes.contains(&code)
            }
        }
    }
}

/// Observed state of one instance of the current attempt.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// Instance index (the node rank).
    pub index: i32,
    /// Role within the distribution: `worker`, `ps`, `launcher` or `master`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Pod running this instance.
    pub pod_name: String,
    /// Pod phase (`Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Node the Pod runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Exit code of the main container, once it has terminated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// Observed state of a TrainingJob.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrainingJobStatus {
    /// Azure ML phase: Queued, Starting, Running, Completed, Failed or Canceled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<JobPhase>,
    /// Machine-readable reason for the phase, e.g. `EnvironmentNotFound`, `Unschedulable`, `Timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable explanation of the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions (`Resolved`, `Ready`, `Progressing`), with observedGeneration and lastTransitionTime.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Attempts started so far (1 on the first run; each retry adds one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
    /// Instances of the current attempt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<InstanceStatus>,
    /// Image the job runs, as resolved from the environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Name of the Environment the job resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_name: Option<String>,
    /// Version of the Environment the job resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_version: Option<String>,
    /// Instance type the job resolved (after applying the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// When the first attempt's Pods were created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the job reached a terminal phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanent_exit_codes_are_not_retried() {
        let p = RetryPolicy {
            max_retries: 3,
            retry_on_exit_codes: vec![],
            fail_on_exit_codes: vec![2],
        };
        assert!(!p.retryable(Some(2)));
        assert!(p.retryable(Some(137)));
        assert!(p.retryable(None));
    }

    #[test]
    fn a_retry_list_limits_retries_to_its_codes() {
        let p = RetryPolicy {
            max_retries: 3,
            retry_on_exit_codes: vec![137, 143],
            fail_on_exit_codes: vec![],
        };
        assert!(p.retryable(Some(137)));
        assert!(!p.retryable(Some(1)));
    }

    #[test]
    fn terminal_phases() {
        assert!(JobPhase::Canceled.is_terminal());
        assert!(!JobPhase::Queued.is_terminal());
    }
}
