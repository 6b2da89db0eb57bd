//! Standard conditions (`type`, `status`, `reason`, `message`, `observedGeneration`,
//! `lastTransitionTime`) kept the way kstatus, Flux and Argo CD read them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Sets condition `type_` in `conds`. `lastTransitionTime` moves only when the status flips, so
/// recomputing an unchanged condition leaves the list byte-for-byte equal (and nothing is written).
pub fn set(
    conds: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: &Time,
) {
    let status = if status { "True" } else { "False" }.to_string();
    let message = message.into();
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.last_transition_time = now.clone();
        }
        c.status = status;
        c.reason = reason.to_string();
        c.message = message;
        c.observed_generation = generation;
        return;
    }
    conds.push(Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time: now.clone(),
    });
}

/// Removes condition `type_`, if present.
pub fn remove(conds: &mut Vec<Condition>, type_: &str) {
    conds.retain(|c| c.type_ != type_);
}

/// The kstatus condition types (what Flux, kpt and the Argo CD health script read).
pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// Where an object stands, as kstatus reads it (`Reconciling` or `Stalled`, whichever is True,
/// else `Ready`). Each carries the reason and a message for people: kstatus and Argo CD show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Still working towards the spec (starting, running, rolling out, waiting for an object it
    /// references): `Reconciling` True. A missing reference is waited for, not a failure: GitOps
    /// applies the objects of one sync in any order.
    Working { reason: String, message: String },
    /// Cannot go on without a change (a failed job, an invalid spec, an image that cannot be
    /// pulled, a name already taken): `Stalled` True.
    Stalled { reason: String, message: String },
    /// Done or serving: `Ready` True, neither `Reconciling` nor `Stalled`.
    Done { reason: String, message: String },
}

impl Progress {
    pub fn working(reason: &str, message: impl Into<String>) -> Self {
        Self::Working {
            reason: reason.to_string(),
            message: message.into(),
        }
    }

    pub fn stalled(reason: &str, message: impl Into<String>) -> Self {
        Self::Stalled {
            reason: reason.to_string(),
            message: message.into(),
        }
    }

    pub fn done(reason: &str, message: impl Into<String>) -> Self {
        Self::Done {
            reason: reason.to_string(),
            message: message.into(),
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Self::Working { reason, .. }
            | Self::Stalled { reason, .. }
            | Self::Done { reason, .. } => reason,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Self::Working { message, .. }
            | Self::Stalled { message, .. }
            | Self::Done { message, .. } => message,
        }
    }
}

/// Writes `p` in `conds` by the kstatus conventions: `Reconciling` True while working, `Stalled`
/// True when stalled (each removed otherwise), and `Ready` True when done, False otherwise, all
/// with `p`'s reason and message. Recomputing an unchanged `p` leaves `conds` equal.
pub fn progress(conds: &mut Vec<Condition>, p: &Progress, generation: Option<i64>, now: &Time) {
    mark_progress(conds, p, generation, now);
    set(
        conds,
        READY,
        matches!(p, Progress::Done { .. }),
        p.reason(),
        p.message(),
        generation,
        now,
    );
}

/// As [`progress`], leaving `Ready` to the caller: for a kind whose `Ready` says something of its
/// own (an OnlineDeployment serves from its old instances while it rolls out).
pub fn mark_progress(
    conds: &mut Vec<Condition>,
    p: &Progress,
    generation: Option<i64>,
    now: &Time,
) {
    let (reconciling, stalled) = match p {
        Progress::Working { .. } => (true, false),
        Progress::Stalled { .. } => (false, true),
        Progress::Done { .. } => (false, false),
    };
    for (type_, on) in [(RECONCILING, reconciling), (STALLED, stalled)] {
        if on {
            set(conds, type_, true, p.reason(), p.message(), generation, now);
        } else {
            remove(conds, type_);
        }
    }
}

/// Whether condition `type_` is present and True.
pub fn is_true(conds: &[Condition], type_: &str) -> bool {
    conds.iter().any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let mut conds = Vec::new();
        set(
            &mut conds,
            "Running",
            true,
            "PodsRunning",
            "all running",
            Some(1),
            &at(10),
        );
        set(
            &mut conds,
            "Running",
            true,
            "PodsRunning",
            "still running",
            Some(2),
            &at(20),
        );
        assert_eq!(conds[0].last_transition_time, at(10));
        assert_eq!(conds[0].message, "still running");
        set(
            &mut conds,
            "Running",
            false,
            "Completed",
            "done",
            Some(2),
            &at(30),
        );
        assert_eq!(conds[0].last_transition_time, at(30));
        assert!(!is_true(&conds, "Running"));
    }

    fn get<'a>(conds: &'a [Condition], type_: &str) -> Option<(&'a str, &'a str, &'a str)> {
        conds
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status.as_str(), c.reason.as_str(), c.message.as_str()))
    }

    #[test]
    fn progress_sets_one_of_reconciling_stalled_and_ready_true_when_done() {
        let mut conds = Vec::new();
        let working = Progress::working("Starting", "instances are starting");
        progress(&mut conds, &working, Some(1), &at(1));
        assert_eq!(
            get(&conds, RECONCILING),
            Some(("True", "Starting", "instances are starting"))
        );
        assert_eq!(get(&conds, STALLED), None);
        assert_eq!(get(&conds, READY).unwrap().0, "False");
        let again = conds.clone();
        progress(&mut conds, &working, Some(1), &at(2));
        assert_eq!(conds, again, "unchanged: equal, times kept");

        progress(
            &mut conds,
            &Progress::stalled("Failed", "exit 2"),
            Some(1),
            &at(3),
        );
        assert_eq!(get(&conds, RECONCILING), None);
        assert_eq!(get(&conds, STALLED), Some(("True", "Failed", "exit 2")));
        assert_eq!(get(&conds, READY), Some(("False", "Failed", "exit 2")));

        progress(
            &mut conds,
            &Progress::done("Completed", "done"),
            Some(2),
            &at(4),
        );
        assert_eq!(get(&conds, RECONCILING), None);
        assert_eq!(get(&conds, STALLED), None);
        assert_eq!(get(&conds, READY), Some(("True", "Completed", "done")));
        let ready = conds.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(
            (ready.observed_generation, &ready.last_transition_time),
            (Some(2), &at(4))
        );
    }

    #[test]
    fn mark_progress_leaves_ready_alone() {
        let mut conds = Vec::new();
        set(
            &mut conds,
            READY,
            true,
            "InstancesReady",
            "2 of 2",
            Some(1),
            &at(1),
        );
        mark_progress(
            &mut conds,
            &Progress::working("RollingUpdate", "1 of 2 instances updated"),
            Some(1),
            &at(2),
        );
        assert_eq!(
            get(&conds, READY),
            Some(("True", "InstancesReady", "2 of 2"))
        );
        assert_eq!(get(&conds, RECONCILING).unwrap().0, "True");
    }
}
