//! What to do and what to report for a BatchJob (pure): from the job, its resolution, its Job, the
//! Job's Pods and the job's progress ConfigMap. The caller creates or deletes what the [`Plan`] says and writes the status only when
//! it changed.

use k8s_openapi::{
    api::{
        batch::v1::Job,
        core::v1::{ConfigMap, Pod},
    },
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::ResourceExt;

use super::{build, resolve::JobResolution};
use crate::{
    api::{
        batch_job::{BatchJob, BatchJobStatus},
        common::JobPhase as Phase,
    },
    contract::{
        exit_codes,
        progress::{self as pod_progress, PodProgress},
    },
    runtime::{conditions, pod_problems},
};

/// Condition types of a BatchJob (as a TrainingJob's).
pub mod condition {
    pub const RESOLVED: &str = "Resolved";
    pub const RUNNING: &str = "Running";
    pub const SUCCEEDED: &str = "Succeeded";
    pub const FAILED: &str = "Failed";
    pub const CANCELED: &str = "Canceled";
}

/// Reasons in status and Events.
pub mod reason {
    pub const JOB_CREATED: &str = "JobCreated";
    pub const CONTAINERS_STARTING: &str = "ContainersStarting";
    pub const UNSCHEDULABLE: &str = "Unschedulable";
    pub const RUNNING: &str = "Running";
    pub const COMPLETED: &str = "Completed";
    pub const ERROR_THRESHOLD: &str = "ErrorThresholdExceeded";
    pub const WORKER_START_FAILED: &str = "ScoringScriptFailedToStart";
    pub const INVALID_SETTINGS: &str = "InvalidDriverSettings";
    pub const BACKOFF_LIMIT: &str = "BackoffLimitExceeded";
    pub const JOB_FAILED: &str = "JobFailed";
    pub const CANCELED: &str = "Canceled";
    /// Admission (PodSecurity, quota, a webhook) refuses the driver Pods.
    pub const PODS_REJECTED: &str = "PodsRejected";
    /// No driver runs because one cannot: its image (the deployment's, or the mlcompute image of
    /// its init containers and relay) cannot be pulled, a container cannot be created or started
    /// (a missing Secret, a bad command), or the relay sidecar keeps crashing.
    pub use crate::runtime::pod_problems::{
        CONTAINER_CANNOT_START, CRASH_LOOP_BACK_OFF, IMAGE_PULL_ERROR,
    };
}

/// A phase change worth an Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

/// What the reconcile does.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub status: BatchJobStatus,
    /// Create the Job (and the driver's account) from the resolution.
    pub create: bool,
    /// Delete the Job (cancel).
    pub delete_job: bool,
    pub transition: Option<Transition>,
}

/// The Job of a BatchJob, its Pods and its progress ConfigMap, as observed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Observed<'a> {
    pub job: Option<&'a Job>,
    pub pods: &'a [&'a Pod],
    /// Why the Job controller cannot create the Job's Pods (its newest `FailedCreate` Event).
    pub pods_refused: Option<&'a str>,
    pub progress: Option<&'a ConfigMap>,
}

fn job_condition<'a>(
    job: &'a Job,
    type_: &str,
) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

fn exit_code(pod: &Pod) -> Option<(i32, Option<String>)> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let t = statuses
        .iter()
        .find(|c| c.name == build::DRIVER_CONTAINER)?
        .state
        .as_ref()?
        .terminated
        .as_ref()?;
    Some((
        t.exit_code,
        t.message.clone().filter(|m| !m.trim().is_empty()),
    ))
}

