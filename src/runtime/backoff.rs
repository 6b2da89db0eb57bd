//! Per-object retry state: exponential backoff for failed reconciles and a rate limit on the log
//! lines they write.
//!
//! kube's controller gives the error policy no retry count, so a broken object was retried at the
//! base delay forever. Each controller keeps one [`Backoffs`]; the key is the object's UID (a
//! re-created object of the same name starts afresh). A reconcile that succeeds forgets its object.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// First delay after a failure.
pub const BASE: Duration = Duration::from_secs(1);
/// First delay when the API server throttles us (429): it asked us to slow down.
pub const BASE_THROTTLED: Duration = Duration::from_secs(2);
/// Longest delay between two attempts on one object.
pub const CAP: Duration = Duration::from_secs(300);
/// At most one warning log line per object per this long; the rest go to debug.
pub const LOG_EVERY: Duration = Duration::from_secs(60);
/// Entries not touched for this long are dropped (their object was deleted or healed unseen).
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Sweep for stale entries once the map holds this many.
const SWEEP_AT: usize = 4096;

#[derive(Debug)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    last_log: Option<Instant>,
    /// The error category logged last: a new kind of failure is always logged once.
    last_category: &'static str,
}

/// What the caller should do about one failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Wait this long before the next attempt.
    pub delay: Duration,
    /// Consecutive failures of this object, this one included.
    pub failures: u32,
    /// Whether to log this failure at warning level (else debug).
    pub log: bool,
}

/// The retry state of one controller's objects.
#[derive(Clone, Debug, Default)]
pub struct Backoffs(Arc<Mutex<HashMap<String, Entry>>>);

/// `BASE` (or `BASE_THROTTLED`) doubled per earlier failure, capped at [`CAP`].
pub fn delay(category: &str, failures: u32) -> Duration {
    let base = if category == "throttled" {
        BASE_THROTTLED
    } else {
        BASE
    };
    let doublings = failures.saturating_sub(1).min(16);
    base.checked_mul(1u32 << doublings).unwrap_or(CAP).min(CAP)
}

impl Backoffs {
    /// Records a failure of `key` (category `category`) at `now`.
    pub fn failed_at(&self, key: &str, category: &'static str, now: Instant) -> Retry {
        let Ok(mut map) = self.0.lock() else {
            // A poisoned lock means a panic while holding it; fall back to the cap.
            return Retry {
                delay: CAP,
                failures: 1,
                log: true,
            };
        };
        if map.len() >= SWEEP_AT {
            map.retain(|_, e| now.saturating_duration_since(e.last_failure) < FORGET_AFTER);
        }
        let e = map.entry(key.to_string()).or_insert(Entry {
            failures: 0,
            last_failure: now,
            last_log: None,
            last_category: category,
        });
        e.failures = e.failures.saturating_add(1);
        e.last_failure = now;
        let log = e.last_category != category
            || e.last_log
                .is_none_or(|t| now.saturating_duration_since(t) >= LOG_EVERY);
        if log {
            e.last_log = Some(now);
        }
        e.last_category = category;
        Retry {
            delay: delay(category, e.failures),
            failures: e.failures,
            log,
        }
    }

    /// Records a failure of `key` now.
    pub fn failed(&self, key: &str, category: &'static str) -> Retry {
        self.failed_at(key, category, Instant::now())
    }

    /// Forgets `key`: its next failure starts from the base delay again.
    pub fn succeeded(&self, key: &str) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(key);
        }
    }

    /// How many objects are currently backing off.
    pub fn len(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The backoff key of an object: its UID, else namespace/name.
pub fn key<K: kube::Resource>(obj: &K) -> String {
    let meta = obj.meta();
    match &meta.uid {
        Some(uid) => uid.clone(),
        None => format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or(""),
            meta.name.as_deref().unwrap_or("")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_a_second_up_to_the_cap_and_resets_on_success() {
        let b = Backoffs::default();
        let t0 = Instant::now();
        let delays: Vec<u64> = (0..12)
            .map(|i| {
                b.failed_at("u1", "invalid", t0 + Duration::from_secs(i))
                    .delay
                    .as_secs()
            })
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        // Another object has its own count.
        assert_eq!(b.failed_at("u2", "invalid", t0).delay, BASE);
        b.succeeded("u1");
        assert_eq!(b.failed_at("u1", "invalid", t0).delay, BASE);
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn throttling_starts_higher() {
        assert_eq!(delay("throttled", 1), Duration::from_secs(2));
        assert_eq!(delay("throttled", 30), CAP);
        assert_eq!(delay("server_error", u32::MAX), CAP);
    }

    #[test]
    fn logs_once_a_minute_per_object_and_on_a_new_kind_of_failure() {
        let b = Backoffs::default();
        let t0 = Instant::now();
        let logged: Vec<bool> = (0..130)
            .map(|s| {
                b.failed_at("u1", "invalid", t0 + Duration::from_secs(s))
                    .log
            })
            .collect();
        // Seconds 0, 60 and 120.
        assert_eq!(logged.iter().filter(|l| **l).count(), 3);
        assert!(logged[0] && logged[60] && logged[120]);
        assert!(
            b.failed_at("u1", "forbidden", t0 + Duration::from_secs(131))
                .log
        );
    }
}
