//! `POST /api/v1/batch/{endpoint}/invoke`: the authenticated HTTP invoke of a batch endpoint. It
//! creates a BatchJob, as `mlcompute batch invoke` does.
//!
//! Identity and permission are Kubernetes': the caller sends `Authorization: Bearer <token>` (a
//! ServiceAccount token, or any token the API server accepts); the router asks the API server who
//! that is (TokenReview) and whether they may create BatchJobs in the endpoint's namespace
//! (SubjectAccessReview), then creates the job under its own identity, annotated with the caller.
//! This stands in for Azure ML's Entra tokens: whoever may `kubectl create batchjob` may invoke, and
//! nobody else, with no extra secret to hand out or rotate.
//!
//! The endpoint name is the invoke URI: of BatchEndpoints of one name in several served
//! namespaces, the one holding the name is invoked — the oldest, then namespace order, as the
//! operator decides (the others show no `invokeUri` and `Ready` False `NameTaken`).
//!
//! Answers: 201 with the job's name; 401 for a missing or unaccepted token; 403 when the caller may
//! not invoke, with the same answer when the endpoint does not exist (as the API server itself does);
//! 400 for a body that does not parse; 409 when the endpoint cannot run the job (no default
//! deployment, no output path); 422 when the API server refuses the job; 429 when too many invokes
//! are in flight; 503 when the API server cannot be asked.
//!
//! Router RBAC this needs: `tokenreviews` and `subjectaccessreviews` create (the built-in
//! `system:auth-delegator` role), `batchendpoints` and `batchdeployments` get and list,
//! `batchjobs` create.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec},
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, PostParams},
};
use serde::Serialize;
use tokio::sync::Semaphore;

use super::{
    metrics::Metrics,
    reply::{self, ErrorBody},
};
use crate::{
    api::batch_endpoint::BatchEndpoint,
    contract::batch_invoke::{self as submit, BodyError, InvokeRequest, SubmitError},
    runtime::names::claim_order,
};

/// Invocations in flight at once; each costs the API server about five requests.
const MAX_IN_FLIGHT: usize = 16;
/// The largest invoke body (a job spec, not data).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub username: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: Option<std::collections::BTreeMap<String, Vec<String>>>,
}

/// How an invocation ended; each has one HTTP answer and one metrics label.
#[derive(Debug, thiserror::Error)]
pub enum InvokeFailure {
    #[error("unauthorized")]
    Unauthenticated,
    #[error("forbidden")]
    Forbidden { user: String, endpoint: String },
    #[error("verifying the caller with the Kubernetes API")]
    Review(#[source] kube::Error),
    #[error("looking up the batch endpoint")]
    Lookup(#[source] kube::Error),
    #[error(transparent)]
    Body(BodyError),
    #[error(transparent)]
    Submit(SubmitError),
    #[error("too many batch invocations in flight")]
    Busy,
}

impl InvokeFailure {
    /// A bounded label for metrics and the `reason` of the answer.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthorized",
            Self::Forbidden { .. } => "forbidden",
            Self::Review(_) | Self::Lookup(_) => "unavailable",
            Self::Body(_) => "bad_request",
            Self::Submit(e) if e.is_caller_error() => e.category(),
            Self::Submit(_) => "unavailable",
            Self::Busy => "busy",
        }
    }

