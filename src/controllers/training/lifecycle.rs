//! The lifecycle decision: from the job, what resolved, and its observed Pods, decide which Pods
//! to create or delete and what the status says. Pure: no client, no clock of its own.

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use super::{
    observe::{ObservedPod, PodState},
    resolve::Resolution,
    topology::{self, Instance},
};
use crate::{
    api::{
        common::JobPhase as Phase,
        common::{MAX_JOB_TIMEOUT, MAX_TTL_SECONDS, parse_duration_at_most},
        training_job::{InstanceStatus, TrainingJob, TrainingJobStatus},
    },
    runtime::conditions::{self, Progress},
};

/// `Ready`'s reason once the job completed.
const COMPLETED: &str = "Completed";

/// Condition types of a TrainingJob.
pub mod condition {
    pub const RESOLVED: &str = "Resolved";
    pub const SUSPENDED: &str = "Suspended";
    pub const RUNNING: &str = "Running";
    pub const SUCCEEDED: &str = "Succeeded";
    pub const FAILED: &str = "Failed";
    pub const CANCELED: &str = "Canceled";
    pub const READY: &str = "Ready";
    pub const RECONCILING: &str = "Reconciling";
    pub const STALLED: &str = "Stalled";
}

/// Reasons the status and Events give. A fixed set: also the `reason` of Events.
pub mod reason {
    pub const SUSPENDED: &str = "Suspended";
    pub const WAITING_FOR_PODS: &str = "WaitingForPods";
    pub const UNSCHEDULABLE: &str = "Unschedulable";
    pub const CONTAINERS_STARTING: &str = "ContainersStarting";
    pub const IMAGE_PULL_ERROR: &str = crate::runtime::pod_problems::IMAGE_PULL_ERROR;
    pub const RUNNING: &str = "Running";
    pub const RESTARTING: &str = "Restarting";
    pub const SUCCEEDED: &str = "Succeeded";
    pub const NON_RETRYABLE_EXIT_CODE: &str = "NonRetryableExitCode";
    pub const RETRIES_EXHAUSTED: &str = "RetriesExhausted";
    pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
    pub const CANCELED: &str = "Canceled";
    pub const RESOLVED: &str = "Resolved";
}

/// A phase change worth an Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub reason: String,
    pub message: String,
    pub warning: bool,
}

/// What to do. `status` is the complete new status; the caller writes it only if it changed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub status: TrainingJobStatus,
    pub create: Vec<Instance>,
    /// The attempt the created Pods belong to.
    pub attempt: i32,
    pub delete: Vec<String>,
    /// The TTL ran out: remove the job's Service (and `delete` has every Pod).
    pub ttl_expired: bool,
    pub requeue_after: Option<Duration>,
    pub transition: Option<Transition>,
    /// The cached status is behind the Pods: do nothing and look again shortly.
    pub stale: bool,
}

struct Decider<'a> {
    job: &'a TrainingJob,
    pods: &'a [ObservedPod],
    now: Time,
    prev: TrainingJobStatus,
    plan: Plan,
}

/// Decides the next step for `job`.
pub fn decide(
    job: &TrainingJob,
    resolution: &Resolution,
    pods: &[ObservedPod],
    now: Timestamp,
) -> Plan {
    let prev = job.status.clone().unwrap_or_default();
    let mut plan = Plan {
        status: prev.clone(),
        ..Plan::default()
    };
    plan.status.observed_generation = job.metadata.generation;
    Decider {
        job,
        pods,
        now: Time(now),
        prev,
        plan,
    }
    .run(resolution)
}

