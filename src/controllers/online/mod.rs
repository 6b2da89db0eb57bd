//! Online endpoints: the OnlineDeployment controller (a Deployment, a Service and an optional
//! HorizontalPodAutoscaler per deployment) and the OnlineEndpoint controller (keys, the routing
//! table for the built-in router, and a Gateway API HTTPRoute).
//!
//! Both are staged like the TrainingJob controller: read from caches → resolve → pure builders →
//! server-side apply of what changed (a hash of the desired object in an annotation makes an
//! unchanged reconcile write nothing) → status written only when it changed.

pub mod deployment;
pub mod endpoint;
pub mod resolve;

use futures::Stream;
use kube::{
    Api, Resource, ResourceExt,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store, reflector},
        watcher,
    },
};
use serde::de::DeserializeOwned;

pub(crate) use crate::runtime::client::api;

/// A reflector cache of `api` and the stream that feeds it (touched objects, deletions
/// included, so a deleted child wakes its owner). Managed fields are dropped to save memory.
pub(crate) fn cache<K>(
    api: Api<K>,
    config: watcher::Config,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(api, config).default_backoff().modify(|o: &mut K| {
            o.managed_fields_mut().clear();
        }),
    )
    .touched_objects();
    (store, stream)
}

/// The cached object `name` in `namespace`.
pub(crate) fn cached<K>(store: &Store<K>, namespace: &str, name: &str) -> Option<std::sync::Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone,
{
    store.get(&reflector::ObjectRef::new(name).within(namespace))
}

pub(crate) use crate::runtime::synced::{Synced, ready};

/// A condition that changed (status or reason), for an Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub type_: String,
    pub ok: bool,
    pub reason: String,
    pub message: String,
}

/// The conditions of `new` whose status or reason differ from `old`, except types in `skip`.
pub fn transitions(
    old: &[crate::api::Condition],
    new: &[crate::api::Condition],
    skip: &[&str],
) -> Vec<Transition> {
    new.iter()
        .filter(|c| !skip.contains(&c.type_.as_str()))
        .filter(|c| {
            !old.iter()
                .any(|p| p.type_ == c.type_ && p.status == c.status && p.reason == c.reason)
        })
        .map(|c| Transition {
            type_: c.type_.clone(),
            ok: c.status == "True",
            reason: c.reason.clone(),
            message: c.message.clone(),
        })
        .collect()
}

/// Publishes a transition as an Event on `obj` (Warning when the condition is False).
pub(crate) fn publish<K>(events: &crate::runtime::events::Events, obj: &K, t: &Transition)
where
    K: Resource<DynamicType = ()>,
{
    events.publish(
        obj,
        !t.ok,
        &t.reason,
        &format!("{}: {}", t.type_, t.message),
    );
}
