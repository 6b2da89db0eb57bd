//! The TrainingJob controller: one Pod per instance (and an MPI launcher), a headless Service for
//! rendezvous, Azure ML's phases in status.
//!
//! Stages: `resolve` (dereference the Environment and InstanceType) → `lifecycle::decide` (pure:
//! what to create, delete and report) → `children` (pure Pod and Service builders) → apply
//! (create and delete through the API) → status (written only when it changed).

pub mod children;
pub mod data;
pub mod error;
pub mod frameworks;
pub mod lifecycle;
pub mod observe;
pub mod resolve;
pub mod topology;

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::{
    api::core::v1::{ConfigMap, Pod, Secret, Service},
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt,
    api::DeleteParams,
    runtime::{
        Controller,
        controller::Action,
        reflector::{ObjectRef, Store},
        scheduler::{ScheduleRequest, debounced_scheduler},
    },
};
use tracing::info;

pub use error::Error;

use self::{lifecycle::Plan, resolve::Resolution, topology::Instance};
use crate::{
    api::{environment::Environment, instance_type::InstanceType, training_job::TrainingJob},
    runtime::{
        apply::{check_owner, create_owned, delete_if_owned},
        backoff::Backoffs,
        caches::MANAGED_SELECTOR,
        drive::drive,
        events::Events,
        handles::Runtime,
        is_not_found,
        metrics::Metrics,
        refusal,
        synced::Synced,
    },
};

const CONTROLLER: &str = "trainingjob";

/// What reconciles share: the client, caches of the objects jobs reference, metrics, Events.
pub struct Ctx {
    pub client: Client,
    pub pods: Store<Pod>,
    pub environments: Store<Environment>,
    pub instance_types: Store<InstanceType>,
    pub metrics: Metrics,
    pub events: Events,
    /// True once the process's caches have synced.
    pub synced: Synced,
    pub backoffs: Backoffs,
}

/// Reconciles one TrainingJob. Reads like the stages it runs.
#[tracing::instrument(skip_all, fields(namespace = job.namespace().as_deref().unwrap_or(""), name = %job.name_any()))]
pub async fn reconcile(job: Arc<TrainingJob>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let timer = crate::runtime::reconcile::started(&ctx.metrics, CONTROLLER);
    let ns = job.namespace().ok_or(Error::MissingNamespace)?;
    // Decide only on complete caches: a Pod missing from a cache still filling up would be created
    // again, and a status computed from it would be written for nothing.
    if !ctx.synced.wait().await {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }

    let resolution = resolve::resolve(&job, &ctx.environments, &ctx.instance_types);
    let pods = own_pods(&job, &ctx.pods);
    let plan = lifecycle::decide(&job, &resolution, &pods, Timestamp::now());
    if plan.stale {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }

    let first_attempt =
        plan.attempt == 1 && job.status.as_ref().and_then(|s| s.attempts).unwrap_or(0) == 0;
    let applied = if first_attempt && !plan.create.is_empty() {
        // Starting: create the Pods only. The Pods' own events bring the next reconcile, which
        // adopts them as attempt 1 and writes the status then: one status write fewer per job,
        // which is what a burst of thousands of jobs costs the API server most.
        apply(&job, &ctx, &ns, &resolution, &plan).await
    } else {
        // Status first: a retry is on record before its Pods change, so a restarted operator
        // never counts an attempt twice or forgets one. A refusal on record stays until the
        // Pods are created (no flip-flop of the status while the write backs off).
        let mut status = plan.status.clone();
        if !plan.create.is_empty() {
            carry_refusal(job.status.as_ref(), &mut status);
        }
        write_status(&job, &ctx, &status).await?;
        apply(&job, &ctx, &ns, &resolution, &plan).await
    };
    if let Err(err) = applied {
        return Err(refused(&job, &ctx, plan, err).await);
    }
    if let Some(t) = &plan.transition {
        ctx.events.publish(&*job, t.warning, &t.reason, &t.message);
    }
    timer.observe_duration();
    Ok(plan
        .requeue_after
        .map(Action::requeue)
        .unwrap_or_else(Action::await_change))
}

/// The job's Pods from the cache, matched by owner UID (labels can be edited, owners cannot).
fn own_pods(job: &TrainingJob, pods: &Store<Pod>) -> Vec<observe::ObservedPod> {
    let uid = job.uid();
    let ns = job.namespace();
    pods.state()
        .iter()
        .filter(|p| {
            p.namespace() == ns
                && p.owner_references()
                    .iter()
                    .any(|o| Some(&o.uid) == uid.as_ref())
        })
        .map(|p| observe::observe(p))
        .collect()
}