/// Why a failed Job failed: a driver exit code that says so, else the Job's own reason.
fn failure(job: &Job, pods: &[&Pod], reported: Option<&str>) -> (&'static str, String) {
    let codes: Vec<(i32, Option<String>)> = pods.iter().filter_map(|p| exit_code(p)).collect();
    let find = |code: i32| codes.iter().find(|(c, _)| *c == code);
    let why = |fallback: &str, msg: &Option<String>| {
        reported
            .map(str::to_string)
            .or_else(|| msg.as_ref().map(|m| last_line(m)))
            .unwrap_or_else(|| fallback.to_string())
    };
    if let Some((_, msg)) = find(exit_codes::THRESHOLD_CROSSED) {
        return (
            reason::ERROR_THRESHOLD,
            why("the error threshold was crossed", msg),
        );
    }
    if let Some((_, msg)) = find(exit_codes::WORKER_START_FAILED) {
        return (
            reason::WORKER_START_FAILED,
            why(
                "no scoring worker could start (import or init() failed)",
                msg,
            ),
        );
    }
    if let Some((_, msg)) = find(exit_codes::USAGE) {
        return (
            reason::INVALID_SETTINGS,
            why("the batch driver rejected its settings", msg),
        );
    }
    let failed = job_condition(job, "Failed");
    match failed.and_then(|c| c.reason.as_deref()) {
        Some("BackoffLimitExceeded") => (
            reason::BACKOFF_LIMIT,
            format!(
                "driver pods failed more often than the retry limit allows{}",
                codes
                    .iter()
                    .find(|(c, _)| *c != 0)
                    .map(|(c, m)| format!(
                        " (last exit code {c}{})",
                        m.as_ref()
                            .map(|m| format!(": {}", last_line(m)))
                            .unwrap_or_default()
                    ))
                    .unwrap_or_default()
            ),
        ),
        _ => (
            reason::JOB_FAILED,
            failed
                .and_then(|c| c.message.clone())
                .unwrap_or_else(|| "the Job failed".into()),
        ),
    }
}

/// The scheduler's message when a Pod cannot be placed (a missing claim, no capacity).
fn unschedulable(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        .map(|c| {
            c.message
                .clone()
                .unwrap_or_else(|| "a driver pod cannot be scheduled".into())
        })
}

fn last_line(s: &str) -> String {
    exit_codes::reason(s)
}

fn to_i32(v: u64) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// Sums the instances' entries of the progress ConfigMap into the counters of `status`; leaves them
/// when no instance reported. Entries are written from the job's Pods, so each is checked
/// ([`pod_progress::parse_entry`]) and anything else ignored. The ConfigMap outlives the Pods, so
/// the final counts stay.
fn counters(
    status: &mut BatchJobStatus,
    progress: Option<&ConfigMap>,
    instances: u32,
) -> Option<String> {
    let reports: Vec<PodProgress> = progress
        .and_then(|cm| cm.data.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| pod_progress::parse_entry(k, v, instances))
        .collect();
    if reports.is_empty() {
        return None;
    }
    let t = pod_progress::sum(&reports, instances);
    if t.instances_reporting == 0 {
        return None;
    }
    status.mini_batches_total = Some(to_i32(t.mini_batches.total));
    status.mini_batches_succeeded = Some(to_i32(t.mini_batches.succeeded));
    status.mini_batches_failed = Some(to_i32(t.mini_batches.failed));
    status.items_failed = Some(to_i32(t.items.failed));
    t.reason
}

struct Decider<'a> {
    job: &'a BatchJob,
    prev: BatchJobStatus,
    now: Time,
    plan: Plan,
}

