//! The OnlineEndpoint controller: the keys Secret, the routing table (one pure function,
//! `routing::compute`), materialised as the built-in router's ConfigMap `<endpoint>-routing`
//! and, with `--gateway` and Gateway API installed, an HTTPRoute; status with the scoring URI,
//! the traffic actually applied and every deployment's readiness.
//!
//! Stages: check that no other watched namespace holds the endpoint's name (`operator::names::holder`:
//! oldest endpoint of a name holds it) → read the endpoint's OnlineDeployments (cache) →
//! `routing::compute` (pure) → create the keys Secret if missing (never rewritten) → apply the
//! ConfigMap and HTTPRoute when their desired hash changed, or delete them when the name is
//! taken → `status::compute` (pure) → status written only when it changed → Events on condition
//! transitions.

pub mod error;
pub mod httproute;
pub mod keys;
pub mod routing;
pub mod status;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::{ConfigMap, Secret},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        reflector::{self, ObjectRef, Store, reflector},
        watcher,
    },
};
use serde_json::json;
use tracing::{info, warn};

pub use error::Error;

use self::{
    httproute::GatewayRef,
    routing::{DeploymentView, Routing},
    status::Gateway,
};
use super::{cached, deployment::build, resolve};
use crate::{
    api::{
        environment::Environment,
        online_deployment::{OnlineDeployment, ScaleType},
        online_endpoint::{OnlineEndpoint, OnlineEndpointStatus},
    },
    contract::routing::{ClusterRequestSettings, ROUTING_TABLE_KEY, ROUTING_TABLE_LABEL},
    runtime::{
        apply::{
            DESIRED_HASH, apply_if_changed, check_owner, check_owner_meta, controlled_by,
            create_owned, delete_owned, hash_of,
        },
        backoff::Backoffs,
        caches::MANAGED_SELECTOR,
        children::{MANAGER, child_meta},
        drive::drive,
        events::Events,
        handles::Runtime,
        is_not_found,
        metrics::Metrics,
        names::{self, Names, NotListed},
        refusal,
        synced::Synced,
    },
};

const CONTROLLER: &str = "onlineendpoint";
/// How long an absent HTTPRoute CRD is remembered before asking discovery again.
const CRD_RECHECK: Duration = Duration::from_secs(30);
/// `applied_routes` value of an HTTPRoute deleted because the name is taken.
const WITHDRAWN: &str = "withdrawn";

/// Endpoint-controller flags (from the operator's settings).
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Gateway the HTTPRoutes attach to; none: no HTTPRoutes.
    pub gateway: Option<GatewayRef>,
    /// Base URL of the built-in router, for scoring URIs.
    pub router_url: String,
    /// Every controller instance's endpoints, for the one-endpoint-per-name rule.
    pub names: Names<OnlineEndpoint>,
}

/// What reconciles share.
pub struct Ctx {
    pub client: Client,
    pub deployments: Store<OnlineDeployment>,
    pub environments: Store<Environment>,
    pub secrets: Store<Secret>,
    pub config_maps: Store<ConfigMap>,
    pub metrics: Metrics,
    pub events: Events,
    pub options: Options,
    /// Whether every cache above holds its first list.
    pub synced: Synced,
    /// Cache of HTTPRoutes, when Gateway API was installed at start.
    pub http_routes: Option<Store<DynamicObject>>,
    /// Hash of the HTTPRoute last applied per `namespace/name`, for when Gateway API was
    /// installed after start (no cache then).
    pub applied_routes: Mutex<HashMap<String, String>>,
    /// Whether the HTTPRoute CRD exists, and when that was learnt.
    pub httproute_crd: Mutex<Option<(bool, Instant)>>,
    pub backoffs: Backoffs,
}

/// The routing ConfigMap's name.
pub fn routing_config_map_name(endpoint: &str) -> String {
    format!("{endpoint}-routing")
}

/// What the endpoint controller needs of each deployment of `endpoint`.
fn views(ep: &OnlineEndpoint, ctx: &Ctx) -> Vec<DeploymentView> {
    let (ns, name) = (ep.namespace(), ep.name_any());
    ctx.deployments
        .state()
        .iter()
        .filter(|d| {
            d.namespace() == ns
                && d.spec.endpoint_name == name
                && d.meta().deletion_timestamp.is_none()
        })
        .map(|d| view(d, resolve::find_environment(d, &ctx.environments).as_ref()))
        .collect()
}

