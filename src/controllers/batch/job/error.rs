//! Errors of the BatchJob controller, named for the operation that failed.

use crate::runtime::{
    apply::ChildError,
    error_category,
    reconcile::{PANIC, Panicked, ReconcileError},
    refusal::Refusal,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating the driver {what} {name}: {source}")]
    CreateAccount {
        what: &'static str,
        name: String,
        #[source]
        source: ChildError,
    },
    #[error("creating the progress ConfigMap {name}: {source}")]
    CreateProgress {
        name: String,
        #[source]
        source: ChildError,
    },
    #[error("creating Job {name}: {source}")]
    CreateJob {
        name: String,
        #[source]
        source: ChildError,
    },
    #[error("deleting Job {name}")]
    DeleteJob {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("patching status")]
    PatchStatus(#[source] kube::Error),
    #[error("the BatchJob has no namespace")]
    MissingNamespace,
    /// A child write was refused; the job's status says so.
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Panicked(#[from] Panicked),
}

impl Error {
    /// The refusal in a failed child write, which the job's status should show.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            Error::CreateAccount { what, name, source } => {
                Refusal::of_child(&format!("{what} {name}"), source)
            }
            Error::CreateProgress { name, source } => {
                Refusal::of_child(&format!("ConfigMap {name}"), source)
            }
            Error::CreateJob { name, source } => Refusal::of_child(&format!("Job {name}"), source),
            _ => None,
        }
    }
}

impl ReconcileError for Error {
    fn category(&self) -> &'static str {
        match self {
            Error::CreateAccount { source, .. }
            | Error::CreateProgress { source, .. }
            | Error::CreateJob { source, .. } => source.category(),
            Error::DeleteJob { source, .. } | Error::PatchStatus(source) => error_category(source),
            Error::MissingNamespace => "invalid",
            Error::Refused(r) => r.category(),
            Error::Panicked(_) => PANIC,
        }
    }

    fn waits_for_change(&self) -> bool {
        matches!(self, Error::Refused(r) if r.waits_for_change())
    }
}
