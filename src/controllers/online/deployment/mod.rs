//! The OnlineDeployment controller: a Deployment, a Service and, for scoring scripts, the shipped
//! scoring server in a ConfigMap. With `target_utilization` the Deployment's replica count is left
//! to the autoscaler (`controllers::autoscaler`); a HorizontalPodAutoscaler an older release
//! created is deleted. `status.scale` belongs to the autoscaler: this controller neither writes
//! nor compares it.
//!
//! Stages: resolve (Environment, InstanceType, endpoint; from caches) → `build` (pure) → apply
//! each child with server-side apply, skipped when its desired hash is already on the cached
//! child → `status::compute` (pure, from the Deployment and the instances' Pods) → status written
//! only when it changed → Events on condition transitions.
//!
//! The instances' Pods are cached (label-filtered, like the children) only to say why they do not
//! run: an image that cannot be pulled, a container that cannot start or keeps crashing.

pub mod build;
pub mod error;
pub mod status;

use std::sync::Arc;

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        autoscaling::v2::HorizontalPodAutoscaler,
        core::v1::{ConfigMap, Pod, Service},
    },
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        Controller,
        controller::Action,
        reflector::{ObjectRef, Store},
    },
};
use tracing::{info, warn};

pub use error::Error;

use self::status::{EndpointPresence, Observed};
use super::{cached, resolve};
use crate::{
    api::{
        environment::Environment,
        instance_type::InstanceType,
        online_deployment::{OnlineDeployment, OnlineDeploymentStatus},
        online_endpoint::OnlineEndpoint,
    },
    runtime::{
        apply::{apply_if_changed, controlled_by, delete_owned},
        backoff::Backoffs,
        caches::MANAGED_SELECTOR,
        children::owner_label_key,
        drive::drive,
        events::Events,
        handles::Runtime,
        metrics::Metrics,
        refusal,
        synced::Synced,
    },
};

const CONTROLLER: &str = "onlinedeployment";

/// What reconciles share: the client, caches of children and references, metrics, Events.
pub struct Ctx {
    pub client: Client,
    /// Whether every cache below holds its first list.
    pub synced: Synced,
    pub deployments: Store<Deployment>,
    pub services: Store<Service>,
    pub hpas: Store<HorizontalPodAutoscaler>,
    pub config_maps: Store<ConfigMap>,
    /// The instances' Pods (owned by the Deployment's ReplicaSets, found by label).
    pub pods: Store<Pod>,
    pub environments: Store<Environment>,
    pub instance_types: Store<InstanceType>,
    pub endpoints: Store<OnlineEndpoint>,
    pub metrics: Metrics,
    pub events: Events,
    pub backoffs: Backoffs,
}

/// Reconciles one OnlineDeployment.
#[tracing::instrument(skip(od, ctx), fields(namespace = od.namespace().as_deref().unwrap_or(""), name = %od.name_any()))]
pub async fn reconcile(od: Arc<OnlineDeployment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let _timer = crate::runtime::reconcile::started(&ctx.metrics, CONTROLLER);
    let ns = od.namespace().ok_or(Error::MissingNamespace)?;
    if od.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }

    if !ctx.synced.wait().await {
        warn!("caches not synced yet; retrying");
        return Ok(Action::requeue(std::time::Duration::from_secs(1)));
    }
    let resolution = resolve::resolve(&od, &ctx.environments, &ctx.instance_types);
    let endpoint = match cached(&ctx.endpoints, &ns, &od.spec.endpoint_name) {
        Some(_) => EndpointPresence::Found,
        None => EndpointPresence::NotFound,
    };
    let mut refused = None;
    if let (Ok(resolved), EndpointPresence::Found) = (&resolution, endpoint)
        && let Err(err) = apply_children(&od, &ctx, &ns, resolved).await
    {
        // A refused child is shown in status (below) and becomes the error; others just fail.
        refused = Some(err.refusal().ok_or(err)?);
    }

    let deployment = cached(&ctx.deployments, &ns, &build::name(&od));
    let pods = own_pods(&ctx.pods, &ns, &od);
    let pod_refs: Vec<&Pod> = pods.iter().map(|p| &**p).collect();
    let observed = Observed::from_children(deployment.as_deref(), &pod_refs);
    let now = Time(Timestamp::now());
    let mut new = status::compute(&od, &resolution, endpoint, observed, &now);
    let old = od.status.as_ref().map(|s| s.conditions.as_slice());
    let generation = od.metadata.generation;
    refusal::show(refused.as_ref(), old, &mut new.conditions, generation, &now);
    if od.status.as_ref().map(without_scale) != Some(new.clone()) {
        crate::runtime::status::patch_status(&ctx.client, &*od, &new)
            .await
            .map_err(Error::PatchStatus)?;
        for t in status::transitions(od.status.as_ref(), &new) {
            super::publish(&ctx.events, &*od, &t);
        }
    }
    match refused {
        Some(r) => Err(r.into()),
        None => Ok(Action::await_change()),
    }
}