    /// The answer's status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::Review(_) | Self::Lookup(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Body(_) => StatusCode::BAD_REQUEST,
            Self::Submit(SubmitError::Refused(_)) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Submit(e) if e.is_caller_error() => StatusCode::CONFLICT,
            Self::Submit(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Busy => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The answer (pure): a JSON error that says what happened and what to do.
    pub fn response(&self, endpoint: &str) -> Response<Full<Bytes>> {
        let message = match self {
            Self::Unauthenticated => {
                "unauthorized: send Authorization: Bearer <Kubernetes token> of a user that may create BatchJobs".to_owned()
            }
            Self::Forbidden { user, endpoint } => format!(
                "forbidden: {user:?} may not create BatchJobs for batch endpoint {endpoint:?}, or it does not exist"
            ),
            Self::Review(e) | Self::Lookup(e) => {
                format!("service unavailable: the Kubernetes API could not be asked ({e})")
            }
            Self::Body(e) => e.to_string(),
            Self::Submit(SubmitError::Create(e)) => {
                format!("service unavailable: creating the BatchJob failed ({e})")
            }
            Self::Submit(e) => e.to_string(),
            Self::Busy => format!(
                "too many requests: {MAX_IN_FLIGHT} batch invocations are in flight; retry shortly"
            ),
        };
        // The endpoint is named only to callers that passed authorization.
        let named = !matches!(self, Self::Unauthenticated | Self::Forbidden { .. });
        let mut response = reply::error(
            self.status(),
            &ErrorBody {
                message: &message,
                endpoint: named.then_some(endpoint),
                deployment: None,
                reason: self.category(),
            },
        );
        if matches!(self, Self::Unauthenticated) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The 201 body.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Created<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub endpoint: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment_name: Option<&'a str>,
    pub invoked_by: &'a str,
    /// How to follow it.
    pub show: String,
}

/// What the router needs to serve batch invokes: a client and the namespaces it serves (empty:
/// all).
#[derive(Clone)]
pub struct ClusterAccess {
    pub client: Client,
    pub namespaces: Vec<String>,
}

impl std::fmt::Debug for ClusterAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterAccess")
            .field("namespaces", &self.namespaces)
            .finish_non_exhaustive()
    }
}

/// Creates BatchJobs for authenticated, authorized callers.
pub struct BatchInvoker {
    client: Client,
    /// Namespaces the router serves (sorted); empty: all.
    namespaces: Vec<String>,
    in_flight: Semaphore,
    metrics: Metrics,
}

impl std::fmt::Debug for BatchInvoker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchInvoker")
            .field("namespaces", &self.namespaces)
            .finish_non_exhaustive()
    }
}

impl BatchInvoker {
    /// An invoker over the namespaces of `access`.
    pub fn new(access: ClusterAccess, metrics: Metrics) -> Arc<Self> {
        let ClusterAccess {
            client,
            mut namespaces,
        } = access;
        namespaces.sort();
        namespaces.dedup();
        Arc::new(Self {
            client,
            namespaces,
            in_flight: Semaphore::new(MAX_IN_FLIGHT),
            metrics,
        })
    }

