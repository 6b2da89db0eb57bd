//! Errors of the BatchJob controller, named for the operation that failed.

use crate::operator::error_category;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating the driver {what} {name}")]
    CreateAccount {
        what: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("creating the progress ConfigMap {name}")]
    CreateProgress {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("creating Job {name}")]
    CreateJob {
        name: String,
        #[source]
        source: kube::Error,
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
}

impl Error {
    /// A bounded label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Error::CreateAccount { source, .. }
            | Error::CreateProgress { source, .. }
            | Error::CreateJob { source, .. }
            | Error::DeleteJob { source, .. }
            | Error::PatchStatus(source) => error_category(source),
            Error::MissingNamespace => "invalid",
        }
    }
}
