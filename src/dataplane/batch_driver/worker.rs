//! Python worker processes and the slots that drive them.
//!
//! A [`Worker`] is one long-lived `python3 mlcompute_batch_worker.py SCRIPT` process: it imports the
//! scoring script and runs `init()` once, then answers one request frame per mini-batch. A slot
//! ([`run_slot`]) owns at most one worker, takes mini-batches from the shared [`Queue`] and retries each
//! up to `max_retries` times. A timed-out attempt kills the worker; a worker that dies or breaks the
//! protocol is a failed attempt for its mini-batch. Either way the slot starts a fresh worker for the
//! next attempt, so one bad mini-batch never takes the driver down.

use std::{
    collections::VecDeque,
    path::PathBuf,
    process::{ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    io::BufReader,
    process::{Child, ChildStdin, ChildStdout, Command},
    sync::{mpsc, watch},
};
use tracing::{debug, info, warn};

use super::{
    journal::FailedItem,
    plan::{MiniBatch, MiniBatchId},
    protocol::{self, FrameError, Hello, Request, Response},
    threshold::ErrorThreshold,
};

/// How to start a worker.
#[derive(Clone, Debug)]
pub struct WorkerSpec {
    /// The Python interpreter (`python3`, or a path).
    pub python: String,
    /// The installed shim (see [`super::shim::install`]).
    pub shim: PathBuf,
    /// The user's scoring script.
    pub scoring_script: PathBuf,
    /// Extra environment for the worker (model folder, output folder, …).
    pub env: Vec<(String, String)>,
    /// How long import plus `init()` may take.
    pub init_timeout: Duration,
}

/// Per-mini-batch retry settings (`retrySettings`).
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts after the first one.
    pub max_retries: u32,
    /// Limit for one attempt, from sending the mini-batch to receiving its result.
    pub timeout: Duration,
}

/// Why a worker could not be started; after the allowed retries this stops the driver.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot start the Python interpreter {python:?}")]
    Spawn {
        python: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the scoring script failed to load: {reason}")]
    Init { reason: String, detail: String },
    #[error("the scoring script's init() did not finish within {0:?}")]
    InitTimeout(Duration),
    #[error("the worker exited during start-up ({status})")]
    DiedAtStart {
        status: String,
        #[source]
        source: FrameError,
    },
}

impl WorkerError {
    /// A bounded name for metrics and status reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Spawn { .. } => "PythonNotFound",
            Self::Init { .. } => "ScoringScriptInitFailed",
            Self::InitTimeout(_) => "ScoringScriptInitTimeout",
            Self::DiedAtStart { .. } => "WorkerDiedAtStart",
        }
    }

    fn is_retriable(&self) -> bool {
        !matches!(self, Self::Spawn { .. })
    }
}

/// Why one attempt at a mini-batch failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error("mini-batch timed out after {0:?}")]
    Timeout(Duration),
    #[error("worker died ({status})")]
    Died {
        status: String,
        #[source]
        source: FrameError,
    },
    #[error("worker answered request {got} while {expected} was pending")]
    WrongId { expected: u64, got: u64 },
}

impl AttemptError {
    /// A bounded name for metrics and status reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "MiniBatchTimeout",
            Self::Died { .. } => "WorkerDied",
            Self::WrongId { .. } => "WorkerProtocol",
        }
    }
}

/// One running Python worker.
pub struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
}

/// A successful exchange and how long it took.
pub struct Exchange {
    pub response: Response,
    pub round_trip: Duration,
}

