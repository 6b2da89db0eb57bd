//! The BatchJob controller: one invocation of a batch endpoint becomes an Indexed batch/v1 Job whose
//! instances run `mlcompute batch-driver` over their shard of the input.
//!
//! Stages: [`resolve`] (endpoint → deployment → environment and instance type, from caches; pure) →
//! [`status::decide`] (pure: create, cancel, phase, counters) → apply (progress ConfigMap,
//! ServiceAccount, Role, RoleBinding, Job: create once; delete on cancel) → status (written only when
//! it changed) → Event on a phase change.
//!
//! Progress: each driver Pod's relay sidecar writes its instance's counters into one key of the job's
//! progress ConfigMap `<job>-progress` ([`crate::contract::progress`]); the controller watches those
//! ConfigMaps (its own label-filtered cache) and sums the checked entries into status. The Pod's
//! ServiceAccount may get and patch that one ConfigMap and nothing else; only the relay mounts its
//! token ([`build`]).
//! Outcome: the Job's conditions, and the driver's exit codes ([`crate::contract::exit_codes`]: 3
//! error threshold, 4 the scoring script cannot start, 2 bad settings), which the Job's pod failure
//! policy turns into an immediate failure instead of retries.
//!
//! Operator RBAC this needs (for the chart): `batch/jobs` create, delete, get, list, watch; `pods` get,
//! list, watch; `events` (core) list, watch; `configmaps` get, list, watch, create, patch;
//! `serviceaccounts` create; `rbac.authorization.k8s.io` `roles` and `rolebindings` create (the
//! operator must itself hold configmaps get/patch to grant them); `batchjobs/status`,
//! `batchendpoints/status`, `batchdeployments/status` patch; `events` create, patch.

pub mod build;
pub mod error;
pub mod resolve;
pub mod status;

use std::sync::Arc;

use k8s_openapi::api::rbac::v1::Role;
use k8s_openapi::{
    api::{
        batch::v1::Job,
        core::v1::{ConfigMap, Event, Pod},
    },
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        Controller,
        controller::Action,
        reflector::{ObjectRef, Store},
    },
};
use serde::{Serialize, de::DeserializeOwned};
use tracing::info;

pub use error::Error;

use self::{resolve::JobResolution, status::Plan};
use crate::{
    api::{
        batch_deployment::BatchDeployment, batch_endpoint::BatchEndpoint, batch_job::BatchJob,
        environment::Environment, instance_type::InstanceType,
    },
    controllers::batch::deployment::resolve_from_stores,
    runtime::{
        apply::{ChildError, controlled_by, create_owned, delete_owned},
        backoff::Backoffs,
        caches::MANAGED_SELECTOR,
        drive::drive,
        events::Events,
        handles::Runtime,
        metrics::Metrics,
        refusal,
        synced::Synced,
    },
};

const CONTROLLER: &str = "batchjob";

/// Operator flags of the batch controllers.
#[derive(Clone, Debug, clap::Args)]
pub struct BatchControllerSettings {
    /// Image holding the `mlcompute` binary; an init container copies it into each batch driver Pod,
    /// whose main container runs the deployment's (Python) image.
    #[arg(long, env = "MLCOMPUTE_DRIVER_IMAGE", default_value = concat!("ghcr.io/mlcompute/mlcompute:", env!("CARGO_PKG_VERSION")))]
    pub driver_image: String,
    /// Base URL of the router, for BatchEndpoints' `status.invokeUri` (empty: the path alone).
    #[arg(long, env = "MLCOMPUTE_ROUTER_URL", default_value = "")]
    pub router_url: String,
}

/// Caches and shared handles.
pub struct Ctx {
    pub client: Client,
    pub endpoints: Store<BatchEndpoint>,
    pub deployments: Store<BatchDeployment>,
    pub environments: Store<Environment>,
    pub instance_types: Store<InstanceType>,
    pub jobs: Store<Job>,
    pub pods: Store<Pod>,
    /// The Job controller's `FailedCreate` Events (admission refused a driver Pod).
    pub failed_creates: Store<Event>,
    pub progress: Store<ConfigMap>,
    /// The jobs' driver Roles (to narrow those an older operator made).
    pub roles: Store<Role>,
    pub metrics: Metrics,
    pub events: Events,
    pub driver_image: String,
    pub backoffs: Backoffs,
    /// Whether every cache above holds its first list.
    pub synced: Synced,
}