/// What the endpoint controller needs of deployment `d`, whose Environment is `env` (pure).
pub fn view(d: &OnlineDeployment, env: Option<&Environment>) -> DeploymentView {
    let routes = resolve::routes(d, env.and_then(|e| e.spec.inference_config.as_ref()));
    let status = d.status.clone().unwrap_or_default();
    DeploymentView {
        name: d.name_any(),
        ready_instances: status.ready_instances.unwrap_or(0),
        scales_from_zero: d.spec.scale_settings.type_ == ScaleType::TargetUtilization
            && d.spec.scale_settings.min_instances == 0,
        instances: status.replicas.unwrap_or(d.spec.instance_count),
        scoring_path: routes.scoring_path,
        request_settings: ClusterRequestSettings::from(&d.spec.request_settings),
        service: build::name(d),
        port: routes.port,
        port_name: build::PORT_NAME.into(),
    }
}

/// The routing ConfigMap: the route as JSON, labelled for the router's watch.
pub fn routing_config_map(ep: &OnlineEndpoint, routing: &Routing) -> ConfigMap {
    let mut meta = child_meta(ep, routing_config_map_name(&ep.name_any()), "routing");
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(ROUTING_TABLE_LABEL.into(), "true".into());
    ConfigMap {
        metadata: meta,
        data: Some(BTreeMap::from([(
            ROUTING_TABLE_KEY.to_string(),
            serde_json::to_string_pretty(&routing.route).unwrap_or_default(),
        )])),
        ..ConfigMap::default()
    }
}

/// Reconciles one OnlineEndpoint.
#[tracing::instrument(skip(ep, ctx), fields(namespace = ep.namespace().as_deref().unwrap_or(""), name = %ep.name_any()))]
pub async fn reconcile(ep: Arc<OnlineEndpoint>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let _timer = crate::runtime::reconcile::started(&ctx.metrics, CONTROLLER);
    let ns = ep.namespace().ok_or(Error::MissingNamespace)?;
    if ep.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if !ctx.synced.wait().await {
        warn!("caches not synced yet; retrying");
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    // Validate: the name is the scoring URI, held by one endpoint across the watched namespaces.
    let name_taken = match ctx.options.names.holder_of(&ep) {
        Ok(holder) => holder,
        Err(NotListed) => {
            warn!("other namespaces' endpoints not listed yet; retrying");
            return Ok(Action::requeue(names::LIST_RETRY));
        }
    };
    let routing = routing::compute(&ep, &views(&ep, &ctx));

    // A refused child write is shown in status (below) and becomes the error; others just fail.
    let mut refused = None;
    let keys_ready = match ensure_keys(&ep, &ctx, &ns).await {
        Ok(ready) => ready,
        Err(err) => {
            refused = Some(err.refusal().ok_or(err)?);
            false
        }
    };
    let gateway = match &name_taken {
        None => {
            match apply_routing(&ep, &ctx, &ns, &routing).await {
                Ok(()) => {}
                Err(err) => refused = refused.or(Some(err.refusal().ok_or(err)?)),
            }
            match apply_http_route(&ep, &ctx, &ns, &routing).await {
                Ok(gateway) => gateway,
                Err(err) => {
                    refused = refused.or(Some(err.refusal().ok_or(err)?));
                    Gateway::Withheld
                }
            }
        }
        Some(holder) => {
            tracing::debug!(holder = %holder, "endpoint name is held by another namespace; not routed");
            withdraw(&ep, &ctx, &ns).await?
        }
    };

    let now = Time(Timestamp::now());
    let mut new = status::compute(
        &ep,
        &routing,
        keys_ready,
        gateway,
        name_taken.as_deref(),
        &ctx.options.router_url,
        &now,
    );
    let old = ep.status.as_ref().map(|s| s.conditions.as_slice());
    let generation = ep.metadata.generation;
    refusal::show(refused.as_ref(), old, &mut new.conditions, generation, &now);
    write_status(&ep, &ctx, new).await?;
    if let Some(r) = refused {
        return Err(r.into());
    }
    Ok(match name_taken {
        // The holder may be deleted by another controller instance: no event reaches this one.
        Some(_) => Action::requeue(names::RECHECK),
        None => Action::await_change(),
    })
}

/// Applies the routing ConfigMap when its desired hash changed.
async fn apply_routing(
    ep: &OnlineEndpoint,
    ctx: &Ctx,
    ns: &str,
    routing: &Routing,
) -> Result<(), Error> {
    let cm_name = routing_config_map_name(&ep.name_any());
    let written = apply_if_changed(
        &Api::<ConfigMap>::namespaced(ctx.client.clone(), ns),
        cached(&ctx.config_maps, ns, &cm_name).as_deref(),
        routing_config_map(ep, routing),
    )
    .await
    .map_err(Error::ApplyRouting)?;
    crate::runtime::apply::record(&ctx.metrics, CONTROLLER, "ConfigMap", written);
    if written {
        info!(traffic = ?routing.traffic_applied, mirror = ?routing.mirror_applied, "routing table applied");
    }
    Ok(())
}

/// Takes an endpoint whose name another namespace holds off the router and the gateway: deletes
/// its routing ConfigMap and HTTPRoute where they exist (the keys Secret stays).
async fn withdraw(ep: &OnlineEndpoint, ctx: &Ctx, ns: &str) -> Result<Gateway, Error> {
    let name = ep.name_any();
    let cm_name = routing_config_map_name(&name);
    if let Some(cm) = cached(&ctx.config_maps, ns, &cm_name)
        && controlled_by(&*cm, ep)
        && let Some(uid) = cm.uid()
    {
        let api = Api::<ConfigMap>::namespaced(ctx.client.clone(), ns);
        delete_owned(&api, &cm_name, &uid)
            .await
            .map_err(Error::DeleteRouting)?;
        info!(configmap = %cm_name, "routing table withdrawn");
    }
    if ctx.options.gateway.is_none() {
        return Ok(Gateway::NotConfigured);
    }
    if !httproute_installed(ctx).await {
        return Ok(Gateway::NotInstalled);
    }
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), ns, &http_route_resource());
    let key = format!("{ns}/{name}");
    // The route to delete: ours only (controlled by this endpoint), and that very object.
    let ours = |r: &DynamicObject| controlled_by(r, ep);
    let present = match &ctx.http_routes {
        Some(store) => store
            .get(&ObjectRef::new_with(&name, http_route_resource()).within(ns))
            .filter(|r| ours(r))
            .and_then(|r| r.uid()),
        // No cache (Gateway API installed after start): look once, then remember.
        None => {
            let withdrawn = ctx
                .applied_routes
                .lock()
                .map(|m| m.get(&key).map(String::as_str) == Some(WITHDRAWN))
                .unwrap_or(false);
            if withdrawn {
                None
            } else {
                api.get_opt(&name)
                    .await
                    .map_err(Error::DeleteHttpRoute)?
                    .filter(ours)
                    .and_then(|r| r.uid())
            }
        }
    };
    if let Some(uid) = present {
        delete_owned(&api, &name, &uid)
            .await
            .map_err(Error::DeleteHttpRoute)?;
        info!("HTTPRoute withdrawn");
    }
    if let Ok(mut m) = ctx.applied_routes.lock() {
        m.insert(key, WITHDRAWN.into());
    }
    Ok(Gateway::Withheld)
}

