//! Errors of the OnlineDeployment controller, named for the operation that failed.

use crate::operator::error_category;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("applying {what}: {source}")]
    Apply {
        what: &'static str,
        source: kube::Error,
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
}

impl Error {
    /// A bounded label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Apply { source, .. }
            | Error::Delete { source, .. }
            | Error::PatchStatus(source) => error_category(source),
            Error::MissingNamespace => "invalid",
        }
    }
}
