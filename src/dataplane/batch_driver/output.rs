//! Output of a batch job: the merged row file, the error file and the summary.
//!
//! Layout of the output folder (shared by every instance):
//!
//! ```text
//! OUTPUT/
//!   predictions.csv          append_row: every row, ordered by mini-batch index, then row order
//!   errors.jsonl             one line per failed item: {"item","miniBatch","reason","detail"}
//!   summary.json             counts, status and reason (see [`Summary`])
//!   _mlcompute/
//!     plan.json              the global plan (mini-batch IDs), written by every instance at start
//!     journal-NNNNN.jsonl    per-instance journal = part file (see [`super::journal`])
//!     progress-NNNNN.json    per-instance progress (see [`super::progress`])
//! ```
//!
//! [`merge`] turns the journals into the three top-level files once every mini-batch of the plan is in
//! some journal; each file is written to a temporary name and renamed, so a reader never sees half a
//! file and two instances merging at once produce the same bytes. The instance that finishes last
//! merges by itself; `mlcompute batch-driver --merge-only` does the same on demand.

use std::{
    collections::HashMap,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{
    journal::{self, JournalError, Located, STATE_DIR},
    plan::Plan,
    progress::{Attempts, Counts, Phase, unique_suffix, write_atomic},
    threshold::ErrorThreshold,
};

/// The error file's name in the output folder.
pub const ERROR_FILE: &str = "errors.jsonl";
/// The summary's name in the output folder.
pub const SUMMARY_FILE: &str = "summary.json";
/// The plan manifest's name in the state folder.
pub const PLAN_FILE: &str = "plan.json";
/// At most this many retried mini-batches are listed in the summary.
const RETRIED_LISTED: usize = 1000;

/// Why output could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the plan manifest {path}; has any instance started?")]
    ReadPlan {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the plan manifest {path} is not valid")]
    ParsePlan {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "output file name {0:?} must be a plain file name (no '/', not '.', '..', or the driver's own files)"
    )]
    BadFileName(String),
}

impl OutputError {
    /// A bounded name for metrics and status reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Journal(err) => err.category(),
            Self::Write { .. } => "OutputWrite",
            Self::ReadPlan { .. } | Self::ParsePlan { .. } => "PlanManifest",
            Self::BadFileName(_) => "InvalidOutputFileName",
        }
    }
}

/// `outputAction` of a batch deployment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum OutputAction {
    /// Every row `run` returns goes to one output file.
    #[default]
    #[value(name = "append_row")]
    #[serde(rename = "append_row")]
    AppendRow,
    /// Rows are dropped; only the summary and the error file are written.
    #[value(name = "summary_only")]
    #[serde(rename = "summary_only")]
    SummaryOnly,
}

/// What a merge needs besides the output folder.
#[derive(Clone, Debug)]
pub struct OutputSettings {
    pub action: OutputAction,
    pub file_name: String,
    pub threshold: ErrorThreshold,
}

/// Checks `outputFileName`.
pub fn validate_file_name(name: &str) -> Result<(), OutputError> {
    let reserved = [ERROR_FILE, SUMMARY_FILE, STATE_DIR, ".", ".."];
    if name.is_empty() || name.contains('/') || name.contains('\0') || reserved.contains(&name) {
        return Err(OutputError::BadFileName(name.to_string()));
    }
    Ok(())
}

/// The global plan as stored for merges: the ordered mini-batch IDs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PlanManifest {
    pub fingerprint: String,
    pub mini_batch_size: usize,
    pub items_total: usize,
    pub mini_batches: Vec<String>,
}

impl PlanManifest {
    pub fn of(plan: &Plan) -> Self {
        Self {
            fingerprint: format!("{:016x}", plan.fingerprint()),
            mini_batch_size: plan.mini_batch_size,
            items_total: plan.items_total,
            mini_batches: plan.mini_batches.iter().map(|b| b.id.to_string()).collect(),
        }
    }

    fn path(output: &Path) -> PathBuf {
        output.join(STATE_DIR).join(PLAN_FILE)
    }

    /// Writes the manifest atomically (every instance writes the same bytes).
    pub fn write(&self, output: &Path) -> Result<(), OutputError> {
        let path = Self::path(output);
        let json = serde_json::to_vec(self).map_err(|e| OutputError::Write {
            path: path.clone(),
            source: e.into(),
        })?;
        write_atomic(&path, &json).map_err(|source| OutputError::Write { path, source })
    }