/// Writes `new` as the status when it differs, and publishes Events on condition transitions.
async fn write_status(
    ep: &OnlineEndpoint,
    ctx: &Ctx,
    new: OnlineEndpointStatus,
) -> Result<(), Error> {
    if ep.status.as_ref() == Some(&new) {
        return Ok(());
    }
    crate::runtime::status::patch_status(&ctx.client, ep, &new)
        .await
        .map_err(Error::PatchStatus)?;
    let old = ep
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    // A taken name is one Warning (Ready/NameTaken), not a second one for the HTTPRoute.
    let taken = new.conditions.iter().any(|c| c.reason == names::NAME_TAKEN);
    let skip: &[&str] = if taken {
        &[status::GATEWAY_ROUTED]
    } else {
        &[]
    };
    for t in super::transitions(old, &new.conditions, skip) {
        super::publish(&ctx.events, ep, &t);
    }
    Ok(())
}

/// Creates the keys Secret when the endpoint needs keys and none exists. Existing keys are
/// never touched here. Returns whether keys exist.
async fn ensure_keys(ep: &OnlineEndpoint, ctx: &Ctx, ns: &str) -> Result<bool, Error> {
    use crate::api::online_endpoint::AuthMode;
    if ep.spec.auth_mode == AuthMode::None {
        return Ok(false);
    }
    let name = crate::contract::keys::secret_name(&ep.name_any());
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let desired = keys::secret(ep);
    if let Some(existing) = cached(&ctx.secrets, ns, &name) {
        // Keys in a Secret somebody else controls are never read, served or rewritten.
        check_owner(&*existing, &desired).map_err(Error::CreateKeys)?;
        // A Secret made before token signing (or for key mode, then switched): add the key.
        if ep.spec.auth_mode == AuthMode::AmlToken && !keys::has_signing_key(&existing) {
            let patch = serde_json::json!({ "stringData": {
                crate::contract::keys::TOKEN_SIGNING_KEY: crate::contract::keys::new_key()
            } });
            secrets
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| Error::CreateKeys(e.into()))?;
            info!(secret = %name, "token signing key added");
        }
        return Ok(true);
    }
    // Created once, never rewritten; an existing one of ours means the cache was behind.
    if create_owned(&secrets, &desired)
        .await
        .map_err(Error::CreateKeys)?
    {
        info!(secret = %name, "keys created");
    }
    Ok(true)
}

