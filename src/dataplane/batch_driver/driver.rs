//! One instance of a batch job, start to end.
//!
//! Pipeline: list the input → cut the global plan → write the plan manifest → read every journal and
//! skip this shard's finished mini-batches → start `maxConcurrencyPerInstance` slots → journal each
//! finished mini-batch (group commit) and update progress → stop early when the error threshold is
//! crossed → report the final progress → merge the outputs if every mini-batch of the plan is done.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
};
use tracing::{info, warn};

use super::{
    journal::{self, Entry, Journal, JournalError},
    output::{
        self, MergeOutcome, OutputAction, OutputError, OutputSettings, PlanManifest, Summary,
    },
    plan::{self, Plan, PlanError, Shard},
    progress::{self, Counts, Phase, Progress, ProgressSink, Timing},
    shim::{self, ShimError},
    worker::{self, Queue, RetryPolicy, Scored, SlotContext, SlotEvent, WorkerSpec},
};

/// Everything one instance needs.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    pub input: PathBuf,
    pub output: PathBuf,
    pub scoring_script: PathBuf,
    pub model_dir: Option<PathBuf>,
    pub shard: Shard,
    pub mini_batch_size: usize,
    pub max_concurrency: usize,
    pub retry: RetryPolicy,
    pub init_timeout: Duration,
    pub output_settings: OutputSettings,
    pub python: String,
    /// Where the worker shim is written.
    pub work_dir: PathBuf,
    /// How often progress is reported while running.
    pub progress_interval: Duration,
}

/// How an instance ended (errors of the driver itself are [`DriverError`]).
#[derive(Debug)]
pub enum DriverOutcome {
    /// This shard is done. `merged` is the job summary when this instance merged the outputs, `None`
    /// when other instances still have mini-batches to finish (the last one merges).
    Completed { merged: Option<Summary> },
    /// The error threshold was crossed (here or on a peer); the job is stopped.
    ThresholdCrossed { reason: String },
    /// No Python worker could be started (missing interpreter, or the script's import/`init()` failed).
    WorkerStartFailed {
        reason: String,
        category: &'static str,
    },
}

