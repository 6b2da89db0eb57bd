//! Errors of the TrainingJob controller, named for the operation that failed.

use crate::runtime::{
    apply::ChildError,
    error_category,
    reconcile::{PANIC, Panicked, ReconcileError},
    refusal::Refusal,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating pod {pod}: {source}")]
    CreatePod { pod: String, source: ChildError },
    #[error("deleting pod {pod}: {source}")]
    DeletePod { pod: String, source: kube::Error },
    #[error("creating the rendezvous service: {0}")]
    CreateService(#[source] ChildError),
    #[error("deleting the rendezvous service: {0}")]
    DeleteService(#[source] kube::Error),
    #[error("creating the MPI hostfile and SSH keys: {0}")]
    CreateMpiConfig(#[source] ChildError),
    #[error("generating MPI SSH keys: {0}")]
    GenerateSshKey(String),
    #[error("patching status: {0}")]
    PatchStatus(#[source] kube::Error),
    #[error("the TrainingJob has no namespace")]
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
            Error::CreatePod { pod, source } => Refusal::of_child(&format!("Pod {pod}"), source),
            Error::CreateService(source) => Refusal::of_child("the rendezvous Service", source),
            Error::CreateMpiConfig(source) => {
                Refusal::of_child("the MPI hostfile ConfigMap or SSH key Secret", source)
            }
            _ => None,
        }
    }
}

impl ReconcileError for Error {
    fn category(&self) -> &'static str {
        match self {
            Error::CreatePod { source, .. }
            | Error::CreateService(source)
            | Error::CreateMpiConfig(source) => source.category(),
            Error::DeletePod { source, .. }
            | Error::DeleteService(source)
            | Error::PatchStatus(source) => error_category(source),
            Error::GenerateSshKey(_) => "internal",
            Error::MissingNamespace => "invalid",
            Error::Refused(r) => r.category(),
            Error::Panicked(_) => PANIC,
        }
    }

    fn waits_for_change(&self) -> bool {
        matches!(self, Error::Refused(r) if r.waits_for_change())
    }
}
