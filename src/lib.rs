//! mlcompute: Azure-ML-style compute on any Kubernetes cluster.
//!
//! Folder map (`docs/architecture.md` draws it):
//! - `api/`: the custom resource types, what users write.
//! - `contract/`: what one process writes and another reads (routing table, driver environment,
//!   progress records, exit codes); depends on `api` only.
//! - `runtime/`: the machinery every controller shares (caches, status writes, child apply,
//!   backoff, Events, metrics); depends on `api` and `contract` only.
//! - `controllers/`: the control plane, one folder per controller (batch's three together).
//! - `dataplane/`: what serves and scores: the router and the batch driver.
//! - `operator/`: the operator process (settings, leader election, health endpoints), which
//!   starts the controllers; `cli/`: the command-line verbs.

pub mod api;
pub mod cli;
pub mod contract;
pub mod controllers;
pub mod dataplane;
pub mod operator;
pub mod runtime;
pub mod telemetry;

#[cfg(test)]
mod architecture_tests;

/// The version stamped into the binary, printed by `mlcompute version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
