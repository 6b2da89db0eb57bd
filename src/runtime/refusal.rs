//! A child write the API server (or our ownership check) refused: what the parent's status says
//! about it, and when to try again.
//!
//! Before, a refused child was an ordinary reconcile error: logged, retried every half second,
//! never shown on the object. A refusal is not a transient failure: the same spec gets the same
//! answer. So the parent says it (`Ready` False and `Stalled` True, with the server's own message),
//! a Warning Event tells the user once, and the object waits for a change instead of retrying.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::{apply::ChildError, conditions};

pub const READY: &str = "Ready";
pub const STALLED: &str = "Stalled";
pub const RECONCILING: &str = "Reconciling";

/// Reasons (bounded: they are Event reasons and metric labels).
pub mod reason {
    /// An object of the child's name exists and is not controlled by this parent.
    pub const NAME_CONFLICT: &str = "NameConflict";
    /// The API server found the child invalid (HTTP 422 or 400).
    pub const CHILD_INVALID: &str = "ChildInvalid";
    /// The API server or an admission webhook or policy refused the child (HTTP 403).
    pub const CHILD_FORBIDDEN: &str = "ChildForbidden";
}

/// When to try a refused object again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Only when the object (or something it references) changes: the API server judged the
    /// child built from the spec, and the same spec builds the same child.
    OnChange,
    /// With the per-object backoff: what blocks it lives outside the spec (another object holds
    /// the name; a namespace policy or RBAC refuses), and the user may fix that without touching
    /// the spec.
    Backoff,
}

/// One refused child write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
    pub retry: Retry,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refusal {}

impl Refusal {
    /// A bounded label for metrics.
    pub fn category(&self) -> &'static str {
        match self.reason {
            reason::NAME_CONFLICT => "name_conflict",
            reason::CHILD_FORBIDDEN => "forbidden",
            _ => "invalid",
        }
    }

    /// Whether only a change of the object can make the write succeed.
    pub fn waits_for_change(&self) -> bool {
        self.retry == Retry::OnChange
    }
}

/// The longest message kept in a condition (the API server's own can be long).
const MAX_MESSAGE: usize = 1024;

impl Refusal {
    /// The refusal in an API error writing `what` (e.g. "Service web"), if it is one. Conflicts
    /// (409: the write raced another), throttling, server errors and transport errors are not
    /// refusals: waiting helps.
    pub fn of_api(what: &str, err: &kube::Error) -> Option<Self> {
        let kube::Error::Api(status) = err else {
            return None;
        };
        let (reason, retry) = match status.code {
            400 | 422 => (reason::CHILD_INVALID, Retry::OnChange),
            403 => (reason::CHILD_FORBIDDEN, Retry::Backoff),
            _ => return None,
        };
        Some(Self {
            reason,
            message: truncate(format!("the API server refused {what}: {}", status.message)),
            retry,
        })
    }

    /// The refusal in a failed child write, if it is one.
    pub fn of_child(what: &str, err: &ChildError) -> Option<Self> {
        match err {
            ChildError::NameConflict { .. } => Some(Self {
                reason: reason::NAME_CONFLICT,
                message: truncate(err.to_string()),
                retry: Retry::Backoff,
            }),
            ChildError::Api(e) => Self::of_api(what, e),
        }
    }

    /// Marks `conds`: `Ready` False and `Stalled` True with this reason and message, and
    /// `Reconciling` False if present (kstatus reads a True `Reconciling` as still in progress).
    /// When `old` (the conditions on record) already shows this refusal, its conditions are kept
    /// as they are, so a retry that meets the same refusal writes nothing (not even a new
    /// `lastTransitionTime`).
    pub fn mark(
        &self,
        old: &[Condition],
        conds: &mut Vec<Condition>,
        generation: Option<i64>,
        now: &Time,
    ) {
        if self.already_shown(old) {
            carry(old, conds);
            return;
        }
        for type_ in [READY, STALLED] {
            conditions::set(
                conds,
                type_,
                type_ == STALLED,
                self.reason,
                self.message.clone(),
                generation,
                now,
            );
        }
        if conds.iter().any(|c| c.type_ == RECONCILING) {
            conditions::set(
                conds,
                RECONCILING,
                false,
                self.reason,
                "stalled: see the Stalled condition",
                generation,
                now,
            );
        }
    }

    /// Whether `old` already showed this refusal (so no new Event is due).
    pub fn already_shown(&self, old: &[Condition]) -> bool {
        old.iter().any(|c| {
            c.type_ == STALLED
                && c.status == "True"
                && c.reason == self.reason
                && c.message == self.message
        })
    }
}