    pub fn read(output: &Path) -> Result<Self, OutputError> {
        let path = Self::path(output);
        let bytes = std::fs::read(&path).map_err(|source| OutputError::ReadPlan {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| OutputError::ParsePlan { path, source })
    }
}

/// A mini-batch that needed more than one attempt.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Retried {
    pub id: String,
    pub attempts: u32,
    pub timeouts: u32,
    pub worker_crashes: u32,
    pub failed_items: usize,
}

/// `summary.json`: the outcome of the whole job (all instances).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub status: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub output_action: OutputAction,
    /// The merged row file, for `append_row` once merged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_file: Option<String>,
    pub error_file: String,
    pub error_threshold: i64,
    pub mini_batches: Counts,
    pub items: Counts,
    pub attempts: Attempts,
    pub rows: u64,
    pub retried_mini_batches: Vec<Retried>,
}

/// What the journals say about the plan.
pub struct Collected {
    pub manifest: PlanManifest,
    files: Vec<PathBuf>,
    /// Per mini-batch of the plan (by index): where its entry is, if finished.
    located: Vec<Option<Located>>,
    mini_batches: Counts,
    items: Counts,
    attempts: Attempts,
    retried: Vec<Retried>,
}

impl Collected {
    /// Mini-batches of the plan that no journal holds yet.
    pub fn missing(&self) -> usize {
        self.located.iter().filter(|l| l.is_none()).count()
    }

    /// Failed items across the finished mini-batches.
    pub fn failed_items(&self) -> u64 {
        self.items.failed
    }
}

/// Reads the plan manifest and every journal; the first entry per mini-batch ID counts.
pub fn collect(output: &Path) -> Result<Collected, OutputError> {
    let manifest = PlanManifest::read(output)?;
    let position: HashMap<&str, usize> = manifest
        .mini_batches
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let files = journal::journal_files(output)?;
    let mut located = vec![None; manifest.mini_batches.len()];
    let mut mini_batches = Counts {
        total: manifest.mini_batches.len() as u64,
        ..Counts::default()
    };
    let mut items = Counts {
        total: manifest.items_total as u64,
        ..Counts::default()
    };
    let mut attempts = Attempts::default();
    let mut retried = Vec::new();
    journal::scan(&files, |entry, at| {
        let Some(&slot) = position.get(entry.id.as_str()) else {
            return;
        };
        let Some(place) = located.get_mut(slot) else {
            return;
        };
        if place.is_some() {
            return;
        }
        *place = Some(at);
        let failed = entry.failed.len() as u64;
        if failed == 0 {
            mini_batches.succeeded += 1;
        } else {
            mini_batches.failed += 1;
        }
        items.failed += failed;
        items.succeeded += (entry.items as u64).saturating_sub(failed);
        attempts.total += u64::from(entry.attempts);
        attempts.retries += u64::from(entry.attempts.saturating_sub(1));
        attempts.timeouts += u64::from(entry.timeouts);
        attempts.worker_crashes += u64::from(entry.crashes);
        if entry.attempts > 1 {
            retried.push(Retried {
                id: entry.id,
                attempts: entry.attempts,
                timeouts: entry.timeouts,
                worker_crashes: entry.crashes,
                failed_items: entry.failed.len(),
            });
        }
    })?;
    retried.sort_by(|a, b| a.id.cmp(&b.id));
    retried.truncate(RETRIED_LISTED);
    Ok(Collected {
        manifest,
        files,
        located,
        mini_batches,
        items,
        attempts,
        retried,
    })
}

/// The result of [`merge`].
#[derive(Debug)]
pub enum MergeOutcome {
    /// All files written; the summary says whether the job completed or crossed the threshold.
    Merged(Summary),
    /// Some mini-batches are in no journal yet; nothing was written.
    Incomplete { missing: usize },
}

/// Writes the output file (for `append_row`), the error file and the summary, if the plan is complete.
pub fn merge(output: &Path, settings: &OutputSettings) -> Result<MergeOutcome, OutputError> {
    let collected = collect(output)?;
    let missing = collected.missing();
    if missing > 0 {
        return Ok(MergeOutcome::Incomplete { missing });
    }
    let reason = settings.threshold.check(collected.failed_items());
    let summary = write_outputs(output, settings, &collected, true, reason)?;
    Ok(MergeOutcome::Merged(summary))
}

