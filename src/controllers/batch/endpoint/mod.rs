//! The BatchEndpoint controller: resolves the endpoint's default deployment and reports whether jobs
//! submitted without a deployment can run, plus the REST invoke URI. No children.
//!
//! Stages: check that no other watched namespace holds the endpoint's name (the name is the invoke
//! URI; `operator::names::holder`: the oldest endpoint of a name holds it) → look the default
//! BatchDeployment up in the cache → [`status`] (pure) → patch status when it changed, with an
//! Event when `Ready` flips (a missing default deployment or a taken name is a Warning). An
//! endpoint whose name is taken looks again every `names::RECHECK`.

use std::sync::Arc;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Client, ResourceExt,
    runtime::{
        Controller,
        controller::Action,
        reflector::{ObjectRef, Store},
    },
};
use tracing::{info, warn};

use crate::{
    api::{
        batch_deployment::BatchDeployment,
        batch_endpoint::{BatchEndpoint, BatchEndpointStatus},
        common::condition_types::{READY, RESOLVED},
        online_endpoint::ProvisioningState,
    },
    runtime::{
        backoff::Backoffs,
        conditions,
        drive::drive,
        events::Events,
        handles::Runtime,
        metrics::Metrics,
        names::{self, NAME_TAKEN, Names, NotListed, taken_message},
        synced::Synced,
    },
};

const CONTROLLER: &str = "batchendpoint";

/// Its only write is its status.
pub use crate::runtime::reconcile::StatusError as Error;

/// The path of the REST invoke API of endpoint `name`, under the router's base URL.
pub fn invoke_uri(router_url: &str, name: &str) -> String {
    format!(
        "{}{}",
        router_url.trim_end_matches('/'),
        crate::contract::router_http::invoke_path(name)
    )
}

/// Whether jobs without a deployment can run, and why not (pure), by the kstatus conventions:
/// without a default (jobs must name a deployment) the endpoint is done, as Azure ML provisions
/// it; a default deployment that does not exist yet, or is still resolving, is waited for
/// (GitOps applies the objects of one sync in any order); one of another endpoint cannot become
/// this endpoint's without a change (stalled).
pub fn default_deployment_state(
    endpoint: &BatchEndpoint,
    default: Option<&BatchDeployment>,
) -> conditions::Progress {
    use conditions::Progress;
    let Some(name) = endpoint.spec.defaults.deployment_name.as_deref() else {
        return Progress::done(
            "NoDefaultDeployment",
            "defaults.deploymentName is not set: jobs must name a deployment",
        );
    };
    let Some(d) = default else {
        return Progress::working(
            "DefaultDeploymentNotFound",
            format!("default deployment {name:?} does not exist in this namespace"),
        );
    };
    if d.spec.endpoint_name != endpoint.name_any() {
        return Progress::stalled(
            "DefaultDeploymentOfAnotherEndpoint",
            format!(
                "default deployment {name:?} belongs to endpoint {:?}",
                d.spec.endpoint_name
            ),
        );
    }
    let resolved = d.status.as_ref().and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == RESOLVED)
            .map(|c| (c.status == "True", c.message.clone()))
    });
    match resolved {
        Some((true, _)) => Progress::done(
            "DefaultDeploymentReady",
            format!("jobs without a deployment run on {name:?}"),
        ),
        Some((false, why)) => Progress::working(
            "DefaultDeploymentNotReady",
            format!("default deployment {name:?} is not ready: {why}"),
        ),
        None => Progress::working(
            "DefaultDeploymentNotReady",
            format!("default deployment {name:?} has not been checked yet"),
        ),
    }
}

/// The `Ready` message of a batch endpoint whose name `holder_namespace` holds.
pub fn name_taken_message(name: &str, holder_namespace: &str) -> String {
    taken_message("batch endpoint", "invoke URIs", name, holder_namespace)
}

/// The endpoint's status (pure). `name_taken`: the namespace holding the endpoint's name, when
/// another one does; then the invoke URI would reach that namespace's endpoint, so there is none,
/// `Ready` is False with reason `NameTaken` and the provisioning state Failed.
pub fn status(
    endpoint: &BatchEndpoint,
    default: Option<&BatchDeployment>,
    name_taken: Option<&str>,
    router_url: &str,
    now: &Time,
) -> BatchEndpointStatus {
    let mut s = endpoint.status.clone().unwrap_or_default();
    let generation = endpoint.metadata.generation;
    let name = endpoint.name_any();
    let progress = match name_taken {
        // Another namespace holds the name until it lets go: a change is needed.
        Some(holder) => {
            conditions::Progress::stalled(NAME_TAKEN, name_taken_message(&name, holder))
        }
        None => default_deployment_state(endpoint, default),
    };
    conditions::progress(&mut s.conditions, &progress, generation, now);
    s.observed_generation = generation;
    s.provisioning_state = Some(match name_taken {
        Some(_) => ProvisioningState::Failed,
        None => ProvisioningState::Succeeded,
    });
    s.invoke_uri = name_taken.is_none().then(|| invoke_uri(router_url, &name));
    s
}