/// Shows `refused` in `conds` (see [`Refusal::mark`]) or, when the writes succeeded, removes a
/// refusal shown before; `old` is the status on record.
pub fn show(
    refused: Option<&Refusal>,
    old: Option<&[Condition]>,
    conds: &mut Vec<Condition>,
    generation: Option<i64>,
    now: &Time,
) {
    match refused {
        Some(r) => r.mark(old.unwrap_or(&[]), conds, generation, now),
        None => clear(conds),
    }
}

/// Whether `c` is a `Stalled` condition one of [`reason`]'s refusals set.
fn is_refusal(c: &Condition) -> bool {
    c.type_ == STALLED
        && [
            reason::NAME_CONFLICT,
            reason::CHILD_INVALID,
            reason::CHILD_FORBIDDEN,
        ]
        .contains(&c.reason.as_str())
}

/// Removes a `Stalled` condition that one of [`reason`]'s refusals set, once the writes succeed.
pub fn clear(conds: &mut Vec<Condition>) {
    conds.retain(|c| !is_refusal(c));
}

/// Copies a refusal shown in `old` (its `Ready`, `Stalled` and `Reconciling`) into `new`, for a
/// status written before retrying the refused write: the refusal stays on record until a write
/// succeeds, instead of disappearing and coming back on every attempt.
pub fn carry(old: &[Condition], new: &mut Vec<Condition>) {
    let refused = old.iter().any(|c| is_refusal(c) && c.status == "True");
    if !refused {
        return;
    }
    for c in old
        .iter()
        .filter(|c| [READY, STALLED, RECONCILING].contains(&c.type_.as_str()))
    {
        match new.iter_mut().find(|n| n.type_ == c.type_) {
            Some(n) => *n = c.clone(),
            None => new.push(c.clone()),
        }
    }
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;
    use kube::core::Status;

    use super::*;

    fn api(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(
            Status::failure(message, "Invalid").with_code(code),
        ))
    }

    #[test]
    fn invalid_waits_for_a_change_forbidden_backs_off_the_rest_are_transient() {
        let r = Refusal::of_api("Service a.b", &api(422, "metadata.name: Invalid value")).unwrap();
        assert_eq!(
            (r.reason, r.retry),
            (reason::CHILD_INVALID, Retry::OnChange)
        );
        assert_eq!(
            r.message,
            "the API server refused Service a.b: metadata.name: Invalid value"
        );
        let r = Refusal::of_api("Pod p", &api(403, "violates PodSecurity")).unwrap();
        assert_eq!(
            (r.reason, r.retry),
            (reason::CHILD_FORBIDDEN, Retry::Backoff)
        );
        for code in [409, 429, 500, 503, 404] {
            assert_eq!(Refusal::of_api("x", &api(code, "m")), None, "{code}");
        }
    }

    #[test]
    fn marks_ready_false_and_stalled_and_clears_only_its_own_stall() {
        let now = Time(Timestamp::from_second(1).unwrap());
        let mut conds = Vec::new();
        conditions::set(&mut conds, RECONCILING, true, "Rolling", "", Some(1), &now);
        conditions::set(&mut conds, STALLED, false, "Other", "", Some(1), &now);
        let r = Refusal::of_api("Pod p", &api(403, "no")).unwrap();
        assert!(!r.already_shown(&conds));
        let old = conds.clone();
        r.mark(&old, &mut conds, Some(2), &now);
        let get = |t: &str| conds.iter().find(|c| c.type_ == t).unwrap().clone();
        assert_eq!(get(READY).status, "False");
        assert_eq!(get(STALLED).status, "True");
        assert_eq!(get(RECONCILING).status, "False");
        assert!(r.already_shown(&conds));
        // A retry meeting the same refusal, on a status recomputed from scratch, keeps the record
        // as it was: same conditions, same transition times.
        let shown = conds.clone();
        let mut again = Vec::new();
        conditions::set(&mut again, STALLED, false, "Queued", "", Some(2), &now);
        let later = Time(Timestamp::from_second(99).unwrap());
        r.mark(&shown, &mut again, Some(2), &later);
        assert_eq!(
            again.iter().find(|c| c.type_ == STALLED),
            shown.iter().find(|c| c.type_ == STALLED)
        );
        clear(&mut conds);
        assert!(conds.iter().all(|c| c.type_ != STALLED));
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let r = Refusal::of_api("x", &api(422, &"é".repeat(2000))).unwrap();
        assert!(r.message.len() <= MAX_MESSAGE + '…'.len_utf8());
        assert!(r.message.ends_with('…'));
    }
}