impl Decider<'_> {
    fn generation(&self) -> Option<i64> {
        self.job.metadata.generation
    }

    fn live(&self) -> impl Iterator<Item = &ObservedPod> {
        self.pods
            .iter()
            .filter(|p| p.state != PodState::Terminating)
    }

    fn delete_where(&mut self, keep: impl Fn(&ObservedPod) -> bool) {
        let names: Vec<String> = self
            .live()
            .filter(|p| !keep(p))
            .map(|p| p.name.clone())
            .collect();
        self.plan.delete.extend(names);
    }

    fn cond(&mut self, type_: &str, status: bool, reason: &str, message: &str) {
        let (generation, now) = (self.generation(), self.now.clone());
        conditions::set(
            &mut self.plan.status.conditions,
            type_,
            status,
            reason,
            message,
            generation,
            &now,
        );
    }

    fn set_phase(&mut self, phase: Phase, reason: &str, message: String) {
        // Events mark the steps a user follows (started, running, restarted, finished, stuck);
        // the initial wait for Pods is not one of them.
        let noise = matches!(
            reason,
            reason::WAITING_FOR_PODS | reason::CONTAINERS_STARTING
        );
        if self.prev.phase != Some(phase) && !noise {
            let warning = matches!(phase, Phase::Failed)
                || matches!(
                    reason,
                    reason::RESTARTING | reason::UNSCHEDULABLE | reason::IMAGE_PULL_ERROR
                );
            self.plan.transition = Some(Transition {
                reason: reason.to_string(),
                message: message.clone(),
                warning,
            });
        }
        self.plan.status.phase = Some(phase);
        self.plan.status.reason = Some(reason.to_string());
        self.plan.status.message = Some(message);
        self.cond(condition::RUNNING, phase == Phase::Running, reason, "");
        self.kstatus(phase, reason);
    }

    /// The kstatus conventions, so Flux, Argo CD and `kubectl wait` read health without custom
    /// code: `Reconciling` while queued (a missing Environment or InstanceType is waited for),
    /// starting or running; `Stalled` when failed, when no instance can start (an image that
    /// cannot be pulled) or the spec names what cannot be followed; `Ready` True once finished, canceled
    /// included (a GitOps wait must not hang on it). A suspended job waits for the user: none of
    /// `Reconciling` and `Stalled`, `Ready` False. Reason and message are the phase's.
    fn kstatus(&mut self, phase: Phase, reason: &str) {
        let message = self.plan.status.message.clone().unwrap_or_default();
        let (generation, now) = (self.generation(), self.now.clone());
        let conds = &mut self.plan.status.conditions;
        let p = match phase {
            Phase::Completed => Progress::done(COMPLETED, message),
            Phase::Canceled => Progress::done(reason::CANCELED, message),
            Phase::Failed => Progress::stalled(reason, message),
            Phase::Queued if reason == reason::SUSPENDED => {
                conditions::mark_progress(conds, &Progress::done(reason, ""), generation, &now);
                conditions::set(
                    conds,
                    condition::READY,
                    false,
                    reason,
                    message,
                    generation,
                    &now,
                );
                return;
            }
            _ if reason == reason::IMAGE_PULL_ERROR
                || crate::runtime::resolve::needs_spec_change(reason) =>
            {
                Progress::stalled(reason, message)
            }
            _ => Progress::working(reason, message),
        };
        conditions::progress(conds, &p, generation, &now);
    }

    fn finish(&mut self, phase: Phase, reason: &str, message: String) -> Plan {
        self.set_phase(phase, reason, message.clone());
        self.plan.status.completion_time = Some(self.now.clone());
        let (type_, ok) = match phase {
            Phase::Completed => (condition::SUCCEEDED, true),
            Phase::Canceled => (condition::CANCELED, true),
            _ => (condition::FAILED, true),
        };
        self.cond(type_, ok, reason, &message);
        // Finished Pods stay for their logs; whatever still runs is stopped. Canceling removes all.
        if phase == Phase::Canceled {
            self.delete_where(|_| false);
        } else {
            self.delete_where(|p| matches!(p.state, PodState::Succeeded | PodState::Failed { .. }));
        }
        self.plan.status.instances = self.instance_statuses(self.prev.attempts.unwrap_or(0));
        if let Some(ttl) = self.job.spec.ttl_seconds_after_finished {
            self.plan.requeue_after = Some(ttl_duration(ttl));
        }
        std::mem::take(&mut self.plan)
    }

    fn run(mut self, resolution: &Resolution) -> Plan {
        let spec = &self.job.spec;
        if let Some(phase) = self.prev.phase.filter(|p| p.is_terminal()) {
            return self.after_finish(phase);
        }
        if spec.cancel {
            return self.finish(
                Phase::Canceled,
                reason::CANCELED,
                "Canceled by request (spec.cancel)".into(),
            );
        }
        if spec.suspend {
            self.delete_where(|_| false);
            self.cond(
                condition::SUSPENDED,
                true,
                reason::SUSPENDED,
                "spec.suspend is true: no Pods run",
            );
            self.plan.status.start_time = None;
            self.plan.status.instances = Vec::new();
            let msg = "suspended (spec.suspend); the job starts from the beginning when resumed"
                .to_string();
            self.set_phase(Phase::Queued, reason::SUSPENDED, msg);
            return self.plan;
        }
        if conditions::is_true(&self.prev.conditions, condition::SUSPENDED) {
            self.cond(
                condition::SUSPENDED,
                false,
                "Resumed",
                "spec.suspend is false",
            );
        }

        match resolution {
            Resolution::Ready(r) => {
                self.cond(condition::RESOLVED, true, reason::RESOLVED, &r.summary());
                // The first resolution is recorded and kept, so retries run exactly the same image.
                if self.plan.status.image.is_none() {
                    self.plan.status.image = Some(r.image.clone());
                    self.plan.status.environment_name = r.environment_name.clone();
                    self.plan.status.environment_version = r.environment_version.clone();
                    self.plan.status.instance_type = Some(r.instance_type_name.clone());
                }
            }
            Resolution::Missing { reason, message } => {
                self.cond(condition::RESOLVED, false, reason, message);
            }
        }

        if let Some(plan) = self.check_deadline() {
            return plan;
        }

        let mut attempt = self.prev.attempts.unwrap_or(0);
        // The first attempt's Pods are created while its status is written, so Pods of attempt 1
        // with no attempt on record are that attempt's (the status write was lost): adopt them.
        if attempt == 0 && self.live().any(|p| p.attempt == Some(1)) {
            attempt = 1;
            self.plan.status.attempts = Some(1);
        }
        if self.live().any(|p| p.attempt.is_some_and(|a| a > attempt)) {
            self.plan.stale = true;
            self.plan.status = self.prev.clone();
            return self.plan;
        }
        let current = attempt.max(1);
        self.delete_where(|p| p.attempt == Some(current));
        let instances = topology::instances(self.job);

        if attempt > 0 {
            if let Some(plan) = self.check_failure(&instances, attempt) {
                return plan;
            }
            let done = instances
                .iter()
                .filter(|i| i.decides_success)
                .all(|i| self.current_state(&i.pod_name, attempt) == Some(&PodState::Succeeded));
            if done {
                return self.finish(
                    Phase::Completed,
                    reason::SUCCEEDED,
                    "all instances completed".into(),
                );
            }
        }

        if let Resolution::Missing { reason, message } = resolution {
            if !self.live().any(|p| p.attempt == Some(current)) {
                let msg = message.clone();
                self.set_phase(Phase::Queued, reason, msg);
                return self.plan;
            }
        } else {
            // Names still held by any Pod (even one being deleted) are not reused until it is gone.
            let held: Vec<&str> = self.pods.iter().map(|p| p.name.as_str()).collect();
            self.plan.create = instances
                .iter()
                .filter(|i| !held.contains(&i.pod_name.as_str()))
                .cloned()
                .collect();
            self.plan.attempt = current;
            self.plan.status.attempts = Some(current);
        }
        self.progress(&instances, current);
        self.plan
    }

    /// Terminal: stop leftovers, and once the TTL runs out remove the Pods and Service.
    fn after_finish(mut self, phase: Phase) -> Plan {
        // A job finished under an older operator gets the conditions of today's (unchanged: equal).
        let reason = self.prev.reason.clone().unwrap_or_default();
        self.kstatus(phase, &reason);
        if phase == Phase::Canceled {
            self.delete_where(|_| false);
        } else {
            self.delete_where(|p| matches!(p.state, PodState::Succeeded | PodState::Failed { .. }));
        }
        if let (Some(ttl), Some(done)) = (
            self.job.spec.ttl_seconds_after_finished,
            self.prev.completion_time.clone(),
        ) {
            // Checked: a TTL past the end of time (impossible within the schema's bound) expires now.
            match done.0.checked_add(ttl_duration(ttl)) {
                Ok(expiry) if self.now.0 < expiry => {
                    self.plan.requeue_after = (expiry - self.now.0).try_into().ok();
                }
                _ => {
                    self.plan.ttl_expired = true;
                    self.delete_where(|_| false);
                }
            }
        }
        self.plan
    }

    fn check_deadline(&mut self) -> Option<Plan> {
        // Bounded by the schema; an object stored before the bound, with a longer or unreadable
        // timeout, runs with the longest allowed one instead of overflowing the clock.
        let timeout = self
            .job
            .spec
            .timeout
            .as_deref()
            .map(|t| parse_duration_at_most(t, MAX_JOB_TIMEOUT).unwrap_or(MAX_JOB_TIMEOUT))?;
        let start = self.prev.start_time.clone()?;
        let deadline = start.0.checked_add(timeout).ok()?;
        if self.now.0 >= deadline {
            let msg = format!(
                "the job ran longer than its timeout of {}",
                self.job.spec.timeout.as_deref().unwrap_or("")
            );
            return Some(self.finish(Phase::Failed, reason::DEADLINE_EXCEEDED, msg));
        }
        self.plan.requeue_after = (deadline - self.now.0).try_into().ok();
        None
    }

    fn current_state(&self, pod: &str, attempt: i32) -> Option<&PodState> {
        self.live()
            .find(|p| p.name == pod && p.attempt == Some(attempt))
            .map(|p| &p.state)
    }

    /// One failed instance fails the attempt: retry the whole gang, or fail the job.
    fn check_failure(&mut self, instances: &[Instance], attempt: i32) -> Option<Plan> {
        let (pod, exit_code, why) =
            instances
                .iter()
                .find_map(|i| match self.current_state(&i.pod_name, attempt) {
                    Some(PodState::Failed { exit_code, reason }) => {
                        Some((i.pod_name.clone(), *exit_code, reason.clone()))
                    }
                    _ => None,
                })?;
        let what = match exit_code {
            Some(code) => format!("instance {pod} exited with code {code}"),
            None => format!(
                "instance {pod} failed ({})",
                why.as_deref().unwrap_or("no exit code")
            ),
        };
        let policy = &self.job.spec.retry_policy;
        if !policy.retryable(exit_code) {
            let msg = format!("{what}, which retryPolicy does not retry");
            return Some(self.finish(Phase::Failed, reason::NON_RETRYABLE_EXIT_CODE, msg));
        }
        if attempt > policy.max_retries {
            let msg = format!(
                "{what}; all {attempt} attempts failed (maxRetries {})",
                policy.max_retries
            );
            return Some(self.finish(Phase::Failed, reason::RETRIES_EXHAUSTED, msg));
        }
        // Restart the gang: record the new attempt, delete every Pod of the old one; the next
        // reconcile creates the new Pods once the old names are free.
        self.plan.status.attempts = Some(attempt + 1);
        self.delete_where(|_| false);
        let msg = format!(
            "{what}; starting attempt {} of {}",
            attempt + 1,
            policy.max_retries + 1
        );
        self.set_phase(Phase::Starting, reason::RESTARTING, msg);
        self.plan.status.instances = Vec::new();
        Some(std::mem::take(&mut self.plan))
    }

    /// Phase and reason from the current attempt's Pods (those about to be created count as waiting).
    fn progress(&mut self, instances: &[Instance], attempt: i32) {
        let states: Vec<Option<&PodState>> = instances
            .iter()
            .map(|i| self.current_state(&i.pod_name, attempt))
            .collect();
        let unscheduled: Vec<Option<String>> = states
            .iter()
            .filter_map(|s| match s {
                None => Some(None),
                Some(PodState::Unscheduled { message }) => Some(message.clone()),
                _ => None,
            })
            .collect();
        let starting = states.iter().find_map(|s| match s {
            Some(PodState::Starting { reason, message }) => Some((reason.clone(), message.clone())),
            _ => None,
        });
        let (phase, reason, message) = if !unscheduled.is_empty() {
            match unscheduled.iter().flatten().next() {
                // Pods stay Pending when capacity is short: cluster autoscalers act on them.
                Some(msg) => (
                    Phase::Queued,
                    reason::UNSCHEDULABLE,
                    format!(
                        "{} of {} instances cannot be scheduled yet: {msg}",
                        unscheduled.len(),
                        instances.len()
                    ),
                ),
                None => (
                    Phase::Queued,
                    reason::WAITING_FOR_PODS,
                    format!(
                        "waiting for {} of {} instances to be scheduled",
                        unscheduled.len(),
                        instances.len()
                    ),
                ),
            }
        } else if let Some((why, msg)) = starting {
            match why {
                Some(r) if crate::runtime::pod_problems::is_image_pull(&r) => (
                    Phase::Starting,
                    reason::IMAGE_PULL_ERROR,
                    format!(
                        "{r}: {}",
                        msg.unwrap_or_else(|| "the image cannot be pulled".into())
                    ),
                ),
                _ => (
                    Phase::Starting,
                    reason::CONTAINERS_STARTING,
                    "instances are starting".into(),
                ),
            }
        } else {
            (
                Phase::Running,
                reason::RUNNING,
                format!("all {} instances running", instances.len()),
            )
        };
        if matches!(phase, Phase::Starting | Phase::Running)
            && self.plan.status.start_time.is_none()
        {
            self.plan.status.start_time = Some(self.now.clone());
        }
        self.set_phase(phase, reason, message);
        self.plan.status.instances = self.instance_statuses(attempt);
    }

    fn instance_statuses(&self, attempt: i32) -> Vec<InstanceStatus> {
        topology::instances(self.job)
            .into_iter()
            .map(|i| {
                let pod = self
                    .pods
                    .iter()
                    .find(|p| p.name == i.pod_name && p.attempt == Some(attempt));
                let (phase, exit_code) = match pod.map(|p| &p.state) {
                    None => (None, None),
                    Some(PodState::Unscheduled { .. } | PodState::Starting { .. }) => {
                        (Some("Pending"), None)
                    }
                    Some(PodState::Running) => (Some("Running"), None),
                    Some(PodState::Succeeded) => (Some("Succeeded"), Some(0)),
                    Some(PodState::Failed { exit_code, .. }) => (Some("Failed"), *exit_code),
                    Some(PodState::Terminating) => (Some("Terminating"), None),
                };
                InstanceStatus {
                    index: i.index,
                    role: Some(i.role.as_str().to_string()),
                    pod_name: i.pod_name,
                    phase: phase.map(str::to_string),
                    node_name: pod.and_then(|p| p.node.clone()),
                    exit_code,
                }
            })
            .collect()
    }
}

/// The TTL of a finished job, clamped to the schema's bounds (0 to [`MAX_TTL_SECONDS`]).
fn ttl_duration(ttl: i32) -> Duration {
    Duration::from_secs(u64::try_from(ttl.clamp(0, MAX_TTL_SECONDS)).unwrap_or(0))
}