/// A failure of the driver itself.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("cannot plan the job")]
    Plan(#[from] PlanError),
    #[error("cannot prepare the worker")]
    Shim(#[from] ShimError),
    #[error("journal failure")]
    Journal(#[from] JournalError),
    #[error("output failure")]
    Output(#[from] OutputError),
    #[error("a blocking task panicked or was cancelled")]
    Join(#[from] tokio::task::JoinError),
}

impl DriverError {
    /// A bounded name for metrics and status reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Plan(err) => err.category(),
            Self::Shim(err) => err.category(),
            Self::Journal(err) => err.category(),
            Self::Output(err) => err.category(),
            Self::Join(_) => "Internal",
        }
    }
}

/// Runs this instance's shard to the end; see the module doc.
pub async fn run(
    config: DriverConfig,
    mut sinks: Vec<Box<dyn ProgressSink>>,
) -> Result<DriverOutcome, DriverError> {
    let started = Instant::now();
    output::validate_file_name(&config.output_settings.file_name)?;
    let input = config.input.clone();
    let files = tokio::task::spawn_blocking(move || plan::list_input(&input)).await??;
    let plan = Plan::new(files, config.mini_batch_size)?;
    let manifest = PlanManifest::of(&plan);
    manifest.write(&config.output)?;
    let mine: Vec<Arc<plan::MiniBatch>> = plan.shard(config.shard).cloned().map(Arc::new).collect();

    let mut state = State::new(&config, &manifest.fingerprint, &mine);
    let done = finished_entries(&config, &mine).await?;
    let pending: Vec<Arc<plan::MiniBatch>> = mine
        .iter()
        .filter(|batch| match done.get(&batch.id.to_string()) {
            Some(entry) => {
                state.count(entry);
                state.progress.resumed += 1;
                false
            }
            None => true,
        })
        .cloned()
        .collect();
    info!(
        files = plan.items_total,
        mini_batches = plan.mini_batches.len(),
        instance = config.shard.index,
        instances = config.shard.count,
        shard_mini_batches = mine.len(),
        resumed = state.progress.resumed,
        pending = pending.len(),
        "batch plan ready"
    );
    let journal = Journal::open(&journal::journal_path(&config.output, config.shard.index))?;
    state.report(&mut sinks);

    let mut stop: Option<Stop> = state.threshold_crossed(&config).map(Stop::Threshold);
    if stop.is_none() && !pending.is_empty() {
        let run = score_pending(&config, pending, &mut state, journal, &mut sinks).await?;
        stop = run.stop;
        state.progress.timing = Some(run.timing.finish(started.elapsed()));
    }
    if stop.is_none() {
        // A peer may have pushed the job over the threshold while this shard finished.
        state.refresh_peers(&config);
        stop = state.threshold_crossed(&config).map(Stop::Threshold);
    }

    let outcome = match stop {
        Some(Stop::Threshold(reason)) => {
            warn!(category = "ErrorThresholdCrossed", "{reason}");
            state.finish(Phase::Failed, Some(reason.clone()), &mut sinks);
            output::write_failed(&config.output, &config.output_settings, reason.clone())?;
            DriverOutcome::ThresholdCrossed { reason }
        }
        Some(Stop::StartFailed { reason, category }) => {
            warn!(category, "{reason}");
            state.finish(Phase::Failed, Some(reason.clone()), &mut sinks);
            output::write_failed(&config.output, &config.output_settings, reason.clone())?;
            DriverOutcome::WorkerStartFailed { reason, category }
        }
        None => {
            state.finish(Phase::Completed, None, &mut sinks);
            let out = config.output.clone();
            let settings = config.output_settings.clone();
            match tokio::task::spawn_blocking(move || output::merge(&out, &settings)).await?? {
                MergeOutcome::Merged(summary) => match (&summary.status, &summary.reason) {
                    (Phase::Failed, Some(reason)) => DriverOutcome::ThresholdCrossed {
                        reason: reason.clone(),
                    },
                    _ => {
                        info!(
                            rows = summary.rows,
                            failed_items = summary.items.failed,
                            "outputs merged"
                        );
                        DriverOutcome::Completed {
                            merged: Some(summary),
                        }
                    }
                },
                MergeOutcome::Incomplete { missing } => {
                    info!(
                        missing,
                        "shard done; other instances still have mini-batches, the last one merges"
                    );
                    DriverOutcome::Completed { merged: None }
                }
            }
        }
    };
    Ok(outcome)
}

/// Entries of this shard's mini-batches found in any journal (first one wins).
async fn finished_entries(
    config: &DriverConfig,
    mine: &[Arc<plan::MiniBatch>],
) -> Result<HashMap<String, Entry>, DriverError> {
    let ids: HashSet<String> = mine.iter().map(|b| b.id.to_string()).collect();
    let output = config.output.clone();
    let done =
        tokio::task::spawn_blocking(move || -> Result<HashMap<String, Entry>, JournalError> {
            let files = journal::journal_files(&output)?;
            let mut done = HashMap::new();
            journal::scan(&files, |mut entry, _| {
                if ids.contains(&entry.id) && !done.contains_key(&entry.id) {
                    entry.rows = Vec::new();
                    done.insert(entry.id.clone(), entry);
                }
            })?;
            Ok(done)
        })
        .await??;
    Ok(done)
}

enum Stop {
    Threshold(String),
    StartFailed {
        reason: String,
        category: &'static str,
    },
}

struct RunResult {
    stop: Option<Stop>,
    timing: TimingSamples,
}

async fn score_pending(
    config: &DriverConfig,
    pending: Vec<Arc<plan::MiniBatch>>,
    state: &mut State,
    journal: Journal,
    sinks: &mut [Box<dyn ProgressSink>],
) -> Result<RunResult, DriverError> {
    let shim_path = shim::install(&config.work_dir)?;
    let mut env = vec![
        (
            "AZUREML_BI_OUTPUT_PATH".to_string(),
            config.output.to_string_lossy().into_owned(),
        ),
        (
            "MLCOMPUTE_INSTANCE_INDEX".to_string(),
            config.shard.index.to_string(),
        ),
        (
            "MLCOMPUTE_INSTANCE_COUNT".to_string(),
            config.shard.count.to_string(),
        ),
    ];
    if let Some(model) = &config.model_dir {
        env.push((
            crate::contract::AZUREML_MODEL_DIR.to_string(),
            model.to_string_lossy().into_owned(),
        ));
    }
    let slots = config.max_concurrency.clamp(1, pending.len().max(1));
    let ctx = Arc::new(SlotContext {
        spec: WorkerSpec {
            python: config.python.clone(),
            shim: shim_path,
            scoring_script: config.scoring_script.clone(),
            env,
            init_timeout: config.init_timeout,
        },
        policy: config.retry,
        keep_rows: config.output_settings.action == OutputAction::AppendRow,
        queue: Queue::new(pending),
        threshold: config.output_settings.threshold,
        local_failed: AtomicU64::new(state.progress.items.failed),
        peer_failed: AtomicU64::new(state.peer_failed),
    });
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (abort_tx, abort_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for slot in 0..slots {
        tasks.spawn(worker::run_slot(
            slot,
            ctx.clone(),
            tx.clone(),
            abort_rx.clone(),
        ));
    }
    drop(tx);

    let mut timing = TimingSamples::default();
    let mut stop = None;
    let mut ticker = tokio::time::interval(config.progress_interval);
    ticker.tick().await;
    // The journal moves into a blocking task for each group commit and comes back.
    let mut journal_slot = Some(journal);
    loop {
        tokio::select! {
            event = rx.recv() => {
                let Some(event) = event else { break };
                let mut scored = Vec::new();
                let mut events = vec![event];
                while let Ok(more) = rx.try_recv() {
                    events.push(more);
                }
                for event in events {
                    match event {
                        SlotEvent::Scored(s) => scored.push(s),
                        SlotEvent::StartFailed(err) => {
                            if stop.is_none() {
                                stop = Some(Stop::StartFailed {
                                    reason: format!("no worker could be started: {err}"),
                                    category: err.category(),
                                });
                            }
                            let _ = abort_tx.send(true);
                        }
                    }
                }
                if scored.is_empty() {
                    continue;
                }
                let entries: Vec<Entry> = scored.iter().map(entry_of).collect();
                let Some(mut open) = journal_slot.take() else { break };
                let (open, written) = tokio::task::spawn_blocking(move || {
                    let written = open.append(&entries);
                    (open, written)
                })
                .await?;
                journal_slot = Some(open);
                written?;
                for s in &scored {
                    timing.add(s);
                    state.count(&entry_of_counts(s));
                }
                if stop.is_none() && let Some(reason) = state.threshold_crossed(config) {
                    stop = Some(Stop::Threshold(reason));
                    let _ = abort_tx.send(true);
                }
            }
            _ = ticker.tick() => {
                state.refresh_peers(config);
                ctx.peer_failed.store(state.peer_failed, Ordering::Relaxed);
                if stop.is_none() && let Some(reason) = state.threshold_crossed(config) {
                    stop = Some(Stop::Threshold(reason));
                    let _ = abort_tx.send(true);
                }
                state.report(sinks);
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    Ok(RunResult { stop, timing })
}

fn entry_of(scored: &Scored) -> Entry {
    Entry {
        id: scored.id.to_string(),
        index: scored.id.index,
        items: scored.items,
        attempts: scored.attempts,
        timeouts: scored.timeouts,
        crashes: scored.crashes,
        failed: scored.failed.clone(),
        rows: scored.rows.clone(),
    }
}

fn entry_of_counts(scored: &Scored) -> Entry {
    Entry {
        id: String::new(),
        index: scored.id.index,
        items: scored.items,
        attempts: scored.attempts,
        timeouts: scored.timeouts,
        crashes: scored.crashes,
        failed: scored.failed.clone(),
        rows: Vec::new(),
    }
}

/// Counters of this instance, plus what its peers reported.
struct State {
    progress: Progress,
    shard: Shard,
    peer_failed: u64,
    last_report: Option<Progress>,
}

impl State {
    fn new(config: &DriverConfig, plan: &str, mine: &[Arc<plan::MiniBatch>]) -> Self {
        let progress = Progress {
            instance: config.shard.index,
            instance_count: config.shard.count,
            plan: plan.to_string(),
            phase: Phase::Running,
            mini_batches: Counts {
                total: mine.len() as u64,
                ..Counts::default()
            },
            items: Counts {
                total: mine.iter().map(|b| b.files.len() as u64).sum(),
                ..Counts::default()
            },
            ..Progress::default()
        };
        let mut state = Self {
            progress,
            shard: config.shard,
            peer_failed: 0,
            last_report: None,
        };
        state.refresh_peers(config);
        state
    }

    fn count(&mut self, entry: &Entry) {
        let failed = entry.failed.len() as u64;
        let p = &mut self.progress;
        if failed == 0 {
            p.mini_batches.succeeded += 1;
        } else {
            p.mini_batches.failed += 1;
        }
        p.items.failed += failed;
        p.items.succeeded += (entry.items as u64).saturating_sub(failed);
        p.attempts.total += u64::from(entry.attempts);
        p.attempts.retries += u64::from(entry.attempts.saturating_sub(1));
        p.attempts.timeouts += u64::from(entry.timeouts);
        p.attempts.worker_crashes += u64::from(entry.crashes);
    }

    fn refresh_peers(&mut self, config: &DriverConfig) {
        if self.shard.count > 1 {
            self.peer_failed =
                progress::peer_failed_items(&config.output, self.shard, &self.progress.plan);
        }
    }

    fn threshold_crossed(&self, config: &DriverConfig) -> Option<String> {
        let local = self.progress.items.failed;
        config
            .output_settings
            .threshold
            .check(local + self.peer_failed)
            .map(|reason| {
                if self.peer_failed > 0 {
                    format!(
                        "{reason} ({local} on this instance, {} on others)",
                        self.peer_failed
                    )
                } else {
                    reason
                }
            })
    }

    /// Reports to every sink when something changed since the last report.
    fn report(&mut self, sinks: &mut [Box<dyn ProgressSink>]) {
        let mut snapshot = self.progress.clone();
        snapshot.updated_unix_ms = 0;
        if self.last_report.as_ref() == Some(&snapshot) {
            return;
        }
        self.progress.updated_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or_default();
        for sink in sinks.iter_mut() {
            if let Err(err) = sink.report(&self.progress) {
                warn!(category = err.category(), "progress not reported: {err}");
            }
        }
        self.last_report = Some(snapshot);
    }

    fn finish(
        &mut self,
        phase: Phase,
        reason: Option<String>,
        sinks: &mut [Box<dyn ProgressSink>],
    ) {
        self.progress.phase = phase;
        self.progress.reason = reason;
        self.report(sinks);
    }
}

/// Per-mini-batch timings of this run.
#[derive(Default)]
struct TimingSamples {
    round_trip_ms: Vec<f64>,
    overhead_ms: Vec<f64>,
    items: u64,
}

impl TimingSamples {
    fn add(&mut self, scored: &Scored) {
        self.items += scored.items as u64;
        if let Some(t) = scored.timing {
            let round_trip = t.round_trip.as_secs_f64() * 1000.0;
            self.round_trip_ms.push(round_trip);
            self.overhead_ms
                .push((round_trip - t.run.as_secs_f64() * 1000.0).max(0.0));
        }
    }

    fn finish(mut self, wall: Duration) -> Timing {
        let wall_seconds = wall.as_secs_f64();
        Timing {
            wall_seconds,
            samples: self.round_trip_ms.len() as u64,
            round_trip_p50_ms: percentile(&mut self.round_trip_ms, 0.50),
            round_trip_p99_ms: percentile(&mut self.round_trip_ms, 0.99),
            overhead_p50_ms: percentile(&mut self.overhead_ms, 0.50),
            overhead_p99_ms: percentile(&mut self.overhead_ms, 0.99),
            wall_per_file_ms: if self.items == 0 {
                0.0
            } else {
                wall_seconds * 1000.0 / self.items as f64
            },
        }
    }
}

/// Nearest-rank percentile (`q` in 0..=1); 0 for no samples.
fn percentile(samples: &mut [f64], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_by(f64::total_cmp);
    let rank = (q * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut samples, 0.5), 50.0);
        assert_eq!(percentile(&mut samples, 0.99), 99.0);
        assert_eq!(percentile(&mut [], 0.5), 0.0);
        assert_eq!(percentile(&mut [3.0], 0.99), 3.0);
    }

    #[test]
    fn the_state_folder_is_not_an_output_file_name() {
        assert!(output::validate_file_name(journal::STATE_DIR).is_err());
    }
}