    /// Answers one invoke of `endpoint` with the request's headers and whole body.
    #[tracing::instrument(level = "info", skip_all, fields(endpoint = %endpoint))]
    pub async fn handle(
        &self,
        endpoint: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Response<Full<Bytes>> {
        let outcome = match self.in_flight.try_acquire() {
            Ok(_permit) => self.invoke(endpoint, headers, &body).await,
            Err(_) => Err(InvokeFailure::Busy),
        };
        match outcome {
            Ok(response) => {
                self.metrics.batch_invoke("created");
                response
            }
            Err(failure) => {
                self.metrics.batch_invoke(failure.category());
                match &failure {
                    InvokeFailure::Review(_) | InvokeFailure::Lookup(_) => {
                        tracing::warn!(error = %failure, "batch invoke failed")
                    }
                    InvokeFailure::Submit(e) if !e.is_caller_error() => {
                        tracing::warn!(error = %e, "batch invoke failed")
                    }
                    _ => tracing::debug!(reason = failure.category(), "batch invoke refused"),
                }
                failure.response(endpoint)
            }
        }
    }

    async fn invoke(
        &self,
        endpoint: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Response<Full<Bytes>>, InvokeFailure> {
        let token = bearer(headers).ok_or(InvokeFailure::Unauthenticated)?;
        let caller = self.authenticate(token).await?;
        let request = InvokeRequest::from_body(body).map_err(InvokeFailure::Body)?;
        let forbidden = || InvokeFailure::Forbidden {
            user: caller.username.clone(),
            endpoint: endpoint.into(),
        };
        let found = self.find(endpoint).await?.ok_or_else(forbidden)?;
        let namespace = found.namespace().unwrap_or_default();
        if !self.allowed(&caller, &namespace).await? {
            return Err(forbidden());
        }
        let job = submit::submit_to(&self.client, &found, request, Some(&caller.username))
            .await
            .map_err(InvokeFailure::Submit)?;
        let name = job.name_any();
        tracing::info!(namespace = %namespace, job = %name, user = %caller.username, "batch job created");
        let created = Created {
            name: &name,
            namespace: &namespace,
            endpoint,
            deployment_name: job.spec.deployment_name.as_deref(),
            invoked_by: &caller.username,
            show: format!("mlcompute batch show {name} -n {namespace}"),
        };
        let body = serde_json::to_vec(&created).unwrap_or_default();
        Ok(reply::json(StatusCode::CREATED, Bytes::from(body)))
    }

    /// Who holds `token`, per the API server.
    async fn authenticate(&self, token: &str) -> Result<Caller, InvokeFailure> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.into(),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(InvokeFailure::Review)?;
        caller(&reviewed).ok_or(InvokeFailure::Unauthenticated)
    }

    /// Batch endpoint `name`: of those in the namespaces served, the one holding the name (see
    /// [`holding`]: the oldest, as the operator decides; the others say `NameTaken`).
    async fn find(&self, name: &str) -> Result<Option<BatchEndpoint>, InvokeFailure> {
        if self.namespaces.is_empty() {
            let all: Api<BatchEndpoint> = Api::all(self.client.clone());
            let found = all
                .list(&ListParams::default().fields(&format!("metadata.name={name}")))
                .await
                .map_err(InvokeFailure::Lookup)?;
            return Ok(holding(found.items));
        }
        let mut found = Vec::new();
        for ns in &self.namespaces {
            let api: Api<BatchEndpoint> = Api::namespaced(self.client.clone(), ns);
            if let Some(e) = api.get_opt(name).await.map_err(InvokeFailure::Lookup)? {
                found.push(e);
            }
        }
        Ok(holding(found))
    }

    /// Whether `caller` may create BatchJobs in `namespace`.
    async fn allowed(&self, caller: &Caller, namespace: &str) -> Result<bool, InvokeFailure> {
        let review = access_review(caller, namespace);
        let reviewed = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(InvokeFailure::Review)?;
        Ok(reviewed
            .status
            .is_some_and(|s| s.allowed && s.denied != Some(true)))
    }
}

/// Of the batch endpoints of one name in different namespaces, the one holding the name (pure):
/// the operator's rule, `operator::names::claim_order` (the oldest `creationTimestamp`, then
/// namespace) among the live ones; one being deleted only when there is no other.
pub fn holding(found: Vec<BatchEndpoint>) -> Option<BatchEndpoint> {
    found.into_iter().min_by(|a, b| {
        let (a, b) = (a.meta(), b.meta());
        (a.deletion_timestamp.is_some())
            .cmp(&b.deletion_timestamp.is_some())
            .then_with(|| claim_order(a, b))
    })
}

/// The caller of an answered TokenReview, when the token was accepted (pure).
pub fn caller(review: &TokenReview) -> Option<Caller> {
    let status = review.status.as_ref()?;
    if status.authenticated != Some(true) {
        return None;
    }
    let user = status.user.as_ref()?;
    let username = user.username.clone().filter(|u| !u.is_empty())?;
    Some(Caller {
        username,
        uid: user.uid.clone(),
        groups: user.groups.clone().unwrap_or_default(),
        extra: user.extra.clone(),
    })
}

/// "May `caller` create batchjobs.mlcompute.io in `namespace`?" (pure).
pub fn access_review(caller: &Caller, namespace: &str) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(caller.username.clone()),
            uid: caller.uid.clone(),
            groups: Some(caller.groups.clone()),
            extra: caller.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some("mlcompute.io".into()),
                resource: Some("batchjobs".into()),
                verb: Some("create".into()),
                namespace: Some(namespace.into()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    }
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case("bearer ")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};

    use super::*;

    #[test]
    fn only_an_authenticated_review_with_a_user_is_a_caller() {
        let review = |authenticated, username: Option<&str>| TokenReview {
            status: Some(TokenReviewStatus {
                authenticated: Some(authenticated),
                user: Some(UserInfo {
                    username: username.map(String::from),
                    groups: Some(vec!["system:serviceaccounts".into()]),
                    ..UserInfo::default()
                }),
                ..TokenReviewStatus::default()
            }),
            ..TokenReview::default()
        };
        let c = caller(&review(true, Some("system:serviceaccount:ns:caller"))).unwrap();
        assert_eq!(c.groups, ["system:serviceaccounts"]);
        assert_eq!(caller(&review(false, Some("x"))), None);
        assert_eq!(caller(&review(true, Some(""))), None);
        assert_eq!(caller(&TokenReview::default()), None);
    }

    #[test]
    fn the_access_review_asks_for_create_batchjobs_in_the_namespace() {
        let c = Caller {
            username: "alice".into(),
            uid: Some("u1".into()),
            groups: vec!["team-a".into()],
            extra: None,
        };
        let r = access_review(&c, "team-a");
        let attrs = r.spec.resource_attributes.unwrap();
        assert_eq!(
            (
                attrs.group.as_deref(),
                attrs.resource.as_deref(),
                attrs.verb.as_deref()
            ),
            (Some("mlcompute.io"), Some("batchjobs"), Some("create"))
        );
        assert_eq!(attrs.namespace.as_deref(), Some("team-a"));
        assert_eq!(r.spec.user.as_deref(), Some("alice"));
        assert_eq!(r.spec.groups.unwrap(), ["team-a"]);
    }

    #[test]
    fn answers_say_what_happened_without_revealing_endpoints_to_strangers() {
        let body = |f: &InvokeFailure| {
            let r = f.response("mnist");
            let status = r.status();
            let auth = r.headers().get(header::WWW_AUTHENTICATE).cloned();
            let bytes =
                futures::executor::block_on(http_body_util::BodyExt::collect(r.into_body()))
                    .unwrap()
                    .to_bytes();
            (status, String::from_utf8(bytes.to_vec()).unwrap(), auth)
        };
        let (status, text, auth) = body(&InvokeFailure::Unauthenticated);
        assert_eq!(status, 401);
        assert!(auth.is_some() && !text.contains("mnist"), "{text}");
        let (status, text, _) = body(&InvokeFailure::Forbidden {
            user: "bob".into(),
            endpoint: "mnist".into(),
        });
        assert_eq!(status, 403);
        assert!(
            text.contains("or it does not exist") && !text.contains("\"endpoint\""),
            "{text}"
        );
        let (status, text, _) = body(&InvokeFailure::Submit(SubmitError::NoDefaultDeployment {
            namespace: "ns".into(),
            endpoint: "mnist".into(),
        }));
        assert_eq!(status, 409);
        assert!(text.contains("no_default_deployment") && text.contains("defaults.deploymentName"));
        let (status, _, _) = body(&InvokeFailure::Submit(SubmitError::Refused("x".into())));
        assert_eq!(status, 422);
        let (status, text, _) = body(&InvokeFailure::Body(BodyError(
            "missing field `input`".into(),
        )));
        assert_eq!(status, 400);
        assert!(text.contains("missing field"), "{text}");
        assert_eq!(InvokeFailure::Busy.status(), 429);
    }

    #[test]
    fn the_oldest_endpoint_of_a_name_is_invoked_not_the_first_namespace() {
        let at = |ns: &str, created: Option<&str>, deleting: bool| -> BatchEndpoint {
            serde_json::from_value(serde_json::json!({
                "metadata": {
                    "name": "scorer", "namespace": ns, "creationTimestamp": created,
                    "deletionTimestamp": deleting.then_some("2025-03-02T00:00:00Z"),
                },
                "spec": {}
            }))
            .unwrap()
        };
        let chosen = |found: Vec<BatchEndpoint>| holding(found).and_then(|e| e.namespace());
        let (early, late) = (Some("2025-03-01T10:00:00Z"), Some("2025-03-01T10:00:05Z"));
        assert_eq!(chosen(vec![]), None);
        assert_eq!(
            chosen(vec![at("team-a", late, false)]).as_deref(),
            Some("team-a")
        );
        // The older one, although its namespace sorts last (and in either order found).
        let a_young = at("team-a", late, false);
        let z_old = at("team-z", early, false);
        assert_eq!(
            chosen(vec![a_young.clone(), z_old.clone()]).as_deref(),
            Some("team-z")
        );
        assert_eq!(
            chosen(vec![z_old, a_young.clone()]).as_deref(),
            Some("team-z")
        );
        // Same second: namespace order.
        assert_eq!(
            chosen(vec![at("team-b", early, false), at("team-a", early, false)]).as_deref(),
            Some("team-a")
        );
        // Without a timestamp: the newest.
        assert_eq!(
            chosen(vec![at("team-a", None, false), at("team-b", late, false)]).as_deref(),
            Some("team-b")
        );
        // An older one being deleted holds nothing; alone, it is still found.
        assert_eq!(
            chosen(vec![at("team-z", early, true), a_young]).as_deref(),
            Some("team-a")
        );
        assert_eq!(
            chosen(vec![at("team-z", early, true)]).as_deref(),
            Some("team-z")
        );
    }
}
