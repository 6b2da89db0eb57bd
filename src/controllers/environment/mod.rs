//! The Environment controller: records every version an Environment holds in its status, so
//! `<name>:<version>` keeps resolving after `spec.version` moves on (Azure ML keeps every version
//! of an environment), and reports `Ready`. No children.
//!
//! Stages: [`status`] (pure: the version history and the condition) → patch status when it changed
//! → an Event when a version is registered.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Client, ResourceExt,
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        reflector::{self, reflector},
        watcher,
    },
};
use tracing::{info, info_span};

use crate::{
    api::{
        common::condition_types::READY,
        environment::{Environment, EnvironmentStatus, EnvironmentVersionRecord},
    },
    runtime::{
        backoff::{self, Backoffs},
        client::api,
        conditions, error_category,
        events::Events,
        metrics::Metrics,
        reconcile::{Panicked, Policy, ReconcileError, guarded},
    },
};

const CONTROLLER: &str = "environment";
/// Versions kept in status: enough for the runs a team pins, small enough for any object.
pub const MAX_VERSIONS: usize = 20;

/// Errors of the Environment controller.
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

/// Reason of `Ready` False when the spec changed under a recorded version.
pub const VERSION_CONFLICT: &str = "VersionConflict";

/// The environment's status (pure): the current version appended to the history when it is new,
/// the oldest dropped past [`MAX_VERSIONS`], and `Ready`. A version once recorded keeps its record
/// (a pinned `<name>:<version>` never changes): when the spec changes its variables, pull Secrets
/// or routes under the same version (the API server already refuses another image), the first
/// record stays and `Ready` is False with reason [`VERSION_CONFLICT`]. Also returns the version
/// registered now, if any.
pub fn status(env: &Environment, now: &Time) -> (EnvironmentStatus, Option<String>) {
    let mut s = env.status.clone().unwrap_or_default();
    let current = EnvironmentVersionRecord::of(&env.spec);
    let mut registered = None;
    let mut conflict = false;
    match s.versions.iter().find(|v| v.version == current.version) {
        Some(record) if record.same_content(&current) => {}
        Some(_) => conflict = true,
        None => {
            registered = Some(current.version.clone());
            s.versions.push(EnvironmentVersionRecord {
                registered_at: Some(now.clone()),
                ..current
            });
        }
    }
    if s.versions.len() > MAX_VERSIONS {
        let excess = s.versions.len() - MAX_VERSIONS;
        s.versions.drain(..excess);
    }
    let generation = env.metadata.generation;
    let (ready, reason, message) = if conflict {
        (
            false,
            VERSION_CONFLICT,
            format!(
                "version {v} was recorded with other environment variables, pull Secrets or routes; <name>:{v} keeps running the recorded ones: give the change a new spec.version",
                v = env.spec.version
            ),
        )
    } else {
        (
            true,
            "Registered",
            format!(
                "version {} (image {}) is current; {} version(s) resolvable by <name>:<version>",
                env.spec.version,
                env.spec.image,
                s.versions.len()
            ),
        )
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
    (s, registered)
}

/// Shared handles.
pub struct Ctx {
    pub client: Client,
    pub metrics: Metrics,
    pub events: Events,
    pub backoffs: Backoffs,
}

/// Reconciles one Environment.
#[tracing::instrument(skip_all, fields(namespace = env.namespace().as_deref().unwrap_or(""), name = %env.name_any()))]
pub async fn reconcile(env: Arc<Environment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let _timer = crate::runtime::reconcile::started(&ctx.metrics, CONTROLLER);
    let (new, registered) = status(&env, &Time(Timestamp::now()));
    if env.status.as_ref() == Some(&new) {
        return Ok(Action::await_change());
    }
    crate::runtime::status::patch_status(&ctx.client, &*env, &new)
        .await
        .map_err(Error::PatchStatus)?;
    let conflict = new
        .conditions
        .iter()
        .find(|c| c.type_ == READY && c.reason == VERSION_CONFLICT);
    if let Some(c) = conflict {
        ctx.events
            .publish(&*env, true, VERSION_CONFLICT, &c.message);
    }
    if let Some(version) = registered {
        ctx.events.publish(
            &*env,
            false,
            "VersionRegistered",
            &format!("version {version} (image {}) registered", env.spec.image),
        );
    }
    Ok(Action::await_change())
}

fn error_policy(env: Arc<Environment>, err: &Error, ctx: Arc<Ctx>) -> Action {
    let policy = Policy {
        controller: CONTROLLER,
        metrics: &ctx.metrics,
        backoffs: &ctx.backoffs,
        events: &ctx.events,
    };
    crate::runtime::reconcile::failed(policy, &*env, err)
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
    let api = api::<Environment>(&client, namespace.as_deref());
    let ctx = Arc::new(Ctx {
        client,
        metrics,
        events,
        backoffs: Backoffs::default(),
    });
    info!(
        namespace = namespace.as_deref().unwrap_or("*"),
        "starting Environment controller"
    );
    // Synced once the watch has listed everything (its InitDone), read off the stream: the
    // controller itself awaits the store, and a store wakes only one waiter.
    let (store, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(api, watcher::Config::default())
            .default_backoff()
            .inspect(move |e| {
                if matches!(e, Ok(watcher::Event::InitDone)) {
                    health.set_synced();
                }
            }),
    )
    .applied_objects();
    let results = Controller::for_stream(stream, store)
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(
            |env, ctx| async move {
                let key = backoff::key(&*env);
                guarded(&ctx.backoffs.clone(), key, reconcile(env, ctx)).await
            },
            error_policy,
            ctx,
        );
    crate::runtime::reconcile::drain(results, info_span!("environment")).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(yaml: &str) -> Environment {
        serde_yaml::from_str(yaml).unwrap()
    }

    const V1: &str = "apiVersion: mlcompute.io/v1alpha1\nkind: Environment\nmetadata: {name: torch, namespace: ns, generation: 1}\nspec: {image: 'pytorch/pytorch:2.4', version: '1'}\n";

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn each_new_version_is_recorded_once_and_old_ones_stay_resolvable() {
        let mut e = env(V1);
        let (s, registered) = status(&e, &at(1));
        assert_eq!(registered.as_deref(), Some("1"));
        assert_eq!(s.versions.len(), 1);
        assert!(
            s.conditions
                .iter()
                .any(|c| c.type_ == READY && c.status == "True")
        );
        e.status = Some(s);
        // Nothing new: the same status, nothing registered.
        let (again, registered) = status(&e, &at(2));
        assert_eq!(Some(&again), e.status.as_ref());
        assert_eq!(registered, None);

        e.spec.version = "2".into();
        e.spec.image = "pytorch/pytorch:2.5".into();
        let (s, registered) = status(&e, &at(3));
        assert_eq!(registered.as_deref(), Some("2"));
        e.status = Some(s);
        assert_eq!(e.held("1").unwrap().image, "pytorch/pytorch:2.4");
        assert_eq!(e.held("2").unwrap().image, "pytorch/pytorch:2.5");
        assert!(e.held("3").is_none());
        assert_eq!(e.versions_held(), ["1", "2"]);
    }

    #[test]
    fn a_change_under_the_same_version_keeps_the_first_record_and_history_is_bounded() {
        let mut e = env(V1);
        e.status = Some(status(&e, &at(1)).0);
        e.spec
            .environment_variables
            .insert("NCCL_DEBUG".into(), "WARN".into());
        let (s, registered) = status(&e, &at(5));
        assert_eq!(registered, None);
        assert_eq!(s.versions.len(), 1);
        assert!(
            s.versions[0].environment_variables.is_empty(),
            "the first record of version 1 stays"
        );
        assert_eq!(s.versions[0].registered_at, Some(at(1)));
        let ready = s.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", VERSION_CONFLICT)
        );
        e.status = Some(s);
        // What <name>:1 runs is the record, not the changed spec.
        assert!(e.held("1").unwrap().environment_variables.is_empty());
        // Moving to a new version clears the conflict.
        e.spec.version = "1b".into();
        let (s, registered) = status(&e, &at(6));
        assert_eq!(registered.as_deref(), Some("1b"));
        assert!(
            s.conditions
                .iter()
                .any(|c| c.type_ == READY && c.status == "True")
        );
        e.spec.environment_variables.clear();

        for v in 2..=30 {
            e.spec.environment_variables.clear();
            e.spec.version = v.to_string();
            e.status = Some(status(&e, &at(v)).0);
        }
        let versions = &e.status.as_ref().unwrap().versions;
        assert_eq!(versions.len(), MAX_VERSIONS);
        assert_eq!(versions.first().unwrap().version, "11");
        assert_eq!(versions.last().unwrap().version, "30");
    }
}
