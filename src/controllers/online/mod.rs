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

use kube::{
    Resource,
    runtime::reflector::{self, Store},
};

/// The cached object `name` in `namespace`.
pub(crate) fn cached<K>(store: &Store<K>, namespace: &str, name: &str) -> Option<std::sync::Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone,
{
    store.get(&reflector::ObjectRef::new(name).within(namespace))
}

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
    // Reconciling and Stalled restate Ready and Progressing for kstatus: no Events of their own.
    use crate::runtime::conditions::{RECONCILING, STALLED};
    new.iter()
        .filter(|c| !skip.contains(&c.type_.as_str()))
        .filter(|c| c.type_ != RECONCILING && c.type_ != STALLED)
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