impl Worker {
    /// Starts a worker and waits until the script is imported and `init()` returned.
    ///
    /// The shim asks Linux to kill it when its parent thread dies (`PR_SET_PDEATHSIG`), so workers must
    /// be spawned from a runtime worker thread (as here), never from a short-lived blocking thread.
    pub async fn start(spec: &WorkerSpec, slot: usize) -> Result<Self, WorkerError> {
        let mut command = Command::new(&spec.python);
        command
            .arg(&spec.shim)
            .arg(&spec.scoring_script)
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("MLCOMPUTE_WORKER_SLOT", slot.to_string())
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|source| WorkerError::Spawn {
            python: spec.python.clone(),
            source,
        })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(WorkerError::Spawn {
                python: spec.python.clone(),
                source: std::io::Error::other("child pipes missing"),
            });
        };
        let mut worker = Self {
            child,
            stdin,
            stdout: BufReader::new(stdout),
            next_id: 0,
        };
        let hello = match tokio::time::timeout(
            spec.init_timeout,
            protocol::read_frame::<_, Hello>(&mut worker.stdout),
        )
        .await
        {
            Err(_) => {
                worker.kill().await;
                return Err(WorkerError::InitTimeout(spec.init_timeout));
            }
            Ok(Err(source)) => {
                let status = worker.exit_status().await;
                return Err(WorkerError::DiedAtStart { status, source });
            }
            Ok(Ok(hello)) => hello,
        };
        if !hello.ready {
            worker.kill().await;
            return Err(WorkerError::Init {
                reason: hello.error.unwrap_or_else(|| "unknown error".to_string()),
                detail: hello.detail.unwrap_or_default(),
            });
        }
        debug!(slot, init_ms = hello.init_ms, "worker ready");
        Ok(worker)
    }

    /// Sends one mini-batch and waits for its result, at most `timeout`.
    pub async fn score(
        &mut self,
        items: &[String],
        rows: bool,
        timeout: Duration,
    ) -> Result<Exchange, AttemptError> {
        let id = self.next_id;
        self.next_id += 1;
        let started = Instant::now();
        let exchange = async {
            let frame = protocol::encode(&Request { id, items, rows })?;
            protocol::write_frame(&mut self.stdin, &frame).await?;
            protocol::read_frame::<_, Response>(&mut self.stdout).await
        };
        let response = match tokio::time::timeout(timeout, exchange).await {
            Err(_) => return Err(AttemptError::Timeout(timeout)),
            Ok(Err(source)) => {
                let status = self.exit_status().await;
                return Err(AttemptError::Died { status, source });
            }
            Ok(Ok(response)) => response,
        };
        if response.id != id {
            return Err(AttemptError::WrongId {
                expected: id,
                got: response.id,
            });
        }
        Ok(Exchange {
            response,
            round_trip: started.elapsed(),
        })
    }

    /// Kills the process and reaps it.
    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    async fn exit_status(&mut self) -> String {
        match tokio::time::timeout(Duration::from_millis(500), self.child.wait()).await {
            Ok(Ok(status)) => describe_status(status),
            Ok(Err(err)) => format!("status unknown: {err}"),
            Err(_) => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                "still running after its pipe closed; killed".to_string()
            }
        }
    }
}

fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
}

/// The mini-batches still to run on this instance, shared by its slots.
#[derive(Default)]
pub struct Queue(Mutex<VecDeque<Arc<MiniBatch>>>);

impl Queue {
    pub fn new(batches: impl IntoIterator<Item = Arc<MiniBatch>>) -> Self {
        Self(Mutex::new(batches.into_iter().collect()))
    }

    fn pop(&self) -> Option<Arc<MiniBatch>> {
        match self.0.lock() {
            Ok(mut queue) => queue.pop_front(),
            Err(poisoned) => poisoned.into_inner().pop_front(),
        }
    }
}

/// Timing of the last successful exchange of a mini-batch.
#[derive(Clone, Copy, Debug)]
pub struct AttemptTiming {
    /// From sending the request to decoding the answer.
    pub round_trip: Duration,
    /// Of which the user's `run` took this long (as measured in the worker).
    pub run: Duration,
}

/// The final result of one mini-batch, after retries.
#[derive(Debug)]
pub struct Scored {
    pub id: MiniBatchId,
    pub items: usize,
    pub rows: Vec<String>,
    pub failed: Vec<FailedItem>,
    pub attempts: u32,
    pub timeouts: u32,
    pub crashes: u32,
    pub timing: Option<AttemptTiming>,
}

/// Settings shared by every slot of an instance.
pub struct SlotContext {
    pub spec: WorkerSpec,
    pub policy: RetryPolicy,
    /// Whether rows are kept (`append_row`).
    pub keep_rows: bool,
    pub queue: Queue,
    /// Slots stop taking mini-batches once the failed items known here cross it, without waiting
    /// for the driver's journal round trip (which would let fast mini-batches slip through).
    pub threshold: ErrorThreshold,
    /// Failed items of this instance: journaled by earlier runs plus scored now.
    pub local_failed: AtomicU64,
    /// Failed items other instances reported (refreshed by the driver).
    pub peer_failed: AtomicU64,
}

impl SlotContext {
    fn threshold_crossed(&self) -> bool {
        let failed =
            self.local_failed.load(Ordering::Relaxed) + self.peer_failed.load(Ordering::Relaxed);
        self.threshold.check(failed).is_some()
    }
}