impl Decider<'_> {
    fn cond(&mut self, type_: &str, status: bool, reason: &str, message: &str) {
        let generation = self.job.metadata.generation;
        conditions::set(
            &mut self.plan.status.conditions,
            type_,
            status,
            reason,
            message,
            generation,
            &self.now,
        );
    }

    fn phase(&mut self, phase: Phase, reason: &str, message: String) {
        // A job held up while its phase stays Starting: each new cause is worth one Warning.
        let stuck = reason == reason::PODS_REJECTED || pod_problems::is_reason(reason);
        if self.prev.phase != Some(phase) || (stuck && self.prev.reason.as_deref() != Some(reason))
        {
            self.plan.transition = Some(Transition {
                warning: phase == Phase::Failed || stuck,
                reason: reason.into(),
                message: message.clone(),
            });
        }
        self.plan.status.phase = Some(phase);
        self.plan.status.reason = Some(reason.into());
        self.plan.status.message = Some(message);
        self.cond(condition::RUNNING, phase == Phase::Running, reason, "");
        if phase.is_terminal() {
            if self.plan.status.completion_time.is_none() {
                self.plan.status.completion_time = Some(self.now.clone());
            }
            let type_ = match phase {
                Phase::Completed => condition::SUCCEEDED,
                Phase::Canceled => condition::CANCELED,
                _ => condition::FAILED,
            };
            let message = self.plan.status.message.clone().unwrap_or_default();
            self.cond(type_, true, reason, &message);
        }
        self.kstatus(phase, reason);
    }

    /// The kstatus conventions (what Flux and the Argo CD health script read): `Reconciling` while
    /// queued, starting or running; `Stalled` when failed or when no driver can run (its Pods
    /// refused, an image that cannot be pulled, a container that cannot start); `Ready` True once
    /// completed or canceled (finished: a GitOps wait must not hang on it). The phase's reason and
    /// message.
    fn kstatus(&mut self, phase: Phase, reason: &str) {
        let message = self.plan.status.message.clone().unwrap_or_default();
        let p = match phase {
            Phase::Completed => conditions::Progress::done(reason::COMPLETED, message),
            Phase::Canceled => conditions::Progress::done(reason::CANCELED, message),
            Phase::Failed => conditions::Progress::stalled(reason, message),
            _ if reason == reason::PODS_REJECTED
                || pod_problems::is_reason(reason)
                || crate::runtime::resolve::needs_spec_change(reason) =>
            {
                conditions::Progress::stalled(reason, message)
            }
            _ => conditions::Progress::working(reason, message),
        };
        let generation = self.job.metadata.generation;
        conditions::progress(&mut self.plan.status.conditions, &p, generation, &self.now);
    }
}