/// Keeps a refusal shown in `old` in `new` (conditions, reason and message).
fn carry_refusal(
    old: Option<&crate::api::training_job::TrainingJobStatus>,
    new: &mut crate::api::training_job::TrainingJobStatus,
) {
    let Some(old) = old else { return };
    let before = new.conditions.clone();
    refusal::carry(&old.conditions, &mut new.conditions);
    if new.conditions != before {
        new.reason = old.reason.clone();
        new.message = old.message.clone();
    }
}

/// A child write failed. When the API server (or the ownership check) refused it, the job's status
/// says so with the server's message, once as a Warning Event, and the refusal is the error (so
/// the error policy waits for a change or backs off); other errors are returned as they are.
async fn refused(job: &TrainingJob, ctx: &Ctx, mut plan: Plan, err: Error) -> Error {
    let Some(refusal) = err.refusal() else {
        return err;
    };
    let old = job
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or(&[]);
    let shown = refusal.already_shown(old);
    refusal.mark(
        old,
        &mut plan.status.conditions,
        job.metadata.generation,
        &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
    );
    plan.status.reason = Some(refusal.reason.to_string());
    plan.status.message = Some(refusal.message.clone());
    if let Err(e) = write_status(job, ctx, &plan.status).await {
        return e;
    }
    if !shown {
        ctx.events
            .publish(job, true, refusal.reason, &refusal.message);
    }
    Error::Refused(refusal)
}

async fn write_status(
    job: &TrainingJob,
    ctx: &Ctx,
    status: &crate::api::training_job::TrainingJobStatus,
) -> Result<(), Error> {
    if job.status.as_ref() == Some(status) {
        return Ok(());
    }
    crate::runtime::status::patch_status(&ctx.client, job, status)
        .await
        .map_err(Error::PatchStatus)
}

/// Creates and deletes what the plan says. Creates that find the object already there are fine:
/// the cache was behind.
async fn apply(
    job: &TrainingJob,
    ctx: &Ctx,
    ns: &str,
    resolution: &Resolution,
    plan: &Plan,
) -> Result<(), Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    for name in &plan.delete {
        match pods.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(source) => {
                return Err(Error::DeletePod {
                    pod: name.clone(),
                    source,
                });
            }
        }
    }
    if plan.ttl_expired {
        delete_side_objects(job, ctx, ns).await?;
    }
    let Resolution::Ready(resolved) = resolution else {
        return Ok(());
    };
    if plan.create.is_empty() {
        return Ok(());
    }
    let all = topology::instances(job);
    create_side_objects(job, ctx, ns, &all).await?;
    for inst in &plan.create {
        create_pod(
            ctx,
            &pods,
            children::pod(job, resolved, &all, inst, plan.attempt),
        )
        .await?;
    }
    Ok(())
}

async fn create_pod(ctx: &Ctx, pods: &Api<Pod>, pod: Pod) -> Result<(), Error> {
    match create_owned(pods, &pod).await {
        Ok(created) => {
            if created {
                ctx.metrics
                    .pods_created
                    .with_label_values(&[CONTROLLER])
                    .inc();
            }
            Ok(())
        }
        Err(source) => Err(Error::CreatePod {
            pod: pod.name_any(),
            source,
        }),
    }
}

/// The headless Service and, for MPI, the hostfile and SSH keys; created with the first Pods.
async fn create_side_objects(
    job: &TrainingJob,
    ctx: &Ctx,
    ns: &str,
    all: &[Instance],
) -> Result<(), Error> {
    if topology::needs_service(job) {
        let services: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
        create_owned(&services, &children::service(job))
            .await
            .map_err(Error::CreateService)?;
    }
    let is_mpi = job.spec.distribution.as_ref().map(|d| d.type_)
        == Some(crate::api::training_job::DistributionType::Mpi);
    if is_mpi {
        let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
        create_owned(&cms, &children::mpi_hostfile(job, all))
            .await
            .map_err(Error::CreateMpiConfig)?;
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
        // Keys are made once: an existing Secret of ours keeps the pair the running Pods already
        // have; one of somebody else's is never read or written.
        let name = format!("{}-mpi-ssh", job.name_any());
        match secrets
            .get_opt(&name)
            .await
            .map_err(|e| Error::CreateMpiConfig(e.into()))?
        {
            Some(existing) => {
                let (private, public) = (String::new(), String::new());
                check_owner(&existing, &children::mpi_ssh_secret(job, private, public))
                    .map_err(Error::CreateMpiConfig)?;
            }
            None => {
                let (private, public) = ssh_keypair()?;
                create_owned(&secrets, &children::mpi_ssh_secret(job, private, public))
                    .await
                    .map_err(Error::CreateMpiConfig)?;
            }
        }
    }
    Ok(())
}

/// Deletes the rendezvous Service once the job's TTL expired: only if the job controls it (a
/// user's Service of the same name stays).
async fn delete_side_objects(job: &TrainingJob, ctx: &Ctx, ns: &str) -> Result<(), Error> {
    let Some(uid) = job.uid() else {
        return Ok(());
    };
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
    delete_if_owned(&services, &job.name_any(), &uid)
        .await
        .map_err(Error::DeleteService)
}