/// What a slot tells the driver.
#[derive(Debug)]
pub enum SlotEvent {
    /// A mini-batch is finished (succeeded, or failed after its retries).
    Scored(Scored),
    /// No worker could be started; the slot has stopped.
    StartFailed(WorkerError),
}

/// Runs one slot until the queue is empty or `abort` turns true; sends each finished mini-batch.
pub async fn run_slot(
    slot: usize,
    ctx: Arc<SlotContext>,
    results: mpsc::UnboundedSender<SlotEvent>,
    mut abort: watch::Receiver<bool>,
) {
    let mut worker: Option<Worker> = None;
    while !*abort.borrow() && !ctx.threshold_crossed() {
        let Some(batch) = ctx.queue.pop() else { break };
        let items: Vec<String> = batch
            .files
            .iter()
            .map(|f| f.absolute.to_string_lossy().into_owned())
            .collect();
        let event = tokio::select! {
            scored = score_with_retries(slot, &ctx, &batch, &items, &mut worker) => match scored {
                Ok(scored) => {
                    ctx.local_failed.fetch_add(scored.failed.len() as u64, Ordering::Relaxed);
                    SlotEvent::Scored(scored)
                }
                Err(err) => SlotEvent::StartFailed(err),
            },
            _ = abort.wait_for(|stop| *stop) => break,
        };
        let stop = matches!(event, SlotEvent::StartFailed(_));
        if results.send(event).is_err() || stop {
            break;
        }
    }
    if let Some(worker) = worker.take() {
        worker.kill().await;
    }
}

async fn score_with_retries(
    slot: usize,
    ctx: &SlotContext,
    batch: &MiniBatch,
    items: &[String],
    worker: &mut Option<Worker>,
) -> Result<Scored, WorkerError> {
    let mut scored = Scored {
        id: batch.id,
        items: items.len(),
        rows: Vec::new(),
        failed: Vec::new(),
        attempts: 0,
        timeouts: 0,
        crashes: 0,
        timing: None,
    };
    while scored.attempts <= ctx.policy.max_retries {
        scored.attempts += 1;
        let live = match worker {
            Some(live) => live,
            None => worker.insert(start_with_retries(slot, ctx).await?),
        };
        match live.score(items, ctx.keep_rows, ctx.policy.timeout).await {
            Ok(Exchange {
                response,
                round_trip,
            }) => {
                scored.timing = Some(AttemptTiming {
                    round_trip,
                    run: Duration::from_secs_f64(response.run_ms.max(0.0) / 1000.0),
                });
                scored.rows = response.rows;
                scored.failed = response
                    .failed
                    .into_iter()
                    .map(|f| FailedItem {
                        item: batch
                            .files
                            .get(f.index)
                            .map(|file| file.relative.clone())
                            .unwrap_or_default(),
                        reason: f.reason,
                        detail: f.detail,
                    })
                    .collect();
                if scored.failed.is_empty() {
                    return Ok(scored);
                }
                debug!(slot, mini_batch = %batch.id, failed = scored.failed.len(), attempt = scored.attempts, "items failed");
            }
            Err(err) => {
                if matches!(err, AttemptError::Timeout(_)) {
                    scored.timeouts += 1;
                } else {
                    scored.crashes += 1;
                }
                warn!(slot, mini_batch = %batch.id, attempt = scored.attempts, category = err.category(), "attempt failed: {err}");
                if let Some(dead) = worker.take() {
                    dead.kill().await;
                }
                let reason = format!(
                    "{err} (attempt {} of {})",
                    scored.attempts,
                    ctx.policy.max_retries + 1
                );
                scored.rows.clear();
                scored.failed = batch
                    .files
                    .iter()
                    .map(|file| FailedItem {
                        item: file.relative.clone(),
                        reason: reason.clone(),
                        detail: String::new(),
                    })
                    .collect();
            }
        }
    }
    Ok(scored)
}

async fn start_with_retries(slot: usize, ctx: &SlotContext) -> Result<Worker, WorkerError> {
    let mut tries = 0;
    loop {
        tries += 1;
        match Worker::start(&ctx.spec, slot).await {
            Ok(worker) => return Ok(worker),
            Err(err) if err.is_retriable() && tries <= ctx.policy.max_retries => {
                warn!(
                    slot,
                    tries,
                    category = err.category(),
                    "worker failed to start, retrying: {err}"
                );
            }
            Err(err) => {
                info!(slot, tries, "giving up starting a worker");
                return Err(err);
            }
        }
    }
}