/// Reconciles one BatchJob.
#[tracing::instrument(skip_all, fields(namespace = bj.namespace().as_deref().unwrap_or(""), name = %bj.name_any()))]
pub async fn reconcile(bj: Arc<BatchJob>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let _timer = crate::runtime::reconcile::started(&ctx.metrics, CONTROLLER);
    let ns = bj.namespace().ok_or(Error::MissingNamespace)?;
    // Decide only on complete caches: after a restart an empty cache would requeue a running job
    // as EndpointNotFound and plan its Job again.
    if !ctx.synced.wait().await {
        tracing::warn!("caches not synced yet; retrying");
        return Ok(Action::requeue(std::time::Duration::from_secs(1)));
    }

    let resolution = resolve_job(&bj, &ctx, &ns);
    let job = own_job(&bj, &ctx.jobs, &ns);
    let pods = own_pods(&ctx.pods, &ns, job.as_deref());
    let pod_refs: Vec<&Pod> = pods.iter().map(|p| &**p).collect();
    let refused = pods_refused(&ctx.failed_creates, job.as_deref());
    let progress = owned(&bj, &ctx.progress, &build::progress_name(&bj), &ns);
    let plan = status::decide(
        &bj,
        &resolution,
        status::Observed {
            job: job.as_deref(),
            pods: &pod_refs,
            pods_refused: refused.as_deref(),
            progress: progress.as_deref(),
        },
        Time(Timestamp::now()),
    );

    // Status first: the deployment and output location are on record before the Job exists. A
    // refusal on record stays until a write succeeds (no flip-flop while it backs off).
    let old = bj
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or(&[]);
    let mut status = plan.status.clone();
    if plan.create {
        refusal::carry(old, &mut status.conditions);
    }
    if bj.status.as_ref() != Some(&status) {
        crate::runtime::status::patch_status(&ctx.client, &*bj, &status)
            .await
            .map_err(Error::PatchStatus)?;
    }
    if let Err(err) = apply(&bj, &ctx, &ns, &resolution, &plan).await {
        let r = err.refusal().ok_or(err)?;
        r.mark(
            old,
            &mut status.conditions,
            bj.metadata.generation,
            &Time(Timestamp::now()),
        );
        if bj.status.as_ref() != Some(&status) {
            crate::runtime::status::patch_status(&ctx.client, &*bj, &status)
                .await
                .map_err(Error::PatchStatus)?;
        }
        if !r.already_shown(old) {
            ctx.events.publish(&*bj, true, r.reason, &r.message);
        }
        return Err(r.into());
    }
    if let Some(t) = &plan.transition {
        ctx.events.publish(&*bj, t.warning, &t.reason, &t.message);
    }
    Ok(Action::await_change())
}

fn resolve_job(bj: &BatchJob, ctx: &Ctx, ns: &str) -> JobResolution {
    let endpoint = ctx
        .endpoints
        .get(&ObjectRef::new(&bj.spec.endpoint_name).within(ns));
    resolve::resolve(bj, endpoint.as_deref(), |name| {
        let d = ctx.deployments.get(&ObjectRef::new(name).within(ns))?;
        let r = resolve_from_stores(&d, &ctx.endpoints, &ctx.environments, &ctx.instance_types);
        Some(((*d).clone(), r))
    })
}

/// The job's Job from the cache, if it is ours (owner UID).
fn own_job(bj: &BatchJob, jobs: &Store<Job>, ns: &str) -> Option<Arc<Job>> {
    owned(bj, jobs, &bj.name_any(), ns)
}

/// The cached child `name`, if it is ours (owner UID): a same-named object someone else made is
/// neither read nor trusted.
fn owned<K>(bj: &BatchJob, store: &Store<K>, name: &str, ns: &str) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone,
{
    let uid = bj.uid()?;
    store
        .get(&ObjectRef::new(name).within(ns))
        .filter(|o| o.owner_references().iter().any(|r| r.uid == uid))
}

