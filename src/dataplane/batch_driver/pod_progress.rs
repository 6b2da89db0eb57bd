//! Progress of one driver Pod, for the BatchJob status: the driver's side of the progress records
//! ([`crate::contract::progress`]).
//!
//! The progress files on the output volume are out of the operator's reach, and the driver container
//! runs the user's scoring script, so it must hold no Kubernetes credentials. The channel therefore
//! has three legs:
//! 1. the driver, started with `MLCOMPUTE_PROGRESS_FILE`, rewrites that file (an emptyDir shared with
//!    the relay) atomically with its latest [`PodProgress`] ([`SnapshotSink`]);
//! 2. the relay sidecar ([`crate::dataplane::batch_driver::progress_relay`]), the only container with a token, copies
//!    the snapshot into its instance's key of the job's progress ConfigMap — the one object its Role
//!    allows it to patch;
//! 3. the BatchJob controller reads that ConfigMap, checks every entry
//!    ([`crate::contract::progress::parse_entry`]) and adds them up.
//!
//! Whatever writes the file (the scoring script can) can only change its own job's counters; the
//! relay and the controller treat the value as untrusted input.

use std::path::{Path, PathBuf};

use super::progress::{Progress, ProgressError, ProgressSink, write_atomic};
use crate::contract::progress::{MAX_REASON, PodProgress, truncate};

/// The reported subset of a driver snapshot.
pub fn pod_progress(p: &Progress) -> PodProgress {
    PodProgress {
        instance: p.instance,
        instance_count: p.instance_count,
        phase: p.phase,
        reason: p.reason.as_deref().map(|r| truncate(r, MAX_REASON)),
        mini_batches: p.mini_batches,
        items: p.items,
        updated_unix_ms: p.updated_unix_ms,
    }
}

/// Rewrites one file atomically with the latest [`PodProgress`] (for the relay sidecar).
pub struct SnapshotSink {
    path: PathBuf,
}

impl SnapshotSink {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
        }
    }
}

impl ProgressSink for SnapshotSink {
    fn report(&mut self, progress: &Progress) -> Result<(), ProgressError> {
        let json = pod_progress(progress)
            .to_json()
            .map_err(ProgressError::Encode)?;
        write_atomic(&self.path, json.as_bytes()).map_err(|source| ProgressError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::progress::{Counts, MAX_VALUE, Phase};

    fn progress(instance: u32, done: u64, failed_items: u64, at: u64) -> Progress {
        Progress {
            instance,
            instance_count: 2,
            plan: "abc".into(),
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
            ..Progress::default()
        }
    }

    #[test]
    fn the_value_is_the_reported_subset_and_small() {
        let mut p = progress(1, 4, 2, 1234);
        p.phase = Phase::Failed;
        p.reason = Some("é".repeat(5000));
        let value = pod_progress(&p).to_json().unwrap();
        let json: serde_json::Value = serde_json::from_str(&value).unwrap();
        assert_eq!(json["instance"], 1);
        assert_eq!(json["phase"], "Failed");
        assert_eq!(json["updatedUnixMs"], 1234);
        assert_eq!(json["reason"].as_str().unwrap().len(), MAX_REASON);
        assert!(json.get("plan").is_none() && json.get("timing").is_none());
        // Control characters escape to six bytes each: the reason shrinks until the value fits.
        p.reason = Some("\u{1}".repeat(5000));
        let value = pod_progress(&p).to_json().unwrap();
        assert!(value.len() <= MAX_VALUE, "{}", value.len());
        assert_eq!(PodProgress::parse(&value).unwrap().items.failed, 2);
    }

    #[test]
    fn the_snapshot_file_is_replaced_atomically() {
        let dir = std::env::temp_dir().join(format!("mlc-snapshot-{}", std::process::id()));
        let path = dir.join("progress.json");
        let mut sink = SnapshotSink::new(&path);
        sink.report(&progress(0, 1, 0, 1)).unwrap();
        sink.report(&progress(0, 2, 0, 2)).unwrap();
        let back = PodProgress::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back.mini_batches.succeeded, 2);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temp files left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
