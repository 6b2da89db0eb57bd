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
    Client, ResourceExt,
    runtime::{
        Controller,
        controller::Action,
        reflector::{ObjectRef, Store},
    },
};
use tracing::{info, warn};

use self::resolve::{Found, ResolvedDeployment};
use crate::{
    api::{
        batch_deployment::{BatchDeployment, BatchDeploymentStatus},
        batch_endpoint::BatchEndpoint,
        common::condition_types::RESOLVED,
        environment::Environment,
        instance_type::InstanceType,
        online_endpoint::ProvisioningState,
    },
    runtime::{
        backoff::Backoffs, conditions, drive::drive, events::Events, handles::Runtime,
        metrics::Metrics, synced::Synced,
    },
};

const CONTROLLER: &str = "batchdeployment";

/// Its only write is its status.
pub use crate::runtime::reconcile::StatusError as Error;

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
            conditions::progress(
                &mut s.conditions,
                &conditions::Progress::done("Ready", "jobs can run on this deployment"),
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
            // A referenced object that does not exist yet is waited for (GitOps applies the
            // objects of one sync in any order): Reconciling; an unusable reference stalls.
            let p = m.progress();
            conditions::progress(&mut s.conditions, &p, generation, now);
            s.provisioning_state = Some(match p {
                conditions::Progress::Stalled { .. } => ProvisioningState::Failed,
                _ => ProvisioningState::Creating,
            });
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

crate::runtime::drive::context!(Ctx, CONTROLLER);

/// Asks for the controller's caches now and returns the loop that runs it until `shutdown`.
pub fn controller(
    rt: Runtime,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let ns = rt.namespace.as_deref();
    let endpoints = rt.caches.namespaced::<BatchEndpoint>(ns, None);
    let environments = rt.caches.namespaced::<Environment>(ns, None);
    let instance_types = rt.caches.cluster::<InstanceType>(None);
    let deployments = rt.caches.namespaced::<BatchDeployment>(ns, None);
    let (d1, d2, d3) = (
        deployments.store(),
        deployments.store(),
        deployments.store(),
    );
    let ctx = Arc::new(Ctx {
        client: rt.client.clone(),
        endpoints: endpoints.store(),
        environments: environments.store(),
        instance_types: instance_types.store(),
        metrics: rt.metrics.clone(),
        events: rt.events.clone(),
        backoffs: Backoffs::default(),
        synced: rt.synced.clone(),
    });
    let controller = Controller::for_stream(deployments.changes(), deployments.store())
        // Any referenced object appearing or changing re-checks the deployments of its namespace.
        .watches_stream(endpoints.changes(), move |e: BatchEndpoint| {
            in_namespace(&d1, e.namespace())
        })
        .watches_stream(environments.changes(), move |e: Environment| {
            in_namespace(&d2, e.namespace())
        })
        .watches_stream(instance_types.changes(), move |_: InstanceType| {
            d3.state()
                .iter()
                .map(|d| ObjectRef::from_obj(&**d))
                .collect::<Vec<_>>()
        });
    async move {
        info!(
            namespace = rt.namespace.as_deref().unwrap_or("*"),
            "starting BatchDeployment controller"
        );
        drive(controller, ctx, rt.concurrency, shutdown, reconcile).await;
    }
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
        assert!(
            !s.conditions
                .iter()
                .any(|c| c.type_ == "Reconciling" || c.type_ == "Stalled")
        );
        let missing = resolve::resolve(&d.spec, Found::default());
        let s = status(&d, &missing, &t2);
        let c = s.conditions.iter().find(|c| c.type_ == RESOLVED).unwrap();
        assert_eq!(
            (c.reason.as_str(), &c.last_transition_time),
            ("EndpointNotFound", &t2)
        );
        // Waiting for the endpoint (it may be applied later in the same sync), not failed.
        let r = s
            .conditions
            .iter()
            .find(|c| c.type_ == "Reconciling")
            .unwrap();
        assert_eq!(
            (r.status.as_str(), r.reason.as_str(), r.message.as_str()),
            (
                "True",
                "EndpointNotFound",
                "BatchEndpoint \"scorer\" does not exist in this namespace"
            )
        );
        assert!(!conditions::is_true(&s.conditions, conditions::READY));
        assert!(!s.conditions.iter().any(|c| c.type_ == "Stalled"));
        assert_eq!(s.provisioning_state, Some(ProvisioningState::Creating));
    }
}
