//! The progress records of a batch job: one small JSON [`PodProgress`] per driver instance, in the
//! job's progress ConfigMap `<job>-progress` under the key [`entry_key`] of its instance index.
//!
//! Writers: the batch driver (the snapshot file named by `MLCOMPUTE_PROGRESS_FILE`) and its relay
//! sidecar, which copies a checked, re-encoded snapshot into the ConfigMap. Reader: the BatchJob
//! controller ([`parse_entry`] every entry, [`sum`] them into the status counters).
//!
//! The values come from Pods that run the user's scoring script, so readers treat them as
//! untrusted: bounded ([`MAX_VALUE`]), checked against the key and the job's instance count,
//! anything else ignored. Unknown fields are ignored and an unknown [`Phase`] reads as
//! [`Phase::Unknown`] (its counters still count), so a newer driver can add either.

use serde::{Deserialize, Serialize};

/// Longest value (bytes) of one instance's entry; longer ones are ignored, so a progress object
/// of thousands of instances stays far below the API server's 1 MiB object limit.
pub const MAX_VALUE: usize = 2048;
/// Longest reason (bytes) a writer puts in an entry.
pub const MAX_REASON: usize = 512;

/// Lifecycle of an instance, named as Azure ML job phases.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum Phase {
    #[default]
    Running,
    Completed,
    Failed,
    /// A phase this reader does not know (a newer writer's); never written.
    #[serde(other)]
    Unknown,
}

/// Total / succeeded / failed.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counts {
    pub total: u64,
    pub succeeded: u64,
    pub failed: u64,
}

/// What one instance reports: counters of its shard, and why it stopped.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodProgress {
    pub instance: u32,
    pub instance_count: u32,
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub mini_batches: Counts,
    pub items: Counts,
    pub updated_unix_ms: u64,
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl PodProgress {
    /// The JSON value, at most [`MAX_VALUE`] bytes: the reason is shortened until it fits (JSON
    /// escapes can make a short reason long).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        let mut me = self.clone();
        loop {
            let json = serde_json::to_string(&me)?;
            match &me.reason {
                Some(r) if json.len() > MAX_VALUE => {
                    me.reason = Some(truncate(r, r.len() / 2)).filter(|r| !r.is_empty());
                }
                _ => return Ok(json),
            }
        }
    }

    /// Reads a value; `None` when it is longer than [`MAX_VALUE`] or not one.
    pub fn parse(value: &str) -> Option<Self> {
        if value.len() > MAX_VALUE {
            return None;
        }
        serde_json::from_str(value).ok()
    }
}

/// The progress object's key of instance `index`.
pub fn entry_key(index: u32) -> String {
    index.to_string()
}

/// One entry of the progress object, checked: the key is a plain instance index below
/// `instance_count`, and the value a [`PodProgress`] of that index and count. Anything else is
/// ignored (`None`), whoever wrote it.
pub fn parse_entry(key: &str, value: &str, instance_count: u32) -> Option<PodProgress> {
    if key.is_empty() || key.len() > 10 || !key.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let index: u32 = key.parse().ok()?;
    if entry_key(index) != key {
        return None; // "01": one instance, one key
    }
    let p = PodProgress::parse(value)?;
    (index < instance_count && p.instance == index && p.instance_count == instance_count)
        .then_some(p)
}

/// Sums the instances' reports into the job's counters. One report per instance counts (the newest);
/// reports of another instance count (a different plan) are ignored. Sums saturate: the values
/// come from the job's own Pods and are not trusted.
pub fn sum<'a>(reports: impl IntoIterator<Item = &'a PodProgress>, instance_count: u32) -> Totals {
    let mut newest: std::collections::BTreeMap<u32, &PodProgress> = Default::default();
    for r in reports {
        if r.instance_count != instance_count || r.instance >= instance_count {
            continue;
        }
        let slot = newest.entry(r.instance).or_insert(r);
        if r.updated_unix_ms > slot.updated_unix_ms {
            *slot = r;
        }
    }
    let add = |a: &mut Counts, b: &Counts| {
        a.total = a.total.saturating_add(b.total);
        a.succeeded = a.succeeded.saturating_add(b.succeeded);
        a.failed = a.failed.saturating_add(b.failed);
    };
    let mut t = Totals {
        instances_reporting: u32::try_from(newest.len()).unwrap_or(u32::MAX),
        ..Totals::default()
    };
    for r in newest.values() {
        add(&mut t.mini_batches, &r.mini_batches);
        add(&mut t.items, &r.items);
        if r.phase == Phase::Failed && t.reason.is_none() {
            t.reason = r.reason.clone();
        }
    }
    t
}