/// Decides for `job`. `resolution` is only consulted while the Job does not exist yet: once created,
/// a job keeps running what it was created with.
pub fn decide(
    job: &BatchJob,
    resolution: &JobResolution,
    observed: Observed<'_>,
    now: Time,
) -> Plan {
    let prev = job.status.clone().unwrap_or_default();
    let mut d = Decider {
        job,
        plan: Plan {
            status: BatchJobStatus {
                observed_generation: job.metadata.generation,
                ..prev.clone()
            },
            ..Plan::default()
        },
        prev,
        now,
    };
    let instances = observed
        .job
        .and_then(|j| j.spec.as_ref()?.completions)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0);
    let reported_reason = counters(&mut d.plan.status, observed.progress, instances);

    if let Some(phase) = d.prev.phase.filter(|p| p.is_terminal()) {
        // A job finished under an older operator gets today's conditions (unchanged: equal).
        let reason = d.prev.reason.clone().unwrap_or_default();
        d.kstatus(phase, &reason);
        return d.plan;
    }
    if job.spec.cancel {
        d.plan.delete_job = observed.job.is_some();
        d.phase(
            Phase::Canceled,
            reason::CANCELED,
            "Canceled by request (spec.cancel)".into(),
        );
        return d.plan;
    }
    if let Some(j) = observed.job {
        let problem = pod_problems::worst(observed.pods.iter().copied());
        let problem = problem.as_ref();
        if d.plan.status.start_time.is_none() {
            d.plan.status.start_time = j
                .status
                .as_ref()
                .and_then(|s| s.start_time.clone())
                .or_else(|| Some(d.now.clone()));
        }
        if job_condition(j, "Complete").is_some() {
            d.plan.status.completion_time =
                j.status.as_ref().and_then(|s| s.completion_time.clone());
            let msg = match (d.plan.status.mini_batches_total, d.plan.status.items_failed) {
                (Some(total), Some(failed)) => format!(
                    "all {total} mini-batches done, {failed} item(s) failed; results in {}",
                    d.plan.status.output_location.clone().unwrap_or_default()
                ),
                _ => format!(
                    "all instances finished; results in {}",
                    d.plan.status.output_location.clone().unwrap_or_default()
                ),
            };
            d.phase(Phase::Completed, reason::COMPLETED, msg);
        } else if let Some(c) = job_condition(j, "Failed") {
            d.plan.status.completion_time = c.last_transition_time.clone();
            let (r, msg) = failure(j, observed.pods, reported_reason.as_deref());
            d.phase(Phase::Failed, r, msg);
        } else if observed
            .pods
            .iter()
            .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        {
            let n = observed.pods.len();
            // The job gets on with the Pods that run; one that cannot is still worth naming.
            let held_up = problem
                .map(|p| format!("; {}", p.describe("driver pod")))
                .unwrap_or_default();
            d.phase(
                Phase::Running,
                reason::RUNNING,
                format!("{n} driver pod(s) running{held_up}"),
            );
        } else if let Some(why) = observed.pods_refused.filter(|_| observed.pods.is_empty()) {
            // No Pod exists and the Job controller was refused: say why, with the server's words.
            let message = format!("the driver Pods are refused: {why}");
            d.phase(Phase::Starting, reason::PODS_REJECTED, message.clone());
            d.cond(condition::RUNNING, false, reason::PODS_REJECTED, &message);
        } else if let Some(p) = problem {
            // No driver runs and one cannot (as PodsRejected): the kubelet's words, named.
            let message = p.describe("driver pod");
            d.phase(Phase::Starting, p.kind.reason(), message.clone());
            d.cond(condition::RUNNING, false, p.kind.reason(), &message);
        } else if let Some(why) = observed.pods.iter().find_map(|p| unschedulable(p)) {
            d.phase(Phase::Starting, reason::UNSCHEDULABLE, why);
        } else if d.prev.phase != Some(Phase::Running) {
            d.phase(
                Phase::Starting,
                reason::CONTAINERS_STARTING,
                "driver pods are being scheduled and started".into(),
            );
        }
        return d.plan;
    }
    match resolution {
        JobResolution::Ready(t) => {
            let summary = format!(
                "deployment {} ({}); {} instance(s)",
                t.deployment_name,
                t.resolved.summary(),
                build::instance_count(job, t)
            );
            d.cond(condition::RESOLVED, true, "Resolved", &summary);
            d.plan.create = true;
            d.plan.status.deployment_name = Some(t.deployment_name.clone());
            d.plan.status.output_location = Some(t.output_location.clone());
            d.plan.status.start_time = Some(d.now.clone());
            d.phase(
                Phase::Starting,
                reason::JOB_CREATED,
                format!("Job created: {summary}"),
            );
        }
        JobResolution::Waiting(m) => {
            d.cond(condition::RESOLVED, false, m.reason, &m.message);
            d.phase(Phase::Queued, m.reason, m.message.clone());
        }
        JobResolution::Invalid(m) => {
            d.cond(condition::RESOLVED, false, m.reason, &m.message);
            d.phase(Phase::Failed, m.reason, m.message.clone());
        }
    }
    d.plan
}

/// Whether the job waits for something to appear (so a new object may unblock it).
pub fn waiting(job: &BatchJob) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.phase)
        .is_none_or(|p| p == Phase::Queued)
}

