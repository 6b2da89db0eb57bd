//! The BatchDeployment controller: checks what a deployment references (its BatchEndpoint,
//! Environment or inline image, InstanceType) and reports it in status. A batch deployment has no
//! children of its own: its jobs get Pods, through the BatchJob controller.
//!
//! Stages: look up references in the caches → [`resolve::resolve`] (pure) → [`status`] (pure) →
//! patch status when it changed, with an Event when `Resolved` flips.

pub mod resolve;

use std::sync::Arc;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, Client, ResourceExt,
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        reflector::{self, ObjectRef, Store, reflector},
        watcher,
    },
};
use tracing::{info, info_span, warn};

use self::resolve::{Found, ResolvedDeployment};
use crate::{
    api::{
        batch_deployment::{BatchDeployment, BatchDeploymentStatus},
        batch_endpoint::BatchEndpoint,
        common::condition_types::{READY, RESOLVED},
        environment::Environment,
        instance_type::InstanceType,
        online_endpoint::ProvisioningState,
    },
    runtime::{
        backoff::{self, Backoffs},
        client::api,
        conditions, error_category,
        events::Events,
        metrics::Metrics,
        reconcile::{Panicked, Policy, ReconcileError, guarded},
        synced::{Synced, ready},
    },
};

const CONTROLLER: &str = "batchdeployment";

/// Errors of the BatchDeployment controller.
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

/// Caches and shared handles.
pub struct Ctx {
    pub client: Client,
    pub endpoints: Store<BatchEndpoint>,
    pub environments: Store<Environment>,
    pub instance_types: Store<InstanceType>,
    pub metrics: Metrics,
    pub events: Events,
    pub backoffs: Backoffs,
    /// Whether every cache above holds its first list.
    pub synced: Synced,
}

/// Looks `d`'s references up in the caches and resolves them.
pub fn resolve_from_stores(
    d: &BatchDeployment,
    endpoints: &Store<BatchEndpoint>,
    environments: &Store<Environment>,
    instance_types: &Store<InstanceType>,
) -> Result<ResolvedDeployment, resolve::Missing> {
    let ns = d.namespace();
    let endpoint_exists = endpoints
        .get(&ObjectRef::new(&d.spec.endpoint_name).within(ns.as_deref().unwrap_or_default()))
        .is_some();
    let environment = resolve::environment_name(&d.spec).and_then(|name| {
        environments.get(&ObjectRef::new(&name).within(ns.as_deref().unwrap_or_default()))
    });
    let instance_type = instance_types.get(&ObjectRef::new(resolve::instance_type_name(&d.spec)));
    resolve::resolve(
        &d.spec,
        Found {
            endpoint_exists,
            environment: environment.as_deref(),
            instance_type: instance_type.as_deref().map(|i| &i.spec),
        },
    )
}

/// The status for a resolution (pure). Conditions keep their transition times when unchanged.
pub fn status(
    d: &BatchDeployment,
    resolution: &Result<ResolvedDeployment, resolve::Missing>,
    now: &Time,
) -> BatchDeploymentStatus {
    let mut s = d.status.clone().unwrap_or_default();
    let generation = d.metadata.generation;
    s.observed_generation = generation;
    match resolution {
        Ok(r) => {
            conditions::set(
                &mut s.conditions,
                RESOLVED,
                true,
                "Resolved",
                r.summary(),
                generation,
                now,
            );
            conditions::set(
                &mut s.conditions,
                READY,
                true,
                "Ready",
                "jobs can run on this deployment",
                generation,
                now,
            );
            s.provisioning_state = Some(ProvisioningState::Succeeded);
            s.image = Some(r.image.clone());
            s.environment_version = r.environment_version.clone();
        }
        Err(m) => {
            conditions::set(
                &mut s.conditions,
                RESOLVED,
                false,
                m.reason,
                m.message.clone(),
                generation,
                now,
            );
            conditions::set(
                &mut s.conditions,
                READY,
                false,
                m.reason,
                m.message.clone(),
                generation,
                now,
            );
            s.provisioning_state = Some(ProvisioningState::Failed);
            s.image = None;
            s.environment_version = None;
        }
    }
    s
}

/// Reconciles one BatchDeployment.
#[tracing::instrument(skip_all, fields(namespace = d.namespace().as_deref().unwrap_or(""), name = %d.name_any()))]
pub async fn reconcile(d: Arc<BatchDeployment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let _timer = crate::runtime::reconcile::started(&ctx.metrics, CONTROLLER);
    // Decide only on complete caches: after a restart an empty cache would report what the
    // object references as missing, with Warning Events, for nothing.
    if !ctx.synced.wait().await {
        warn!("caches not synced yet; retrying");
        return Ok(Action::requeue(std::time::Duration::from_secs(1)));
    }
    let resolution =
        resolve_from_stores(&d, &ctx.endpoints, &ctx.environments, &ctx.instance_types);
    let new = status(&d, &resolution, &Time(Timestamp::now()));
    if d.status.as_ref() == Some(&new) {
        return Ok(Action::await_change());
    }
    let was_resolved = d
        .status
        .as_ref()
        .map(|s| conditions::is_true(&s.conditions, RESOLVED));
    crate::runtime::status::patch_status(&ctx.client, &*d, &new)
        .await
        .map_err(Error::PatchStatus)?;
    match &resolution {
        Err(m) if was_resolved != Some(false) => {
            ctx.events.publish(&*d, true, m.reason, &m.message);
        }
        Ok(r) if was_resolved != Some(true) => {
            ctx.events.publish(&*d, false, "Resolved", &r.summary());
        }
        _ => {}
    }
    Ok(Action::await_change())
}

