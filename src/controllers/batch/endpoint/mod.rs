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
        Controller, WatchStreamExt,
        controller::Action,
        reflector::{self, ObjectRef, Store, reflector},
        watcher,
    },
};
use tracing::{info, info_span, warn};

use crate::{
    api::{
        batch_deployment::BatchDeployment,
        batch_endpoint::{BatchEndpoint, BatchEndpointStatus},
        common::condition_types::{READY, RESOLVED},
        online_endpoint::ProvisioningState,
    },
    runtime::{
        backoff::{self, Backoffs},
        client::api,
        conditions, error_category,
        events::Events,
        metrics::Metrics,
        names::{self, NAME_TAKEN, Names, NotListed, taken_message},
        reconcile::{Panicked, Policy, ReconcileError, guarded},
        synced::{Synced, ready},
    },
};

const CONTROLLER: &str = "batchendpoint";

/// Errors of the BatchEndpoint controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("patching status")]
    PatchStatus(#[source] kube::Error),
    #[error(transparent)]
    Panicked(#[from] Panicked),
}

impl ReconcileError for Error {
    fn category(&self) -> &'static str {
        match self {
            Error::PatchStatus(e) => error_category(e),
            Error::Panicked(_) => crate::runtime::reconcile::PANIC,
        }
    }
}

/// The path of the REST invoke API of endpoint `name`, under the router's base URL.
pub fn invoke_uri(router_url: &str, name: &str) -> String {
    format!(
        "{}{}",
        router_url.trim_end_matches('/'),
        crate::contract::router_http::invoke_path(name)
    )
}

/// Whether jobs without a deployment can run, and why not (pure).
pub fn default_deployment_state(
    endpoint: &BatchEndpoint,
    default: Option<&BatchDeployment>,
) -> (bool, &'static str, String) {
    let Some(name) = endpoint.spec.defaults.deployment_name.as_deref() else {
        return (
            false,
            "NoDefaultDeployment",
            "defaults.deploymentName is not set: no valid deployments to route to; jobs must name a deployment".into(),
        );
    };
    let Some(d) = default else {
        return (
            false,
            "DefaultDeploymentNotFound",
            format!("default deployment {name:?} does not exist in this namespace"),
        );
    };
    if d.spec.endpoint_name != endpoint.name_any() {
        return (
            false,
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
        Some((true, _)) => (
            true,
            "DefaultDeploymentReady",
            format!("jobs without a deployment run on {name:?}"),
        ),
        Some((false, why)) => (
            false,
            "DefaultDeploymentNotReady",
            format!("default deployment {name:?} is not ready: {why}"),
        ),
        None => (
            false,
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
    let (ready, reason, message) = match name_taken {
        Some(holder) => (false, NAME_TAKEN, name_taken_message(&name, holder)),
        None => default_deployment_state(endpoint, default),
    };
    conditions::set(
        &mut s.conditions,
        READY,
        ready,
        reason,
        message,
        generation,
        now,
    );
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

fn error_policy(e: Arc<BatchEndpoint>, err: &Error, ctx: Arc<Ctx>) -> Action {
    let policy = Policy {
        controller: CONTROLLER,
        metrics: &ctx.metrics,
        backoffs: &ctx.backoffs,
        events: &ctx.events,
    };
    crate::runtime::reconcile::failed(policy, &*e, err)
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    rt: crate::runtime::handles::Runtime,
    options: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let crate::runtime::handles::Runtime {
        client,
        metrics,
        events,
        health,
        namespace,
        concurrency,
    } = rt;
    let ns = namespace.as_deref();
    let (endpoints_api, deployments_api) = (
        api::<BatchEndpoint>(&client, ns),
        api::<BatchDeployment>(&client, ns),
    );
    let (deployments, w) = reflector::store();
    let d_stream = reflector(
        w,
        watcher(deployments_api, watcher::Config::default()).default_backoff(),
    );
    // The endpoints' own watch, registered so that the other instances see this cache (`names`)
    // and know when its first list is in.
    let (endpoints, endpoint_stream) = options.names.watch(endpoints_api);
    let controller = Controller::for_stream(endpoint_stream, endpoints.clone());
    let synced = {
        // Not the endpoints' store: the controller itself awaits it, and a store wakes one waiter.
        let d = deployments.clone();
        Synced::spawn(health, async move { ready(d).await })
    };
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        deployments,
        metrics,
        events,
        backoffs: Backoffs::default(),
        synced,
        options,
    });
    info!(
        namespace = namespace.as_deref().unwrap_or("*"),
        "starting BatchEndpoint controller"
    );
    let results = controller
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        // A deployment wakes its own endpoint and any endpoint naming it as default.
        .watches_stream(d_stream.touched_objects(), move |d: BatchDeployment| {
            let ns = d.namespace();
            let name = d.name_any();
            endpoints
                .state()
                .iter()
                .filter(|e| {
                    e.namespace() == ns
                        && (e.name_any() == d.spec.endpoint_name
                            || e.spec.defaults.deployment_name.as_deref() == Some(&name))
                })
                .map(|e| ObjectRef::from_obj(&**e))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(
            |obj, ctx| async move {
                let key = backoff::key(&*obj);
                guarded(&ctx.backoffs.clone(), key, reconcile(obj, ctx)).await
            },
            error_policy,
            ctx,
        );
    crate::runtime::reconcile::drain(results, info_span!("batchendpoint")).await;
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
        let reason =
            |e: &BatchEndpoint, d: Option<&BatchDeployment>| default_deployment_state(e, d).1;
        assert_eq!(reason(&endpoint(None), None), "NoDefaultDeployment");
        assert_eq!(
            reason(&endpoint(Some("blue")), None),
            "DefaultDeploymentNotFound"
        );
        let other = deployment("other", Some(true));
        assert_eq!(
            reason(&endpoint(Some("blue")), Some(&other)),
            "DefaultDeploymentOfAnotherEndpoint"
        );
        let pending = deployment("scorer", Some(false));
        assert_eq!(
            reason(&endpoint(Some("blue")), Some(&pending)),
            "DefaultDeploymentNotReady"
        );
        let ok = deployment("scorer", Some(true));
        assert!(default_deployment_state(&endpoint(Some("blue")), Some(&ok)).0);
    }

    #[test]
    fn status_carries_the_invoke_uri() {
        let t = Time(Timestamp::from_second(1).unwrap());
        let s = status(&endpoint(None), None, None, "http://router:8080/", &t);
        assert_eq!(
            s.invoke_uri.as_deref(),
            Some("http://router:8080/api/v1/batch/scorer/invoke")
        );
        assert!(!conditions::is_true(&s.conditions, READY));
        assert_eq!(s.observed_generation, Some(1));
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
        assert_eq!(taken.conditions.len(), 1);

        // The holder gone: the name is taken over, the invoke URI back.
        held.status = Some(taken);
        let back = status(&held, Some(&ok), None, url, &t);
        assert_eq!(
            back.invoke_uri.as_deref(),
            Some("http://router:8080/api/v1/batch/scorer/invoke")
        );
        assert!(conditions::is_true(&back.conditions, READY));
    }
}