/// The BatchJob a child (a driver Pod) belongs to (by label).
pub fn owner_name(child: &impl ResourceExt) -> Option<String> {
    child
        .labels()
        .get(&crate::runtime::children::owner_label_key::<BatchJob>())
        .cloned()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    use super::*;
    use crate::controllers::batch::deployment::resolve::Missing;

    fn now() -> Time {
        Time(Timestamp::from_second(100).unwrap())
    }

    fn bj(status: serde_json::Value) -> BatchJob {
        serde_json::from_value(json!({
            "apiVersion": "mlcompute.io/v1alpha1", "kind": "BatchJob",
            "metadata": { "name": "scorer-abc12", "namespace": "ns", "uid": "u1", "generation": 1 },
            "spec": { "endpointName": "scorer", "input": { "path": "pvc://data/images" } },
            "status": status
        }))
        .unwrap()
    }

    fn k8s_job(condition: Option<(&str, &str)>) -> Job {
        let conditions: Vec<serde_json::Value> = condition
            .map(|(t, r)| json!({ "type": t, "status": "True", "reason": r }))
            .into_iter()
            .collect();
        serde_json::from_value(json!({
            "metadata": { "name": "scorer-abc12", "uid": "j1" },
            "spec": { "completions": 2, "template": {} },
            "status": { "conditions": conditions }
        }))
        .unwrap()
    }

    fn pod(index: u32, phase: &str, exit: Option<i32>) -> Pod {
        let statuses = exit.map(|code| json!([{ "name": "driver", "image": "x", "ready": false, "restartCount": 0,
            "state": { "terminated": { "exitCode": code, "message": "error: 7 items failed, more than the error threshold of 5" } } }]));
        serde_json::from_value(json!({
            "metadata": { "name": format!("scorer-abc12-{index}-x") },
            "status": { "phase": phase, "containerStatuses": statuses }
        }))
        .unwrap()
    }

    /// The progress ConfigMap with `(key, value)` entries.
    fn progress(entries: &[(&str, String)]) -> ConfigMap {
        let data: serde_json::Map<String, serde_json::Value> = entries
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        serde_json::from_value(json!({
            "metadata": { "name": "scorer-abc12-progress" }, "data": data
        }))
        .unwrap()
    }

    fn entry(index: u32, (total, ok, failed_items): (u64, u64, u64)) -> String {
        json!({
            "instance": index, "instanceCount": 2, "phase": "Running",
            "miniBatches": { "total": total, "succeeded": ok, "failed": 0 },
            "items": { "total": total * 10, "succeeded": ok * 10 - failed_items, "failed": failed_items },
            "updatedUnixMs": 1
        })
        .to_string()
    }

    fn waiting() -> JobResolution {
        JobResolution::Waiting(Missing {
            reason: "DeploymentNotFound",
            message: "no".into(),
        })
    }

    /// `(status, reason, message)` of condition `type_`, if present.
    fn cond(p: &Plan, type_: &str) -> Option<(String, String, String)> {
        p.status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    }

    /// Which of the kstatus conditions is True: Reconciling, Stalled, Ready, or none.
    fn kstatus(p: &Plan) -> &'static str {
        let on = |t: &str| cond(p, t).is_some_and(|c| c.0 == "True");
        match (on("Reconciling"), on("Stalled"), on("Ready")) {
            (true, false, false) => "Reconciling",
            (false, true, false) => "Stalled",
            (false, false, true) => "Ready",
            other => panic!(
                "not one of the three: {other:?} in {:?}",
                p.status.conditions
            ),
        }
    }

    #[test]
    fn kstatus_conditions_follow_the_phase() {
        // Queued on a missing reference: waiting, with the reason and message.
        let p = decide(&bj(json!(null)), &waiting(), Observed::default(), now());
        assert_eq!(kstatus(&p), "Reconciling");
        assert_eq!(
            cond(&p, "Reconciling").unwrap(),
            ("True".into(), "DeploymentNotFound".into(), "no".into())
        );
        assert_eq!(p.status.observed_generation, Some(1));
        // Starting and running: still working.
        let job = k8s_job(None);
        let running = [pod(0, "Running", None)];
        let refs: Vec<&Pod> = running.iter().collect();
        let observed = Observed {
            job: Some(&job),
            pods: &refs,
            pods_refused: None,
            progress: None,
        };
        let p = decide(
            &bj(json!({ "phase": "Starting" })),
            &waiting(),
            observed,
            now(),
        );
        assert_eq!(
            (p.status.phase, kstatus(&p)),
            (Some(Phase::Running), "Reconciling")
        );
        let p = decide(
            &bj(json!({ "phase": "Starting" })),
            &waiting(),
            Observed {
                pods: &[],
                ..observed
            },
            now(),
        );
        assert_eq!(
            (p.status.phase, kstatus(&p)),
            (Some(Phase::Starting), "Reconciling")
        );
        // Failed: Stalled with the reason as message (kstatus and Argo CD show it).
        let failed = k8s_job(Some(("Failed", "PodFailurePolicy")));
        let pods = [pod(0, "Failed", Some(3))];
        let refs: Vec<&Pod> = pods.iter().collect();
        let p = decide(
            &bj(json!({ "phase": "Running" })),
            &waiting(),
            Observed {
                job: Some(&failed),
                pods: &refs,
                ..observed
            },
            now(),
        );
        assert_eq!(kstatus(&p), "Stalled");
        let (_, r, m) = cond(&p, "Stalled").unwrap();
        assert_eq!(
            (r.as_str(), m.as_str()),
            (
                reason::ERROR_THRESHOLD,
                "7 items failed, more than the error threshold of 5"
            )
        );
        // Completed: Ready, reason Completed.
        let done = k8s_job(Some(("Complete", "CompletionsReached")));
        let p = decide(
            &bj(json!({ "phase": "Running" })),
            &waiting(),
            Observed {
                job: Some(&done),
                pods: &[],
                ..observed
            },
            now(),
        );
        assert_eq!(kstatus(&p), "Ready");
        assert_eq!(cond(&p, "Ready").unwrap().1, "Completed");
        // Canceled: finished, Ready, and the message says so.
        let mut b = bj(json!({ "phase": "Running" }));
        b.spec.cancel = true;
        let p = decide(&b, &waiting(), observed, now());
        assert_eq!(kstatus(&p), "Ready");
        let (_, r, m) = cond(&p, "Ready").unwrap();
        assert_eq!(r, "Canceled");
        assert!(m.starts_with("Canceled"), "{m}");
        // A job finished under an older operator, without these conditions, gets them.
        let old = bj(
            json!({ "phase": "Failed", "reason": "BackoffLimitExceeded", "message": "x",
                             "conditions": [{ "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                              "message": "x", "lastTransitionTime": "2025-01-01T00:00:00Z" }] }),
        );
        let p = decide(&old, &waiting(), Observed::default(), now());
        assert_eq!(kstatus(&p), "Stalled");
        assert_eq!(cond(&p, "Stalled").unwrap().2, "x");
    }

    #[test]
    fn queued_then_failed_for_what_cannot_run() {
        let p = decide(&bj(json!(null)), &waiting(), Observed::default(), now());
        assert_eq!(p.status.phase, Some(Phase::Queued));
        assert_eq!(p.status.reason.as_deref(), Some("DeploymentNotFound"));
        assert!(!p.create);
        let invalid = JobResolution::Invalid(Missing {
            reason: "NoDefaultDeployment",
            message: "none".into(),
        });
        let p = decide(&bj(json!(null)), &invalid, Observed::default(), now());
        assert_eq!(p.status.phase, Some(Phase::Failed));
        let c = p
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == condition::RESOLVED)
            .unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "NoDefaultDeployment")
        );
        assert!(p.transition.unwrap().warning);
    }

    #[test]
    fn progress_is_summed_while_running_and_kept_at_the_end() {
        let job = k8s_job(None);
        let pods = [pod(0, "Running", None), pod(1, "Running", None)];
        let refs: Vec<&Pod> = pods.iter().collect();
        let cm = progress(&[("0", entry(0, (5, 2, 1))), ("1", entry(1, (5, 3, 0)))]);
        let p = decide(
            &bj(json!({ "phase": "Starting" })),
            &waiting(),
            Observed {
                job: Some(&job),
                pods: &refs,
                pods_refused: None,
                progress: Some(&cm),
            },
            now(),
        );
        assert_eq!(p.status.phase, Some(Phase::Running));
        assert_eq!(p.status.mini_batches_total, Some(10));
        assert_eq!(p.status.mini_batches_succeeded, Some(5));
        assert_eq!(p.status.items_failed, Some(1));
        // The Pods are gone (the Job completed and was cleaned up): the object keeps the counts.
        let done = k8s_job(Some(("Complete", "CompletionsReached")));
        let p = decide(
            &bj(json!({ "phase": "Running" })),
            &waiting(),
            Observed {
                job: Some(&done),
                pods_refused: None,
                pods: &[],
                progress: Some(&cm),
            },
            now(),
        );
        assert_eq!(p.status.phase, Some(Phase::Completed));
        assert_eq!(p.status.mini_batches_succeeded, Some(5));
        assert!(
            p.status
                .message
                .unwrap()
                .contains("all 10 mini-batches done")
        );
    }

    #[test]
    fn garbage_in_the_progress_object_is_ignored() {
        let job = k8s_job(None);
        let prev = json!({ "phase": "Running", "miniBatchesSucceeded": 4, "miniBatchesTotal": 9 });
        let decide_with = |cm: &ConfigMap| {
            decide(
                &bj(prev.clone()),
                &waiting(),
                Observed {
                    job: Some(&job),
                    pods: &[],
                    pods_refused: None,
                    progress: Some(cm),
                },
                now(),
            )
            .status
        };
        // Nothing valid: the counters stay as they were.
        let junk = progress(&[
            ("0", "{not json".into()),
            ("1", entry(0, (1, 1, 0))), // instance 0's report under key 1
            ("7", entry(7, (1, 1, 0))), // beyond the instance count
            ("x", entry(0, (1, 1, 0))),
            ("00", entry(0, (1, 1, 0))),
        ]);
        let s = decide_with(&junk);
        assert_eq!(
            (s.mini_batches_succeeded, s.mini_batches_total),
            (Some(4), Some(9))
        );
        // One valid entry among junk counts alone; huge values saturate in status.
        let mut huge: serde_json::Value = serde_json::from_str(&entry(1, (1, 1, 0))).unwrap();
        huge["miniBatches"]["total"] = json!(u64::MAX);
        huge["extra"] = json!({ "ignored": true });
        let s = decide_with(&progress(&[("0", "{}".into()), ("1", huge.to_string())]));
        assert_eq!(s.mini_batches_succeeded, Some(1));
        assert_eq!(s.mini_batches_total, Some(i32::MAX));
    }

    #[test]
    fn exit_code_3_is_the_error_threshold() {
        let job = k8s_job(Some(("Failed", "PodFailurePolicy")));
        let pods = [pod(0, "Failed", Some(3)), pod(1, "Succeeded", Some(0))];
        let refs: Vec<&Pod> = pods.iter().collect();
        let p = decide(
            &bj(json!({ "phase": "Running" })),
            &waiting(),
            Observed {
                job: Some(&job),
                pods: &refs,
                pods_refused: None,
                progress: None,
            },
            now(),
        );
        assert_eq!(p.status.phase, Some(Phase::Failed));
        assert_eq!(p.status.reason.as_deref(), Some(reason::ERROR_THRESHOLD));
        assert_eq!(
            p.status.message.as_deref(),
            Some("7 items failed, more than the error threshold of 5")
        );
    }

    #[test]
    fn cancel_deletes_the_job_and_a_finished_job_stays_finished() {
        let mut b = bj(json!({ "phase": "Running" }));
        b.spec.cancel = true;
        let job = k8s_job(None);
        let p = decide(
            &b,
            &waiting(),
            Observed {
                job: Some(&job),
                pods: &[],
                pods_refused: None,
                progress: None,
            },
            now(),
        );
        assert!(p.delete_job);
        assert_eq!(p.status.phase, Some(Phase::Canceled));
        b.status = Some(p.status.clone());
        let again = decide(&b, &waiting(), Observed::default(), now());
        assert_eq!(again.status, p.status, "nothing changes once terminal");
        assert!(again.transition.is_none() && !again.delete_job);
    }

    #[test]
    fn a_driver_pod_that_cannot_pull_is_reported_once_with_the_kubelets_words() {
        let job = k8s_job(None);
        let pull = crate::runtime::pod_problems::fixture("driver-init-pull");
        let refs = [&pull];
        let observed = Observed {
            job: Some(&job),
            pods: &refs,
            pods_refused: None,
            progress: None,
        };
        let starting = bj(json!({ "phase": "Starting", "reason": reason::JOB_CREATED }));
        let p = decide(&starting, &waiting(), observed, now());
        assert_eq!(p.status.phase, Some(Phase::Starting));
        assert_eq!(p.status.reason.as_deref(), Some(reason::IMAGE_PULL_ERROR));
        assert_eq!(kstatus(&p), "Stalled", "no driver can run without a change");
        let message = p.status.message.clone().unwrap();
        assert!(
            message.starts_with(
                "driver pod driver-init-pull, init container install-mlcompute: \
                 image ghcr.io/mlcompute/mlcompute:0 cannot be pulled: rpc error: code = NotFound"
            ),
            "{message}"
        );
        let running = p
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == condition::RUNNING)
            .unwrap();
        assert_eq!(
            (
                running.status.as_str(),
                running.reason.as_str(),
                running.message.as_str()
            ),
            ("False", reason::IMAGE_PULL_ERROR, message.as_str())
        );
        assert!(p.transition.as_ref().unwrap().warning, "a Warning Event");
        let mut b = starting.clone();
        b.status = Some(p.status.clone());
        let again = decide(&b, &waiting(), observed, now());
        assert_eq!(again.status, p.status);
        assert!(
            again.transition.is_none(),
            "one Event, not one per reconcile"
        );

        // Another instance runs: the job is Running, and still names the one held up.
        let other = pod(1, "Running", None);
        let refs = [&pull, &other];
        let p = decide(
            &b,
            &waiting(),
            Observed {
                pods: &refs,
                ..observed
            },
            now(),
        );
        assert_eq!(p.status.phase, Some(Phase::Running));
        assert!(
            p.status
                .message
                .unwrap()
                .contains("driver pod driver-init-pull, init container"),
        );
    }

    #[test]
    fn pods_refused_by_admission_are_reported_once_with_the_servers_message() {
        let job = k8s_job(None);
        let why = "pods \"scorer-abc12-0-x\" is forbidden: violates PodSecurity \"restricted:latest\": runAsNonRoot != true";
        let observed = Observed {
            job: Some(&job),
            pods: &[],
            pods_refused: Some(why),
            progress: None,
        };
        let p = decide(
            &bj(json!({ "phase": "Starting" })),
            &waiting(),
            observed,
            now(),
        );
        assert_eq!(p.status.phase, Some(Phase::Starting));
        assert_eq!(p.status.reason.as_deref(), Some(reason::PODS_REJECTED));
        assert!(p.status.message.as_deref().unwrap().ends_with(why));
        assert_eq!(kstatus(&p), "Stalled");
        let running = p
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == condition::RUNNING)
            .unwrap();
        assert_eq!(
            (running.status.as_str(), running.reason.as_str()),
            ("False", reason::PODS_REJECTED)
        );
        assert!(p.transition.as_ref().unwrap().warning);
        let mut b = bj(json!({ "phase": "Starting" }));
        b.status = Some(p.status.clone());
        let again = decide(&b, &waiting(), observed, now());
        assert_eq!(again.status, p.status);
        assert!(
            again.transition.is_none(),
            "one Event, not one per reconcile"
        );
        // Once Pods exist, an old refusal no longer describes the job.
        let pods = [pod(0, "Running", None)];
        let refs: Vec<&Pod> = pods.iter().collect();
        let later = decide(
            &b,
            &waiting(),
            Observed {
                pods: &refs,
                ..observed
            },
            now(),
        );
        assert_eq!(later.status.phase, Some(Phase::Running));
        assert_eq!(
            kstatus(&later),
            "Reconciling",
            "the refusal's Stalled is gone"
        );
    }
}
