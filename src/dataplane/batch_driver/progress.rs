//! Progress of one instance: counters, where they are reported, and how peers read them.
//!
//! The driver hands a [`Progress`] snapshot to every [`ProgressSink`] at most once per interval and
//! once at the end. Two sinks ship here: [`FileSink`] rewrites `OUTPUT/_mlcompute/progress-NNNNN.json`
//! atomically (temporary file + rename), [`StdoutSink`] prints one JSON line per snapshot on stdout
//! (`{"progress":{…}}`). A sink that patches the BatchJob status implements the same trait.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{journal::STATE_DIR, plan::Shard};

/// Why a sink could not report.
#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    #[error("cannot write progress file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode progress")]
    Encode(#[source] serde_json::Error),
}

impl ProgressError {
    /// A bounded name for metrics and status reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Write { .. } => "ProgressWrite",
            Self::Encode(_) => "ProgressEncode",
        }
    }
}

// The phase and counters are also what the BatchJob controller reads (`crate::contract::progress`).
pub use crate::contract::progress::{Counts, Phase};

/// Attempts made, across mini-batches.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Attempts {
    pub total: u64,
    /// Attempts beyond the first of each mini-batch.
    pub retries: u64,
    pub timeouts: u64,
    pub worker_crashes: u64,
}

/// The driver's own timing, for the benchmark and for tuning.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Timing {
    /// Wall time of this instance, from start to its last journal write.
    pub wall_seconds: f64,
    /// Mini-batches whose exchanges were timed (not resumed ones).
    pub samples: u64,
    /// Send-to-answer time of a mini-batch, p50 and p99.
    pub round_trip_p50_ms: f64,
    pub round_trip_p99_ms: f64,
    /// Round trip minus the time spent in the user's `run`: the orchestration overhead.
    pub overhead_p50_ms: f64,
    pub overhead_p99_ms: f64,
    /// Wall time divided by the files this run scored.
    pub wall_per_file_ms: f64,
}

/// A snapshot of one instance's progress. Mini-batches and items count this instance's shard,
/// including those finished by an earlier run and skipped now (`resumed`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub instance: u32,
    pub instance_count: u32,
    /// Plan fingerprint (hex): peers only add up counts of the same plan.
    pub plan: String,
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub mini_batches: Counts,
    pub items: Counts,
    pub attempts: Attempts,
    pub resumed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<Timing>,
    pub updated_unix_ms: u64,
}

/// Where progress goes.
pub trait ProgressSink: Send {
    fn report(&mut self, progress: &Progress) -> Result<(), ProgressError>;
}

/// The progress file of instance `index`.
pub fn progress_path(output: &Path, instance: u32) -> PathBuf {
    output
        .join(STATE_DIR)
        .join(format!("progress-{instance:05}.json"))
}

/// Rewrites `progress-NNNNN.json` atomically on every report.
pub struct FileSink {
    path: PathBuf,
}

impl FileSink {
    pub fn new(output: &Path, instance: u32) -> Self {
        Self {
            path: progress_path(output, instance),
        }
    }
}

impl ProgressSink for FileSink {
    fn report(&mut self, progress: &Progress) -> Result<(), ProgressError> {
        let json = serde_json::to_vec_pretty(progress).map_err(ProgressError::Encode)?;
        write_atomic(&self.path, &json).map_err(|source| ProgressError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

/// Prints `{"progress":{…}}` lines on stdout.
#[derive(Default)]
pub struct StdoutSink;

impl ProgressSink for StdoutSink {
    fn report(&mut self, progress: &Progress) -> Result<(), ProgressError> {
        let line = serde_json::to_string(&serde_json::json!({ "progress": progress }))
            .map_err(ProgressError::Encode)?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|source| ProgressError::Write {
                path: PathBuf::from("<stdout>"),
                source,
            })
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", unique_suffix()));
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_data()?;
    }
    std::fs::rename(&tmp, path)
}

/// A suffix for temporary file names that differs between processes, also between pods that all
/// run as PID 1 on a shared volume.
pub fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{}-{nanos}", std::process::id())
}

/// Sum of the failed items the other instances of the same plan and instance count have reported.
///
/// Progress files of another plan or instance count (a previous, different run) are ignored; a
/// missing or unreadable file counts as zero. This is how an error threshold applies to the whole
/// input while each instance only scores its shard.
pub fn peer_failed_items(output: &Path, me: Shard, plan: &str) -> u64 {
    (0..me.count)
        .filter(|peer| *peer != me.index)
        .filter_map(|peer| std::fs::read(progress_path(output, peer)).ok())
        .filter_map(|bytes| serde_json::from_slice::<Progress>(&bytes).ok())
        .filter(|p| p.instance_count == me.count && p.plan == plan)
        .map(|p| p.items.failed)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_of_the_same_plan_are_summed_and_others_ignored() {
        let out = std::env::temp_dir().join(format!("mlc-progress-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let write = |instance: u32, count: u32, plan: &str, failed: u64| {
            let progress = Progress {
                instance,
                instance_count: count,
                plan: plan.to_string(),
                items: Counts {
                    total: 1000,
                    succeeded: 1000 - failed,
                    failed,
                },
                ..Progress::default()
            };
            FileSink::new(&out, instance).report(&progress).unwrap();
        };
        write(0, 3, "p", 100);
        write(1, 3, "p", 2);
        write(2, 3, "other", 5);
        let me = Shard::new(0, 3).unwrap();
        assert_eq!(peer_failed_items(&out, me, "p"), 2);
        write(2, 4, "p", 7);
        assert_eq!(peer_failed_items(&out, me, "p"), 2);
        let back: Progress =
            serde_json::from_slice(&std::fs::read(progress_path(&out, 1)).unwrap()).unwrap();
        assert_eq!(back.items.failed, 2);
        std::fs::remove_dir_all(&out).unwrap();
    }
}
