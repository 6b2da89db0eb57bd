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
}
