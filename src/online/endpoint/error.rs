//! Errors of the OnlineEndpoint controller, named for the operation that failed.

use crate::operator::error_category;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating the keys Secret: {0}")]
    CreateKeys(#[source] kube::Error),
    #[error("applying the routing ConfigMap: {0}")]
    ApplyRouting(#[source] kube::Error),
    #[error("applying the HTTPRoute: {0}")]
    ApplyHttpRoute(#[source] kube::Error),
    #[error("deleting the routing ConfigMap of an endpoint whose name is taken: {0}")]
    DeleteRouting(#[source] kube::Error),
    #[error("deleting the HTTPRoute of an endpoint whose name is taken: {0}")]
    DeleteHttpRoute(#[source] kube::Error),
    #[error("patching status: {0}")]
    PatchStatus(#[source] kube::Error),
    #[error("the OnlineEndpoint has no namespace")]
    MissingNamespace,
}

impl Error {
    /// A bounded label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::CreateKeys(source)
            | Error::ApplyRouting(source)
            | Error::ApplyHttpRoute(source)
            | Error::DeleteRouting(source)
            | Error::DeleteHttpRoute(source)
            | Error::PatchStatus(source) => error_category(source),
            Error::MissingNamespace => "invalid",
        }
    }
}
