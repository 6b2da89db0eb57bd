//! Errors of the OnlineEndpoint controller, named for the operation that failed.

use crate::runtime::{
    apply::ChildError,
    error_category,
    reconcile::{PANIC, Panicked, ReconcileError},
    refusal::Refusal,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating the keys Secret: {0}")]
    CreateKeys(#[source] ChildError),
    #[error("applying the routing ConfigMap: {0}")]
    ApplyRouting(#[source] ChildError),
    #[error("applying the HTTPRoute: {0}")]
    ApplyHttpRoute(#[source] ChildError),
    #[error("deleting the routing ConfigMap of an endpoint whose name is taken: {0}")]
    DeleteRouting(#[source] kube::Error),
    #[error("deleting the HTTPRoute of an endpoint whose name is taken: {0}")]
    DeleteHttpRoute(#[source] kube::Error),
    #[error("patching status: {0}")]
    PatchStatus(#[source] kube::Error),
    #[error("the OnlineEndpoint has no namespace")]
    MissingNamespace,
    /// A child write was refused; the endpoint's status says so.
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Panicked(#[from] Panicked),
}

impl Error {
    /// The refusal in a failed child write, which the endpoint's status should show.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            Error::CreateKeys(e) => Refusal::of_child("the keys Secret", e),
            Error::ApplyRouting(e) => Refusal::of_child("the routing ConfigMap", e),
            Error::ApplyHttpRoute(e) => Refusal::of_child("the HTTPRoute", e),
            _ => None,
        }
    }
}

impl ReconcileError for Error {
    fn category(&self) -> &'static str {
        match self {
            Error::CreateKeys(e) | Error::ApplyRouting(e) | Error::ApplyHttpRoute(e) => {
                e.category()
            }
            Error::DeleteRouting(source)
            | Error::DeleteHttpRoute(source)
            | Error::PatchStatus(source) => error_category(source),
            Error::MissingNamespace => "invalid",
            Error::Refused(r) => r.category(),
            Error::Panicked(_) => PANIC,
        }
    }

    fn waits_for_change(&self) -> bool {
        matches!(self, Error::Refused(r) if r.waits_for_change())
    }
}