/// Writes the error file and a failed summary for a job stopped with `reason` (rows are not merged).
pub fn write_failed(
    output: &Path,
    settings: &OutputSettings,
    reason: String,
) -> Result<Summary, OutputError> {
    let collected = collect(output)?;
    write_outputs(output, settings, &collected, false, Some(reason))
}

fn write_outputs(
    output: &Path,
    settings: &OutputSettings,
    collected: &Collected,
    complete: bool,
    reason: Option<String>,
) -> Result<Summary, OutputError> {
    let write_rows = complete && reason.is_none() && settings.action == OutputAction::AppendRow;
    let rows_path = output.join(&settings.file_name);
    let errors_path = output.join(ERROR_FILE);
    let rows_tmp = temp_name(&rows_path);
    let errors_tmp = temp_name(&errors_path);
    let create = |path: &Path| {
        std::fs::File::create(path)
            .map(|f| BufWriter::with_capacity(1 << 20, f))
            .map_err(|source| OutputError::Write {
                path: path.to_path_buf(),
                source,
            })
    };
    let mut rows_out = if write_rows {
        Some(create(&rows_tmp)?)
    } else {
        None
    };
    let mut errors_out = create(&errors_tmp)?;
    let mut handles: Vec<Option<std::fs::File>> = collected.files.iter().map(|_| None).collect();
    let mut rows = 0u64;
    for (index, at) in collected.located.iter().enumerate() {
        let Some(at) = at else { continue };
        let entry = journal::read_at(&collected.files, &mut handles, at)?;
        if let Some(out) = rows_out.as_mut() {
            for row in &entry.rows {
                writeln!(out, "{row}").map_err(|source| OutputError::Write {
                    path: rows_tmp.clone(),
                    source,
                })?;
            }
        }
        rows += entry.rows.len() as u64;
        for failed in &entry.failed {
            let line = serde_json::json!({
                "item": failed.item,
                "miniBatch": collected.manifest.mini_batches.get(index),
                "reason": failed.reason,
                "detail": failed.detail,
            });
            writeln!(errors_out, "{line}").map_err(|source| OutputError::Write {
                path: errors_tmp.clone(),
                source,
            })?;
        }
    }
    if let Some(out) = rows_out {
        finish(out, &rows_tmp, &rows_path)?;
    }
    finish(errors_out, &errors_tmp, &errors_path)?;
    let summary = Summary {
        status: if reason.is_some() {
            Phase::Failed
        } else {
            Phase::Completed
        },
        reason,
        output_action: settings.action,
        output_file: write_rows.then(|| settings.file_name.clone()),
        error_file: ERROR_FILE.to_string(),
        error_threshold: settings.threshold.setting(),
        mini_batches: collected.mini_batches,
        items: collected.items,
        attempts: collected.attempts,
        rows: if settings.action == OutputAction::AppendRow {
            rows
        } else {
            0
        },
        retried_mini_batches: collected.retried.clone(),
    };
    let summary_path = output.join(SUMMARY_FILE);
    let json = serde_json::to_vec_pretty(&summary).map_err(|e| OutputError::Write {
        path: summary_path.clone(),
        source: e.into(),
    })?;
    write_atomic(&summary_path, &json).map_err(|source| OutputError::Write {
        path: summary_path,
        source,
    })?;
    Ok(summary)
}

fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", unique_suffix()))
}