/// A status without the autoscaler's part, to compare with what this controller computes.
fn without_scale(status: &OnlineDeploymentStatus) -> OnlineDeploymentStatus {
    OnlineDeploymentStatus {
        scale: None,
        ..status.clone()
    }
}

/// Applies every child whose desired state differs from the cached one.
async fn apply_children(
    od: &OnlineDeployment,
    ctx: &Ctx,
    ns: &str,
    resolved: &resolve::Resolved,
) -> Result<(), Error> {
    let client = &ctx.client;
    let name = build::name(od);
    let env = resolve::find_environment(od, &ctx.environments);
    let routes = resolve::routes(
        od,
        resolved
            .inference
            .as_ref()
            .or(env.as_ref().and_then(|e| e.spec.inference_config.as_ref())),
    );
    let apply_err = |what| move |source| Error::Apply { what, source };

    if od.spec.code_configuration.is_some() {
        let cm_name = build::server_config_map_name(od);
        let written = apply_if_changed(
            &Api::<ConfigMap>::namespaced(client.clone(), ns),
            cached(&ctx.config_maps, ns, &cm_name).as_deref(),
            build::server_config_map(od),
        )
        .await
        .map_err(apply_err("the scoring-server ConfigMap"))?;
        log_write(ctx, written, "ConfigMap", &cm_name);
    }
    let written = apply_if_changed(
        &Api::<Service>::namespaced(client.clone(), ns),
        cached(&ctx.services, ns, &name).as_deref(),
        build::service(od, &routes),
    )
    .await
    .map_err(apply_err("the Service"))?;
    log_write(ctx, written, "Service", &name);
    let written = apply_if_changed(
        &Api::<Deployment>::namespaced(client.clone(), ns),
        cached(&ctx.deployments, ns, &name).as_deref(),
        build::deployment(od, resolved, &routes),
    )
    .await
    .map_err(apply_err("the Deployment"))?;
    log_write(ctx, written, "Deployment", &name);

    // Older releases put a CPU HorizontalPodAutoscaler on `target_utilization` deployments; it
    // would fight the autoscaler over the replica count.
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), ns);
    if let Some(hpa) = cached(&ctx.hpas, ns, &name)
        && let Some(uid) = hpa.uid()
        && controlled_by(&*hpa, od)
    {
        // Only an HPA this deployment controls, and only that very object (UID precondition).
        delete_owned(&hpas, &name, &uid)
            .await
            .map_err(|source| Error::Delete {
                what: "the HorizontalPodAutoscaler",
                source,
            })?;
        info!(kind = "HorizontalPodAutoscaler", child = %name, "deleted (left by an older release)");
    }
    Ok(())
}

/// The deployment's instance Pods from the cache, by the label its Deployment selects them with.
fn own_pods(pods: &Store<Pod>, ns: &str, od: &OnlineDeployment) -> Vec<Arc<Pod>> {
    let (key, name) = (owner_label_key::<OnlineDeployment>(), od.name_any());
    pods.state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns) && p.labels().get(&key) == Some(&name))
        .collect()
}