/// Whether the HTTPRoute CRD is installed (asked through discovery, remembered for a while).
async fn httproute_installed(ctx: &Ctx) -> bool {
    if let Ok(guard) = ctx.httproute_crd.lock()
        && let Some((present, at)) = *guard
        && (present || at.elapsed() < CRD_RECHECK)
    {
        return present;
    }
    let present = discover_http_routes(&ctx.client).await;
    if let Ok(mut guard) = ctx.httproute_crd.lock() {
        *guard = Some((present, Instant::now()));
    }
    present
}

/// Asks discovery whether the HTTPRoute kind is served.
async fn discover_http_routes(client: &Client) -> bool {
    match client
        .list_api_group_resources(&format!("{}/{}", httproute::GROUP, httproute::VERSION))
        .await
    {
        Ok(list) => list.resources.iter().any(|r| r.name == "httproutes"),
        Err(e) if is_not_found(&e) => false,
        Err(err) => {
            warn!(%err, "Gateway API discovery failed");
            false
        }
    }
}

/// Applies the HTTPRoute when a gateway is configured and Gateway API is installed, skipping
/// the write when the same route was applied before.
async fn apply_http_route(
    ep: &OnlineEndpoint,
    ctx: &Ctx,
    ns: &str,
    routing: &Routing,
) -> Result<Gateway, Error> {
    let Some(gw) = &ctx.options.gateway else {
        return Ok(Gateway::NotConfigured);
    };
    if !httproute_installed(ctx).await {
        return Ok(Gateway::NotInstalled);
    }
    let mut route = httproute::http_route(ep, &routing.route, gw);
    let hash = hash_of(&route);
    route["metadata"]["annotations"] = json!({ DESIRED_HASH: hash });
    let key = format!("{ns}/{}", ep.name_any());
    let done = match &ctx.http_routes {
        Some(store) => store
            .get(&ObjectRef::new_with(&ep.name_any(), http_route_resource()).within(ns))
            .is_some_and(|r| r.annotations().get(DESIRED_HASH) == Some(&hash)),
        None => ctx
            .applied_routes
            .lock()
            .map(|m| m.get(&key) == Some(&hash))
            .unwrap_or(false),
    };
    crate::runtime::apply::record(&ctx.metrics, CONTROLLER, "HTTPRoute", !done);
    if done {
        return Ok(Gateway::Applied);
    }
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), ns, &http_route_resource());
    // Never take over an HTTPRoute of the same name that is not this endpoint's.
    let existing = match &ctx.http_routes {
        Some(store) => store
            .get(&ObjectRef::new_with(&ep.name_any(), http_route_resource()).within(ns))
            .map(|r| (*r).clone()),
        None => None,
    };
    let existing = match existing {
        Some(r) => Some(r),
        None => api
            .get_opt(&ep.name_any())
            .await
            .map_err(|e| Error::ApplyHttpRoute(e.into()))?,
    };
    if let Some(existing) = existing {
        let desired: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta =
            serde_json::from_value(route["metadata"].clone()).unwrap_or_default();
        check_owner_meta(httproute::KIND, &existing.metadata, &desired)
            .map_err(Error::ApplyHttpRoute)?;
    }
    match api
        .patch(
            &ep.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&route),
        )
        .await
    {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {
            // The CRD went away since discovery said otherwise: ask again next time.
            if let Ok(mut guard) = ctx.httproute_crd.lock() {
                *guard = None;
            }
            return Ok(Gateway::NotInstalled);
        }
        Err(e) => return Err(Error::ApplyHttpRoute(e.into())),
    }
    info!(traffic = ?routing.traffic_applied, "HTTPRoute applied");
    if let Ok(mut m) = ctx.applied_routes.lock() {
        m.insert(key, hash);
    }
    Ok(Gateway::Applied)
}

