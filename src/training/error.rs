//! Errors of the TrainingJob controller, named for the operation that failed.

use crate::operator::error_category;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating pod {pod}: {source}")]
    CreatePod { pod: String, source: kube::Error },
    #[error("deleting pod {pod}: {source}")]
    DeletePod { pod: String, source: kube::Error },
    #[error("creating the rendezvous service: {0}")]
    CreateService(#[source] kube::Error),
    #[error("deleting the rendezvous service: {0}")]
    DeleteService(#[source] kube::Error),
    #[error("creating the MPI hostfile and SSH keys: {0}")]
    CreateMpiConfig(#[source] kube::Error),
    #[error("generating MPI SSH keys: {0}")]
    GenerateSshKey(String),
    #[error("patching status: {0}")]
    PatchStatus(#[source] kube::Error),
    #[error("the TrainingJob has no namespace")]
    MissingNamespace,
}

impl Error {
    /// A bounded label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::CreatePod { source, .. }
            | Error::DeletePod { source, .. }
            | Error::CreateService(source)
            | Error::DeleteService(source)
            | Error::CreateMpiConfig(source)
            | Error::PatchStatus(source) => error_category(source),
            Error::GenerateSshKey(_) => "internal",
            Error::MissingNamespace => "invalid",
        }
    }

    /// Whether the API server asked us to slow down (HTTP 429).
    pub fn is_throttled(&self) -> bool {
        self.category() == "throttled"
    }
}