fn finish(out: BufWriter<std::fs::File>, tmp: &Path, path: &Path) -> Result<(), OutputError> {
    let write_err = |source| OutputError::Write {
        path: path.to_path_buf(),
        source,
    };
    let file = out.into_inner().map_err(|e| write_err(e.into_error()))?;
    file.sync_data().map_err(write_err)?;
    std::fs::rename(tmp, path).map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::batch_driver::{
        journal::{Entry, FailedItem, Journal, journal_path},
        plan::InputFile,
    };

    fn plan(n: usize, size: usize) -> Plan {
        let files = (0..n)
            .map(|i| InputFile {
                relative: format!("f{i:03}"),
                absolute: PathBuf::from(format!("/in/f{i:03}")),
            })
            .collect();
        Plan::new(files, size).unwrap()
    }

    fn entry(plan: &Plan, index: usize, failed: &[&str]) -> Entry {
        let batch = &plan.mini_batches[index];
        Entry {
            id: batch.id.to_string(),
            index: batch.id.index,
            items: batch.files.len(),
            attempts: if failed.is_empty() { 1 } else { 4 },
            timeouts: 0,
            crashes: 0,
            failed: failed
                .iter()
                .map(|f| FailedItem {
                    item: (*f).to_string(),
                    reason: "ValueError: bad".into(),
                    detail: String::new(),
                })
                .collect(),
            rows: batch
                .files
                .iter()
                .filter(|f| !failed.contains(&f.relative.as_str()))
                .map(|f| format!("{},ok", f.relative))
                .collect(),
        }
    }

    fn settings(threshold: i64) -> OutputSettings {
        OutputSettings {
            action: OutputAction::AppendRow,
            file_name: "predictions.csv".into(),
            threshold: ErrorThreshold::from_setting(threshold).unwrap(),
        }
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mlc-output-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn rows_are_merged_by_mini_batch_index_whatever_the_journal_order() {
        let out = temp("order");
        let plan = plan(25, 10);
        PlanManifest::of(&plan).write(&out).unwrap();
        Journal::open(&journal_path(&out, 1))
            .unwrap()
            .append(&[entry(&plan, 1, &[])])
            .unwrap();
        let mut j0 = Journal::open(&journal_path(&out, 0)).unwrap();
        j0.append(&[entry(&plan, 2, &["f021"])]).unwrap();
        assert!(matches!(
            merge(&out, &settings(-1)).unwrap(),
            MergeOutcome::Incomplete { missing: 1 }
        ));
        j0.append(&[entry(&plan, 0, &[])]).unwrap();
        let MergeOutcome::Merged(summary) = merge(&out, &settings(-1)).unwrap() else {
            panic!("not merged")
        };
        let rows = std::fs::read_to_string(out.join("predictions.csv")).unwrap();
        let expected: String = (0..25)
            .filter(|i| *i != 21)
            .map(|i| format!("f{i:03},ok\n"))
            .collect();
        assert_eq!(rows, expected);
        let errors = std::fs::read_to_string(out.join(ERROR_FILE)).unwrap();
        assert_eq!(errors.lines().count(), 1);
        assert!(errors.contains(r#""item":"f021""#), "{errors}");
        assert_eq!(summary.status, Phase::Completed);
        assert_eq!(
            summary.items,
            Counts {
                total: 25,
                succeeded: 24,
                failed: 1
            }
        );
        assert_eq!(
            summary.mini_batches,
            Counts {
                total: 3,
                succeeded: 2,
                failed: 1
            }
        );
        assert_eq!(summary.attempts.retries, 3);
        assert_eq!(summary.rows, 24);
        std::fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn duplicate_and_foreign_entries_are_ignored() {
        let out = temp("dupes");
        let plan = plan(10, 10);
        PlanManifest::of(&plan).write(&out).unwrap();
        let mut stale = entry(&plan, 0, &[]);
        stale.id = "000000-ffffffffffffffff".into();
        stale.rows = vec!["stale".into()];
        let mut j = Journal::open(&journal_path(&out, 0)).unwrap();
        j.append(&[stale, entry(&plan, 0, &[]), entry(&plan, 0, &["f000"])])
            .unwrap();
        let MergeOutcome::Merged(summary) = merge(&out, &settings(-1)).unwrap() else {
            panic!("not merged")
        };
        assert_eq!(summary.items.failed, 0);
        let rows = std::fs::read_to_string(out.join("predictions.csv")).unwrap();
        assert!(rows.starts_with("f000,ok\n") && !rows.contains("stale"));
        std::fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn a_merge_above_the_threshold_fails_and_writes_no_rows() {
        let out = temp("threshold");
        let plan = plan(10, 10);
        PlanManifest::of(&plan).write(&out).unwrap();
        Journal::open(&journal_path(&out, 0))
            .unwrap()
            .append(&[entry(&plan, 0, &["f001", "f002"])])
            .unwrap();
        let MergeOutcome::Merged(summary) = merge(&out, &settings(1)).unwrap() else {
            panic!("not merged")
        };
        assert_eq!(summary.status, Phase::Failed);
        assert!(summary.reason.unwrap().contains("exceeds errorThreshold 1"));
        assert!(!out.join("predictions.csv").exists());
        std::fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn output_file_names_are_checked() {
        assert!(validate_file_name("predictions.csv").is_ok());
        for bad in ["", "a/b", "..", ERROR_FILE, SUMMARY_FILE, STATE_DIR] {
            assert!(validate_file_name(bad).is_err(), "{bad}");
        }
    }
}
