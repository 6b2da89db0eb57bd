//! Errors of the OnlineDeployment controller, named for the operation that failed.

use crate::runtime::{
    apply::ChildError,
    error_category,
    reconcile::{PANIC, Panicked, ReconcileError},
    refusal::Refusal,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("applying {what}: {source}")]
    Apply {
        what: &'static str,
        source: ChildError,
    },
    #[error("deleting {what}: {source}")]
    Delete {
        what: &'static str,
        source: kube::Error,
    },
    #[error("patching status: {0}")]
    PatchStatus(#[source] kube::Error),
    #[error("the OnlineDeployment has no namespace")]
    MissingNamespace,
    /// A child write was refused; the deployment's status says so.
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Panicked(#[from] Panicked),
}

impl Error {
    /// The refusal in a failed child write, which the deployment's status should show.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            Error::Apply { what, source } => Refusal::of_child(what, source),
            _ => None,
        }
    }
}

impl ReconcileError for Error {
    fn category(&self) -> &'static str {
        match self {
            Error::Apply { source, .. } => source.category(),
            Error::Delete { source, .. } | Error::PatchStatus(source) => error_category(source),
            Error::MissingNamespace => "invalid",
            Error::Refused(r) => r.category(),
            Error::Panicked(_) => PANIC,
        }
    }

    fn waits_for_change(&self) -> bool {
        matches!(self, Error::Refused(r) if r.waits_for_change())
    }
}