/// The HTTPRoute kind, for dynamic APIs and caches.
fn http_route_resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk(httproute::GROUP, httproute::VERSION, httproute::KIND);
    ApiResource::from_gvk(&gvk)
}

crate::runtime::drive::context!(Ctx, CONTROLLER);

/// Asks for the controller's caches now and returns the loop that runs it until `shutdown`.
pub fn controller(
    rt: Runtime,
    options: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let (ns, managed) = (rt.namespace.as_deref(), Some(MANAGED_SELECTOR));
    let deployments = rt.caches.namespaced::<OnlineDeployment>(ns, None);
    let environments = rt.caches.namespaced::<Environment>(ns, None);
    let secrets = rt.caches.namespaced::<Secret>(ns, managed);
    let config_maps = rt.caches.namespaced::<ConfigMap>(ns, managed);
    // Registered so that the other instances see this cache (`names`) once it is listed.
    let endpoints = rt.caches.namespaced::<OnlineEndpoint>(ns, None);
    options.names.register_cache(&endpoints);
    let deployments_of = deployments.store();
    let controller = Controller::for_stream(endpoints.changes(), endpoints.store())
        .owns_stream(secrets.changes())
        .owns_stream(config_maps.changes())
        // A deployment's readiness or settings change its endpoint's routing.
        .watches_stream(deployments.changes(), |d: OnlineDeployment| {
            d.namespace()
                .map(|ns| ObjectRef::<OnlineEndpoint>::new(&d.spec.endpoint_name).within(&ns))
        })
        // A changed Environment can change a custom container's scoring route.
        .watches_stream(environments.changes(), move |env: Environment| {
            let (ns, name) = (env.namespace(), env.name_any());
            let mut refs: Vec<ObjectRef<OnlineEndpoint>> = deployments_of
                .state()
                .iter()
                .filter(|d| {
                    d.namespace() == ns
                        && d.spec
                            .environment
                            .as_deref()
                            .is_some_and(|e| e.split([':', '@']).next() == Some(name.as_str()))
                })
                .filter_map(|d| Some(ObjectRef::new(&d.spec.endpoint_name).within(&d.namespace()?)))
                .collect();
            refs.dedup();
            refs
        });
    async move {
        let ns = rt.namespace.as_deref();
        // HTTPRoutes are cached (and their deletion re-applies them) when Gateway API is there
        // now. Only this controller reads them, so the cache is its own; until it has listed,
        // an HTTPRoute is applied again (server-side apply: a no-op when unchanged).
        let installed = options.gateway.is_some() && discover_http_routes(&rt.client).await;
        let (http_routes, http_route_stream) = if installed {
            let ar = http_route_resource();
            let writer = reflector::store::Writer::<DynamicObject>::new(ar.clone());
            let store = writer.as_reader();
            let api = match ns {
                Some(ns) => Api::namespaced_with(rt.client.clone(), ns, &ar),
                None => Api::all_with(rt.client.clone(), &ar),
            };
            let owned = format!(
                "app.kubernetes.io/managed-by={MANAGER},app.kubernetes.io/name={CONTROLLER}"
            );
            let stream = reflector(
                writer,
                watcher(api, watcher::Config::default().labels(&owned))
                    .default_backoff()
                    .modify(|o: &mut DynamicObject| o.managed_fields_mut().clear()),
            )
            .touched_objects();
            (Some(store), Some(stream))
        } else {
            (None, None)
        };
        let ctx = Arc::new(Ctx {
            client: rt.client.clone(),
            synced: rt.synced.clone(),
            deployments: deployments.store(),
            environments: environments.store(),
            secrets: secrets.store(),
            config_maps: config_maps.store(),
            metrics: rt.metrics.clone(),
            events: rt.events.clone(),
            options,
            http_routes,
            applied_routes: Mutex::new(HashMap::new()),
            httproute_crd: Mutex::new(installed.then(|| (true, Instant::now()))),
            backoffs: Backoffs::default(),
        });
        let controller = match http_route_stream {
            Some(stream) => controller.owns_stream_with(stream, http_route_resource()),
            None => controller,
        };
        info!(
            namespace = ns.unwrap_or("*"),
            "starting OnlineEndpoint controller"
        );
        drive(controller, ctx, rt.concurrency, shutdown, reconcile).await;
    }
}