/// The job's counters, summed over instances.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub instances_reporting: u32,
    pub mini_batches: Counts,
    pub items: Counts,
    /// The reason of the first failed instance.
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(instance: u32, done: u64, failed_items: u64, at: u64) -> PodProgress {
        PodProgress {
            instance,
            instance_count: 2,
            mini_batches: Counts {
                total: 10,
                succeeded: done,
                failed: 0,
            },
            items: Counts {
                total: 100,
                succeeded: done * 10 - failed_items,
                failed: failed_items,
            },
            updated_unix_ms: at,
            ..PodProgress::default()
        }
    }

    #[test]
    fn the_value_is_small_camel_case_json() {
        let mut p = report(1, 4, 2, 1234);
        p.phase = Phase::Failed;
        p.reason = Some("\u{1}".repeat(MAX_REASON));
        let value = p.to_json().unwrap();
        let json: serde_json::Value = serde_json::from_str(&value).unwrap();
        assert_eq!(json["instance"], 1);
        assert_eq!(json["instanceCount"], 2);
        assert_eq!(json["phase"], "Failed");
        assert_eq!(json["miniBatches"]["succeeded"], 4);
        assert_eq!(json["items"]["failed"], 2);
        assert_eq!(json["updatedUnixMs"], 1234);
        // Control characters escape to six bytes each: the reason shrinks until the value fits.
        assert!(value.len() <= MAX_VALUE, "{}", value.len());
        assert_eq!(PodProgress::parse(&value).unwrap().items.failed, 2);
        assert_eq!(truncate("éé", 3), "é");
    }

    #[test]
    fn entries_are_checked_and_garbage_is_ignored() {
        let ok = report(1, 4, 2, 1).to_json().unwrap();
        assert_eq!(parse_entry("1", &ok, 2).unwrap().mini_batches.succeeded, 4);
        // Unknown fields are accepted, at every level.
        let mut extra: serde_json::Value = serde_json::from_str(&ok).unwrap();
        extra["newField"] = serde_json::json!({ "x": [1, 2] });
        extra["items"]["skipped"] = serde_json::json!(3);
        assert_eq!(
            parse_entry("1", &extra.to_string(), 2),
            parse_entry("1", &ok, 2)
        );
        // An unknown phase (a newer driver's) is Unknown; its counters still count.
        let mut later = extra.clone();
        later["phase"] = serde_json::json!("Draining");
        let p = parse_entry("1", &later.to_string(), 2).unwrap();
        assert_eq!((p.phase, p.items.failed), (Phase::Unknown, 2));
        // The key must be the entry's own index, below the job's instance count.
        assert_eq!(parse_entry("0", &ok, 2), None);
        assert_eq!(parse_entry("01", &ok, 2), None);
        assert_eq!(parse_entry("+1", &ok, 2), None);
        assert_eq!(parse_entry("1", &ok, 3), None, "another instance count");
        assert_eq!(parse_entry("1", &ok, 1), None);
        assert_eq!(parse_entry("99999999999", &ok, 2), None);
        // Garbage, wrong types, negative counts, oversized values.
        for bad in [
            "",
            "not json",
            "null",
            "[]",
            r#"{"instance":1}"#,
            r#"{"instance":-1,"instanceCount":2,"phase":"Running","miniBatches":{"total":1,"succeeded":1,"failed":0},"items":{"total":1,"succeeded":1,"failed":0},"updatedUnixMs":1}"#,
            r#"{"instance":1,"instanceCount":2,"phase":7,"miniBatches":{"total":1,"succeeded":1,"failed":0},"items":{"total":1,"succeeded":1,"failed":0},"updatedUnixMs":1}"#,
        ] {
            assert_eq!(parse_entry("1", bad, 2), None, "{bad}");
        }
        let mut big = extra.clone();
        big["pad"] = serde_json::json!("x".repeat(MAX_VALUE));
        assert_eq!(parse_entry("1", &big.to_string(), 2), None);
    }

    #[test]
    fn sums_the_newest_report_of_each_instance_and_saturates() {
        let reports = vec![
            report(0, 3, 1, 10),
            report(0, 5, 1, 20), // a newer report of instance 0
            report(1, 2, 0, 15),
            PodProgress {
                instance_count: 3, // another plan
                ..report(1, 9, 9, 99)
            },
        ];
        let t = sum(&reports, 2);
        assert_eq!(t.instances_reporting, 2);
        assert_eq!(t.mini_batches.total, 20);
        assert_eq!(t.mini_batches.succeeded, 7);
        assert_eq!(t.items.failed, 1);
        let huge = |i| PodProgress {
            items: Counts {
                total: u64::MAX,
                succeeded: u64::MAX,
                failed: u64::MAX,
            },
            ..report(i, 1, 0, 1)
        };
        let t = sum(&[huge(0), huge(1)], 2);
        assert_eq!(t.items.failed, u64::MAX);
    }
}