/// BatchEndpoint-controller settings (from the operator's settings).
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Base URL of the built-in router, for invoke URIs.
    pub router_url: String,
    /// Every controller instance's endpoints, for the one-endpoint-per-name rule.
    pub names: Names<BatchEndpoint>,
}

/// Caches and shared handles.
pub struct Ctx {
    pub client: Client,
    pub deployments: Store<BatchDeployment>,
    pub metrics: Metrics,
    pub events: Events,
    pub backoffs: Backoffs,
    /// Whether every cache above holds its first list.
    pub synced: Synced,
    pub options: Options,
}

/// Reconciles one BatchEndpoint.
#[tracing::instrument(skip_all, fields(namespace = e.namespace().as_deref().unwrap_or(""), name = %e.name_any()))]
pub async fn reconcile(e: Arc<BatchEndpoint>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let _timer = crate::runtime::reconcile::started(&ctx.metrics, CONTROLLER);
    // Decide only on complete caches: after a restart an empty cache would report what the
    // object references as missing, with Warning Events, for nothing.
    if !ctx.synced.wait().await {
        warn!("caches not synced yet; retrying");
        return Ok(Action::requeue(std::time::Duration::from_secs(1)));
    }
    // The name is the invoke URI, held by one endpoint across the watched namespaces.
    let name_taken = match ctx.options.names.holder_of(&e) {
        Ok(holder) => holder,
        Err(NotListed) => {
            warn!("other namespaces' batch endpoints not listed yet; retrying");
            return Ok(Action::requeue(names::LIST_RETRY));
        }
    };
    // The holder may be deleted by another controller instance: no event reaches this one.
    let next = match &name_taken {
        Some(holder) => {
            tracing::debug!(holder = %holder, "batch endpoint name is held by another namespace");
            Action::requeue(names::RECHECK)
        }
        None => Action::await_change(),
    };
    let default = e.spec.defaults.deployment_name.as_deref().and_then(|d| {
        ctx.deployments
            .get(&ObjectRef::new(d).within(&e.namespace().unwrap_or_default()))
    });
    let new = status(
        &e,
        default.as_deref(),
        name_taken.as_deref(),
        &ctx.options.router_url,
        &Time(Timestamp::now()),
    );
    if e.status.as_ref() == Some(&new) {
        return Ok(next);
    }
    let before = e.status.as_ref().and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == READY)
            .map(|c| (c.status.clone(), c.reason.clone()))
    });
    crate::runtime::status::patch_status(&ctx.client, &*e, &new)
        .await
        .map_err(Error::PatchStatus)?;
    if let Some(c) = new.conditions.iter().find(|c| c.type_ == READY)
        && before.as_ref() != Some(&(c.status.clone(), c.reason.clone()))
    {
        ctx.events
            .publish(&*e, c.status != "True", &c.reason, &c.message);
    }
    Ok(next)
}

crate::runtime::drive::context!(Ctx, CONTROLLER);

