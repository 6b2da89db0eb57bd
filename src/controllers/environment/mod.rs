//! The Environment controller: records every version an Environment holds in its status, so
//! `<name>:<version>` keeps resolving after `spec.version` moves on (Azure ML keeps every version
//! of an environment), and reports `Ready`. No children.
//!
//! Stages: [`status`] (pure: the version history and the condition) → patch status when it changed
//! → an Event when a version is registered.

use std::sync::Arc;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Client, ResourceExt,
    runtime::{Controller, controller::Action},
};
use tracing::info;

use crate::{
    api::{
        common::condition_types::READY,
        environment::{Environment, EnvironmentStatus, EnvironmentVersionRecord},
    },
    runtime::{
        backoff::Backoffs, conditions, drive::drive, events::Events, handles::Runtime,
        metrics::Metrics,
    },
};

const CONTROLLER: &str = "environment";
/// Versions kept in status: enough for the runs a team pins, small enough for any object.
pub const MAX_VERSIONS: usize = 20;

/// Its only write is its status.
pub use crate::runtime::reconcile::StatusError as Error;

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
    // The API server cannot refuse this change (it would have to compare with the history): the
    // spec is invalid and stays so until it changes, so Stalled (kstatus Failed), with why.
    let p = if conflict {
        conditions::Progress::stalled(
            VERSION_CONFLICT,
            format!(
                "version {v} was recorded with other environment variables, pull Secrets or routes; <name>:{v} keeps running the recorded ones: give the change a new spec.version",
                v = env.spec.version
            ),
        )
    } else {
        conditions::Progress::done(
            "Registered",
            format!(
                "version {} (image {}) is current; {} version(s) resolvable by <name>:<version>",
                env.spec.version,
                env.spec.image,
                s.versions.len()
            ),
        )
    };
    conditions::progress(&mut s.conditions, &p, generation, now);
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

crate::runtime::drive::context!(Ctx, CONTROLLER);

/// Asks for the controller's caches now and returns the loop that runs it until `shutdown`.
pub fn controller(
    rt: Runtime,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let ns = rt.namespace.as_deref();
    let environments = rt.caches.namespaced::<Environment>(ns, None);
    let ctx = Arc::new(Ctx {
        client: rt.client.clone(),
        metrics: rt.metrics.clone(),
        events: rt.events.clone(),
        backoffs: Backoffs::default(),
    });
    let controller = Controller::for_stream(environments.changes(), environments.store());
    async move {
        info!(
            namespace = rt.namespace.as_deref().unwrap_or("*"),
            "starting Environment controller"
        );
        drive(controller, ctx, rt.concurrency, shutdown, reconcile).await;
    }
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
        // kstatus Failed, with why (it shows the Stalled message).
        let stalled = s.conditions.iter().find(|c| c.type_ == "Stalled").unwrap();
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", VERSION_CONFLICT)
        );
        assert!(
            stalled
                .message
                .contains("give the change a new spec.version")
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
        assert!(!s.conditions.iter().any(|c| c.type_ == "Stalled"));
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
