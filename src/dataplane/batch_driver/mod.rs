//! The batch data plane: `mlcompute batch-driver` runs an Azure-ML-style scoring script over a folder
//! of files, one Indexed-Job instance per shard.
//!
//! - [`plan`] — deterministic listing, mini-batches with stable IDs, round-robin sharding (pure).
//! - [`shim`] and `python/mlcompute_batch_worker.py`: the Python side (`init()` once, `run(mini_batch)`).
//! - [`protocol`] — length-prefixed JSON frames between the two.
//! - [`worker`] — worker processes, slots, per-mini-batch timeout and retries.
//! - [`journal`] — the fsync'd per-instance record of finished mini-batches (resume + part files).
//! - [`output`] — merged row file, error file, summary; the output folder layout.
//! - [`progress`] — counters and the [`progress::ProgressSink`]s they are reported to.
//! - [`threshold`] — `errorThreshold`.
//! - [`driver`] — one instance from start to end.
//! - [`pod_progress`] — the snapshot of one instance's progress the relay reads.
//! - [`progress_relay`] — the sidecar that copies it into the job's progress ConfigMap.
//!
//! What the BatchJob controller sets and reads — the driver's environment, its exit codes and the
//! progress records — is in `crate::contract` (`batch_driver`, `exit_codes`, `progress`).

pub mod driver;
pub mod journal;
pub mod output;
pub mod plan;
pub mod pod_progress;
pub mod progress;
pub mod progress_relay;
pub mod protocol;
pub mod shim;
pub mod threshold;
pub mod worker;