fn log_write(ctx: &Ctx, written: bool, kind: &str, name: &str) {
    crate::runtime::apply::record(&ctx.metrics, CONTROLLER, kind, written);
    if written {
        info!(kind, child = %name, "applied");
    }
}

crate::runtime::drive::context!(Ctx, CONTROLLER);

/// Asks for the controller's caches now and returns the loop that runs it until `shutdown`.
pub fn controller(
    rt: Runtime,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let (ns, managed) = (rt.namespace.as_deref(), Some(MANAGED_SELECTOR));
    let deployments = rt.caches.namespaced::<Deployment>(ns, managed);
    let services = rt.caches.namespaced::<Service>(ns, managed);
    let hpas = rt.caches.namespaced::<HorizontalPodAutoscaler>(ns, managed);
    let config_maps = rt.caches.namespaced::<ConfigMap>(ns, managed);
    let pods = rt.caches.namespaced::<Pod>(ns, managed);
    let environments = rt.caches.namespaced::<Environment>(ns, None);
    let instance_types = rt.caches.cluster::<InstanceType>(None);
    let endpoints = rt.caches.namespaced::<OnlineEndpoint>(ns, None);
    let ods = rt.caches.namespaced::<OnlineDeployment>(ns, None);
    let (for_envs, for_its, for_endpoints) = (ods.store(), ods.store(), ods.store());
    let ctx = Arc::new(Ctx {
        client: rt.client.clone(),
        synced: rt.synced.clone(),
        deployments: deployments.store(),
        services: services.store(),
        hpas: hpas.store(),
        config_maps: config_maps.store(),
        pods: pods.store(),
        environments: environments.store(),
        instance_types: instance_types.store(),
        endpoints: endpoints.store(),
        metrics: rt.metrics.clone(),
        events: rt.events.clone(),
        backoffs: Backoffs::default(),
    });
    let controller = Controller::for_stream(ods.changes(), ods.store())
        .owns_stream(deployments.changes())
        .owns_stream(services.changes())
        .owns_stream(hpas.changes())
        .owns_stream(config_maps.changes())
        // Pods are owned by the ReplicaSets: their label names the deployment.
        .watches_stream(pods.changes(), |p: Pod| {
            let ns = p.namespace()?;
            let name = p.labels().get(&owner_label_key::<OnlineDeployment>())?;
            Some(ObjectRef::new(name).within(&ns))
        })
        // A changed Environment, InstanceType or endpoint wakes the deployments that name it.
        .watches_stream(environments.changes(), move |env: Environment| {
            let (ns, name) = (env.namespace(), env.name_any());
            for_envs
                .state()
                .into_iter()
                .filter(|d| {
                    d.namespace() == ns
                        && d.spec
                            .environment
                            .as_deref()
                            .is_some_and(|e| e.split([':', '@']).next() == Some(name.as_str()))
                })
                .map(|d| ObjectRef::from_obj(&*d))
                .collect::<Vec<_>>()
        })
        .watches_stream(instance_types.changes(), move |_it: InstanceType| {
            for_its
                .state()
                .into_iter()
                .map(|d| ObjectRef::from_obj(&*d))
                .collect::<Vec<_>>()
        })
        .watches_stream(endpoints.changes(), move |ep: OnlineEndpoint| {
            let (ns, name) = (ep.namespace(), ep.name_any());
            for_endpoints
                .state()
                .into_iter()
                .filter(|d| d.namespace() == ns && d.spec.endpoint_name == name)
                .map(|d| ObjectRef::from_obj(&*d))
                .collect::<Vec<_>>()
        });
    async move {
        info!(
            namespace = rt.namespace.as_deref().unwrap_or("*"),
            "starting OnlineDeployment controller"
        );
        drive(controller, ctx, rt.concurrency, shutdown, reconcile).await;
    }
}