/// Asks for the controller's caches now and returns the loop that runs it until `shutdown`.
pub fn controller(
    rt: Runtime,
    options: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let ns = rt.namespace.as_deref();
    let deployments = rt.caches.namespaced::<BatchDeployment>(ns, None);
    // Registered so that the other instances see this cache (`names`) once it is listed.
    let endpoints = rt.caches.namespaced::<BatchEndpoint>(ns, None);
    options.names.register_cache(&endpoints);
    let ctx = Arc::new(Ctx {
        client: rt.client.clone(),
        deployments: deployments.store(),
        metrics: rt.metrics.clone(),
        events: rt.events.clone(),
        backoffs: Backoffs::default(),
        synced: rt.synced.clone(),
        options,
    });
    let of_deployment = endpoints.store();
    let controller = Controller::for_stream(endpoints.changes(), endpoints.store())
        // A deployment wakes its own endpoint and any endpoint naming it as default.
        .watches_stream(deployments.changes(), move |d: BatchDeployment| {
            let ns = d.namespace();
            let name = d.name_any();
            of_deployment
                .state()
                .iter()
                .filter(|e| {
                    e.namespace() == ns
                        && (e.name_any() == d.spec.endpoint_name
                            || e.spec.defaults.deployment_name.as_deref() == Some(&name))
                })
                .map(|e| ObjectRef::from_obj(&**e))
                .collect::<Vec<_>>()
        });
    async move {
        info!(
            namespace = rt.namespace.as_deref().unwrap_or("*"),
            "starting BatchEndpoint controller"
        );
        drive(controller, ctx, rt.concurrency, shutdown, reconcile).await;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn endpoint(default: Option<&str>) -> BatchEndpoint {
        serde_json::from_value(json!({
            "apiVersion": "mlcompute.io/v1alpha1", "kind": "BatchEndpoint",
            "metadata": { "name": "scorer", "namespace": "ns", "generation": 1 },
            "spec": { "defaults": { "deploymentName": default } }
        }))
        .unwrap()
    }

    fn deployment(endpoint: &str, resolved: Option<bool>) -> BatchDeployment {
        let mut d: BatchDeployment = serde_json::from_value(json!({
            "apiVersion": "mlcompute.io/v1alpha1", "kind": "BatchDeployment",
            "metadata": { "name": "blue", "namespace": "ns" },
            "spec": { "endpointName": endpoint, "model": "pvc://m/x", "image": "python:3.12",
                      "codeConfiguration": { "code": "configmap://c", "scoringScript": "s.py" } }
        }))
        .unwrap();
        if let Some(ok) = resolved {
            let mut s = crate::api::batch_deployment::BatchDeploymentStatus::default();
            let t = Time(Timestamp::from_second(1).unwrap());
            conditions::set(&mut s.conditions, RESOLVED, ok, "X", "why", None, &t);
            d.status = Some(s);
        }
        d
    }

    #[test]
    fn default_deployment_reasons() {
        use conditions::Progress::*;
        // (which of the three, reason)
        let state = |e: &BatchEndpoint, d: Option<&BatchDeployment>| {
            let p = default_deployment_state(e, d);
            let kind = match &p {
                Working { .. } => "working",
                Stalled { .. } => "stalled",
                Done { .. } => "done",
            };
            (kind, p.reason().to_string())
        };
        let is = |kind: &'static str, reason: &str| (kind, reason.to_string());
        // No default: jobs must name a deployment; the endpoint itself is done.
        assert_eq!(
            state(&endpoint(None), None),
            is("done", "NoDefaultDeployment")
        );
        // A default that does not exist yet is waited for (GitOps applies in any order).
        assert_eq!(
            state(&endpoint(Some("blue")), None),
            is("working", "DefaultDeploymentNotFound")
        );
        let other = deployment("other", Some(true));
        assert_eq!(
            state(&endpoint(Some("blue")), Some(&other)),
            is("stalled", "DefaultDeploymentOfAnotherEndpoint")
        );
        let pending = deployment("scorer", Some(false));
        assert_eq!(
            state(&endpoint(Some("blue")), Some(&pending)),
            is("working", "DefaultDeploymentNotReady")
        );
        let ok = deployment("scorer", Some(true));
        assert_eq!(
            state(&endpoint(Some("blue")), Some(&ok)),
            is("done", "DefaultDeploymentReady")
        );
    }

    #[test]
    fn status_carries_the_invoke_uri() {
        let t = Time(Timestamp::from_second(1).unwrap());
        let s = status(&endpoint(None), None, None, "http://router:8080/", &t);
        assert_eq!(
            s.invoke_uri.as_deref(),
            Some("http://router:8080/api/v1/batch/scorer/invoke")
        );
        // Without a default, jobs must name a deployment: the endpoint is done all the same.
        assert!(conditions::is_true(&s.conditions, READY));
        assert_eq!(s.observed_generation, Some(1));
        let missing = status(&endpoint(Some("blue")), None, None, "http://r", &t);
        assert!(conditions::is_true(&missing.conditions, "Reconciling"));
        assert!(!conditions::is_true(&missing.conditions, READY));
    }

    #[test]
    fn a_taken_name_has_no_invoke_uri_and_says_who_holds_it() {
        let t = Time(Timestamp::from_second(1).unwrap());
        let url = "http://router:8080";
        let ok = deployment("scorer", Some(true));
        let e = endpoint(Some("blue"));
        let served = status(&e, Some(&ok), None, url, &t);
        assert!(conditions::is_true(&served.conditions, READY));
        assert_eq!(
            served.provisioning_state,
            Some(ProvisioningState::Succeeded)
        );

        // Taken, even with a ready default deployment.
        let mut held = e.clone();
        held.status = Some(served);
        let taken = status(&held, Some(&ok), Some("team-a"), url, &t);
        assert_eq!(taken.invoke_uri, None);
        assert_eq!(taken.provisioning_state, Some(ProvisioningState::Failed));
        let ready = taken.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", NAME_TAKEN)
        );
        assert_eq!(
            ready.message,
            "batch endpoint name \"scorer\" is already served by namespace team-a (created first); \
             invoke URIs are per name — rename this endpoint or delete that one"
        );
        // Ready and Stalled (kstatus Failed, with the same message).
        assert_eq!(taken.conditions.len(), 2, "{:?}", taken.conditions);
        let stalled = taken
            .conditions
            .iter()
            .find(|c| c.type_ == "Stalled")
            .unwrap();
        assert_eq!(
            (stalled.status.as_str(), stalled.message.as_str()),
            ("True", ready.message.as_str())
        );

        // The holder gone: the name is taken over, the invoke URI back.
        held.status = Some(taken);
        let back = status(&held, Some(&ok), None, url, &t);
        assert_eq!(
            back.invoke_uri.as_deref(),
            Some("http://router:8080/api/v1/batch/scorer/invoke")
        );
        assert!(conditions::is_true(&back.conditions, READY));
        assert!(!back.conditions.iter().any(|c| c.type_ == "Stalled"));
    }
}