/// The Job's Pods from the cache, matched by the Job's UID label (set by the Job controller).
fn own_pods(pods: &Store<Pod>, ns: &str, job: Option<&Job>) -> Vec<Arc<Pod>> {
    let Some(uid) = job.and_then(|j| j.uid()) else {
        return Vec::new();
    };
    pods.state()
        .into_iter()
        .filter(|p| {
            p.namespace().as_deref() == Some(ns)
                && p.labels().get("batch.kubernetes.io/controller-uid") == Some(&uid)
        })
        .collect()
}

/// The message of the newest `FailedCreate` Event of the job's Job: why its Pods are refused.
fn pods_refused(events: &Store<Event>, job: Option<&Job>) -> Option<String> {
    let uid = job?.uid()?;
    events
        .state()
        .into_iter()
        .filter(|e| e.involved_object.uid.as_deref() == Some(uid.as_str()))
        .max_by_key(|e| {
            e.last_timestamp
                .as_ref()
                .map(|t| t.0)
                .or(e.event_time.as_ref().map(|t| t.0))
        })
        .and_then(|e| e.message.clone())
}

/// Creates a write-once child; one of the same name that is not this job's is a conflict.
async fn create<K>(client: &Client, ns: &str, obj: &K) -> Result<(), ChildError>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    create_owned(&api, obj).await.map(|_| ())
}

/// Creates the driver's account and the Job, or deletes the Job, as the plan says.
async fn apply(
    bj: &BatchJob,
    ctx: &Ctx,
    ns: &str,
    resolution: &JobResolution,
    plan: &Plan,
) -> Result<(), Error> {
    // Only this job's own Job (by owner), and only that very object (UID precondition).
    if plan.delete_job
        && let Some(uid) = own_job(bj, &ctx.jobs, ns).and_then(|j| j.uid())
    {
        let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
        delete_owned(&jobs, &bj.name_any(), &uid)
            .await
            .map_err(|source| Error::DeleteJob {
                name: bj.name_any(),
                source,
            })?;
    }
    narrow_driver_role(bj, ctx, ns).await?;
    let (true, JobResolution::Ready(target)) = (plan.create, resolution) else {
        return Ok(());
    };
    let account = |what: &'static str| {
        let name = build::driver_account_name(bj);
        move |source| Error::CreateAccount { what, name, source }
    };
    create(&ctx.client, ns, &build::progress_config_map(bj))
        .await
        .map_err(|source| Error::CreateProgress {
            name: build::progress_name(bj),
            source,
        })?;
    create(&ctx.client, ns, &build::service_account(bj))
        .await
        .map_err(account("ServiceAccount"))?;
    create(&ctx.client, ns, &build::role(bj))
        .await
        .map_err(account("Role"))?;
    create(&ctx.client, ns, &build::role_binding(bj))
        .await
        .map_err(account("RoleBinding"))?;
    create(&ctx.client, ns, &build::job(bj, target, &ctx.driver_image))
        .await
        .map_err(|source| Error::CreateJob {
            name: bj.name_any(),
            source,
        })?;
    ctx.metrics
        .pods_created
        .with_label_values(&[CONTROLLER])
        .inc_by(u64::try_from(build::instance_count(bj, target)).unwrap_or(0));
    Ok(())
}

/// Rewrites a driver Role of this job whose rules differ from [`build::role`]'s: BatchJobs made
/// before the progress ConfigMap kept a Role granting `pods get,patch` on the whole namespace to
/// the token of Pods that run user code; this takes that grant away on the first reconcile after
/// an upgrade (and undoes any later edit). Only a Role this job controls is touched.
async fn narrow_driver_role(bj: &BatchJob, ctx: &Ctx, ns: &str) -> Result<(), Error> {
    let desired = build::role(bj);
    let name = build::driver_account_name(bj);
    let Some(current) = ctx.roles.get(&ObjectRef::new(&name).within(ns)) else {
        return Ok(());
    };
    if !controlled_by(&*current, bj) || current.rules == desired.rules {
        return Ok(());
    }
    let roles: Api<Role> = Api::namespaced(ctx.client.clone(), ns);
    let patch = serde_json::json!({ "rules": desired.rules });
    roles
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::CreateAccount {
            what: "Role",
            name: name.clone(),
            source: source.into(),
        })?;
    info!(role = %name, "driver Role narrowed to the job's progress ConfigMap");
    Ok(())
}