/// An Ed25519 key pair in OpenSSH format.
fn ssh_keypair() -> Result<(String, String), Error> {
    use rand_core::OsRng;
    use ssh_key::{Algorithm, LineEnding, PrivateKey};
    let key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519)
        .map_err(|e| Error::GenerateSshKey(e.to_string()))?;
    let private = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| Error::GenerateSshKey(e.to_string()))?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| Error::GenerateSshKey(e.to_string()))?;
    Ok((private.to_string(), public))
}

crate::runtime::drive::context!(Ctx, CONTROLLER);

/// Asks for the controller's caches now and returns the loop that runs it until `shutdown`.
pub fn controller(
    rt: Runtime,
    debounce: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    // Caches: the controller reads Pods, Environments and InstanceTypes from memory, never the API.
    let ns = rt.namespace.as_deref();
    let pods = rt.caches.namespaced::<Pod>(ns, Some(MANAGED_SELECTOR));
    let environments = rt.caches.namespaced::<Environment>(ns, None);
    let instance_types = rt.caches.cluster::<InstanceType>(None);
    let jobs = rt.caches.namespaced::<TrainingJob>(ns, None);
    let ctx = Arc::new(Ctx {
        client: rt.client.clone(),
        pods: pods.store(),
        environments: environments.store(),
        instance_types: instance_types.store(),
        metrics: rt.metrics.clone(),
        events: rt.events.clone(),
        synced: rt.synced.clone(),
        backoffs: Backoffs::default(),
    });
    // Only Pod changes are debounced: a short debounce folds a burst of them (scheduled, started,
    // ready, on every instance) into one reconcile per job, while a new or changed job is
    // reconciled at once (a controller-wide debounce delayed every new job's Pods by its length).
    let pod_changes = debounced_scheduler(
        pods.changes().filter_map(|pod| async move {
            let pod = pod.ok()?;
            owner_job(&pod).map(|job| ScheduleRequest {
                message: job,
                run_at: tokio::time::Instant::now(),
            })
        }),
        debounce,
    );
    let (jobs_for_envs, jobs_for_its) = (jobs.store(), jobs.store());
    let controller = Controller::for_stream(jobs.changes(), jobs.store())
        .reconcile_on(pod_changes)
        // A new or changed Environment or InstanceType wakes the jobs waiting for it.
        .watches_stream(environments.changes(), move |env: Environment| {
            let ns = env.namespace();
            jobs_for_envs
                .state()
                .into_iter()
                .filter(move |j| j.namespace() == ns && waiting(j))
                .map(|j| ObjectRef::from_obj(&*j))
                .collect::<Vec<_>>()
        })
        .watches_stream(instance_types.changes(), move |_it: InstanceType| {
            jobs_for_its
                .state()
                .into_iter()
                .filter(|j| waiting(j))
                .map(|j| ObjectRef::from_obj(&*j))
                .collect::<Vec<_>>()
        });
    let (job_store, metrics) = (jobs.store(), rt.metrics.clone());
    async move {
        info!(
            namespace = rt.namespace.as_deref().unwrap_or("*"),
            "starting TrainingJob controller"
        );
        tokio::spawn(count_phases(job_store, metrics));
        drive(controller, ctx, rt.concurrency, shutdown, reconcile).await;
    }
}

/// The TrainingJob that controls `pod`, if any.
fn owner_job(pod: &Pod) -> Option<ObjectRef<TrainingJob>> {
    let owner = pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == "TrainingJob")?;
    let job = ObjectRef::new(&owner.name);
    Some(match pod.namespace() {
        Some(ns) => job.within(&ns),
        None => job,
    })
}

/// Keeps the `objects_by_phase{kind="TrainingJob"}` gauge current, from the cache (no API reads).
async fn count_phases(jobs: Store<TrainingJob>, metrics: Metrics) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let mut counts: std::collections::BTreeMap<String, i64> = [
            "Queued",
            "Starting",
            "Running",
            "Completed",
            "Failed",
            "Canceled",
        ]
        .into_iter()
        .map(|p| (p.to_string(), 0))
        .collect();
        for job in jobs.state() {
            let phase = job
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .map(|p| format!("{p:?}"))
                .unwrap_or_else(|| "Queued".into());
            *counts.entry(phase).or_default() += 1;
        }
        for (phase, n) in counts {
            metrics
                .objects_by_phase
                .with_label_values(&["TrainingJob", &phase])
                .set(n);
        }
    }
}

/// Whether a job has not started yet (so a referenced object appearing may unblock it).
fn waiting(job: &TrainingJob) -> bool {
    job.status.as_ref().and_then(|s| s.attempts).unwrap_or(0) == 0
}

#[cfg(test)]
mod mock_tests;
#[cfg(test)]
mod tests;