fn error_policy(d: Arc<BatchDeployment>, err: &Error, ctx: Arc<Ctx>) -> Action {
    let policy = Policy {
        controller: CONTROLLER,
        metrics: &ctx.metrics,
        backoffs: &ctx.backoffs,
        events: &ctx.events,
    };
    crate::runtime::reconcile::failed(policy, &*d, err)
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    rt: crate::runtime::handles::Runtime,
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
    let cfg = watcher::Config::default;
    let (endpoints, w) = reflector::store();
    let ep_stream = reflector(
        w,
        watcher(api::<BatchEndpoint>(&client, namespace.as_deref()), cfg()).default_backoff(),
    );
    let (environments, w) = reflector::store();
    let env_stream = reflector(
        w,
        watcher(api::<Environment>(&client, namespace.as_deref()), cfg()).default_backoff(),
    );
    let (instance_types, w) = reflector::store();
    let it_stream = reflector(
        w,
        watcher(Api::<InstanceType>::all(client.clone()), cfg()).default_backoff(),
    );

    let controller = Controller::new(api::<BatchDeployment>(&client, namespace.as_deref()), cfg());
    let deployments = controller.store();
    let synced = {
        // Not the deployments' own store: the controller itself awaits it, and a store wakes
        // only one waiter.
        let (e, v, i) = (
            endpoints.clone(),
            environments.clone(),
            instance_types.clone(),
        );
        Synced::spawn(health, async move {
            ready(e).await && ready(v).await && ready(i).await
        })
    };
    let (d1, d2, d3) = (deployments.clone(), deployments.clone(), deployments);
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        endpoints,
        environments,
        instance_types,
        metrics,
        events,
        backoffs: Backoffs::default(),
        synced,
    });
    info!(
        namespace = namespace.as_deref().unwrap_or("*"),
        "starting BatchDeployment controller"
    );
    let results = controller
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        // Any referenced object appearing or changing re-checks the deployments of its namespace.
        .watches_stream(ep_stream.applied_objects(), move |e: BatchEndpoint| {
            in_namespace(&d1, e.namespace())
        })
        .watches_stream(env_stream.applied_objects(), move |e: Environment| {
            in_namespace(&d2, e.namespace())
        })
        .watches_stream(it_stream.applied_objects(), move |_: InstanceType| {
            d3.state()
                .iter()
                .map(|d| ObjectRef::from_obj(&**d))
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
    crate::runtime::reconcile::drain(results, info_span!("batchdeployment")).await;
}

fn in_namespace(
    store: &Store<BatchDeployment>,
    ns: Option<String>,
) -> Vec<ObjectRef<BatchDeployment>> {
    store
        .state()
        .iter()
        .filter(|d| d.namespace() == ns)
        .map(|d| ObjectRef::from_obj(&**d))
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    use super::*;

    #[test]
    fn status_reports_the_resolved_image_and_keeps_transition_times() {
        let mut d: BatchDeployment = serde_json::from_value(json!({
            "apiVersion": "mlcompute.io/v1alpha1", "kind": "BatchDeployment",
            "metadata": { "name": "blue", "namespace": "ns", "generation": 2 },
            "spec": { "endpointName": "scorer", "model": "pvc://m/x", "image": "python:3.12",
                      "codeConfiguration": { "code": "configmap://c", "scoringScript": "s.py" } }
        }))
        .unwrap();
        let t1 = Time(Timestamp::from_second(10).unwrap());
        let t2 = Time(Timestamp::from_second(20).unwrap());
        let r = resolve::resolve(
            &d.spec,
            Found {
                endpoint_exists: true,
                ..Found::default()
            },
        );
        let s = status(&d, &r, &t1);
        assert_eq!(s.image.as_deref(), Some("python:3.12"));
        assert_eq!(s.provisioning_state, Some(ProvisioningState::Succeeded));
        assert!(conditions::is_true(&s.conditions, RESOLVED));
        d.status = Some(s.clone());
        assert_eq!(
            status(&d, &r, &t2),
            s,
            "an unchanged resolution writes nothing"
        );
        let missing = resolve::resolve(&d.spec, Found::default());
        let s = status(&d, &missing, &t2);
        let c = s.conditions.iter().find(|c| c.type_ == RESOLVED).unwrap();
        assert_eq!(
            (c.reason.as_str(), &c.last_transition_time),
            ("EndpointNotFound", &t2)
        );
    }
}
