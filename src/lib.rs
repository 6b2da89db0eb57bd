//! mlcompute: Azure-ML-style compute on any Kubernetes cluster.
//!
//! Folder map: `api/` holds the custom resource types, `cli/` the command-line verbs,
//! and each controller lives in a module of its own.

pub mod api;
pub mod batch;
pub mod batch_deployment;
pub mod batch_endpoint;
pub mod batch_job;
pub mod cli;
pub mod environment;
pub mod online;
pub mod operator;
pub mod router;
pub mod telemetry;
pub mod training;

/// The version stamped into the binary, printed by `mlcompute version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