crate::runtime::drive::context!(Ctx, CONTROLLER);

/// Asks for the controller's caches now and returns the loop that runs it until `shutdown`.
pub fn controller(
    rt: Runtime,
    driver_image: String,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let (ns, managed) = (rt.namespace.as_deref(), Some(MANAGED_SELECTOR));
    let jobs = rt.caches.namespaced::<Job>(ns, managed);
    let pods = rt.caches.namespaced::<Pod>(ns, managed);
    // A Job's Pods refused by admission: the Job (named as its BatchJob) says so in an Event.
    let failed_creates = rt.caches.namespaced_fields::<Event>(
        ns,
        None,
        Some("involvedObject.kind=Job,reason=FailedCreate"),
    );
    let progress = rt.caches.namespaced::<ConfigMap>(ns, managed);
    let roles = rt.caches.namespaced::<Role>(ns, managed);
    let endpoints = rt.caches.namespaced::<BatchEndpoint>(ns, None);
    let deployments = rt.caches.namespaced::<BatchDeployment>(ns, None);
    let environments = rt.caches.namespaced::<Environment>(ns, None);
    let instance_types = rt.caches.cluster::<InstanceType>(None);
    let batch_jobs = rt.caches.namespaced::<BatchJob>(ns, None);
    let store = batch_jobs.store();
    let waiting_in = move |ns: Option<String>| {
        store
            .state()
            .into_iter()
            .filter(|j| (ns.is_none() || j.namespace() == ns) && status::waiting(j))
            .map(|j| ObjectRef::from_obj(&*j))
            .collect::<Vec<_>>()
    };
    let (w1, w2, w3, w4) = (
        waiting_in.clone(),
        waiting_in.clone(),
        waiting_in.clone(),
        waiting_in,
    );
    let ctx = Arc::new(Ctx {
        client: rt.client.clone(),
        endpoints: endpoints.store(),
        deployments: deployments.store(),
        environments: environments.store(),
        instance_types: instance_types.store(),
        jobs: jobs.store(),
        pods: pods.store(),
        failed_creates: failed_creates.store(),
        progress: progress.store(),
        roles: roles.store(),
        metrics: rt.metrics.clone(),
        events: rt.events.clone(),
        driver_image,
        backoffs: Backoffs::default(),
        synced: rt.synced.clone(),
    });
    let controller = Controller::for_stream(batch_jobs.changes(), batch_jobs.store())
        .owns_stream(jobs.changes())
        .owns_stream(progress.changes())
        .owns_stream(roles.changes())
        // Driver Pods carry the BatchJob's name as a label (they are owned by the Job).
        .watches_stream(pods.changes(), |p: Pod| {
            let ns = p.namespace().unwrap_or_default();
            status::owner_name(&p).map(|name| ObjectRef::new(&name).within(&ns))
        })
        .watches_stream(failed_creates.changes(), |e: Event| {
            let ns = e.involved_object.namespace.clone()?;
            let name = e.involved_object.name.clone()?;
            Some(ObjectRef::new(&name).within(&ns))
        })
        // What a queued job waits for appearing or changing wakes it.
        .watches_stream(endpoints.changes(), move |o: BatchEndpoint| {
            w1(o.namespace())
        })
        .watches_stream(deployments.changes(), move |o: BatchDeployment| {
            w2(o.namespace())
        })
        .watches_stream(environments.changes(), move |o: Environment| {
            w3(o.namespace())
        })
        .watches_stream(instance_types.changes(), move |_: InstanceType| w4(None));
    async move {
        info!(
            namespace = rt.namespace.as_deref().unwrap_or("*"),
            "starting BatchJob controller"
        );
        drive(controller, ctx, rt.concurrency, shutdown, reconcile).await;
    }
}
