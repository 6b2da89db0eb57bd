//! The labels every object the operator creates carries, which other processes select on: the
//! router (keys Secrets, routing ConfigMaps, EndpointSlices), the CLI (`logs`, `batch logs`) and
//! the operator's own watches.
//!
//! `runtime::children` builds the labels of a child from these; nothing else spells them.

use kube::Resource;

/// Field manager for server-side apply, and `app.kubernetes.io/managed-by` value.
pub const MANAGER: &str = "mlcompute";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The owner's kind, lower case (see [`name_label_value`]).
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// The owner's name.
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
/// What the child is to its owner (`keys`, `routing`, `worker`, `batch-driver`, …).
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";

/// `mlcompute.io/<kind>` label key naming the owning object, e.g. `mlcompute.io/trainingjob`.
/// Kubernetes copies a Service's labels onto its EndpointSlices, so the router finds the
/// instances of every OnlineDeployment by `mlcompute.io/onlinedeployment`.
pub fn owner_label_key<K: Resource<DynamicType = ()>>() -> String {
    format!("mlcompute.io/{}", K::kind(&()).to_ascii_lowercase())
}

/// The value of [`LABEL_NAME`] on the children of a `K`: its kind, lower case.
pub fn name_label_value<K: Resource<DynamicType = ()>>() -> String {
    K::kind(&()).to_ascii_lowercase()
}

/// A selector for every child of every kind: what the operator's shared child caches watch.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=mlcompute";

/// A selector `managed-by=mlcompute,name=<kind of K>,component=<component>`: the children of
/// any `K` that are `component` to it.
pub fn component_selector<K: Resource<DynamicType = ()>>(component: &str) -> String {
    format!(
        "{LABEL_MANAGED_BY}={MANAGER},{LABEL_NAME}={},{LABEL_COMPONENT}={component}",
        name_label_value::<K>()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn managed_selector_is_spelled_from_the_parts() {
        assert_eq!(
            super::MANAGED_SELECTOR,
            format!("{}={}", super::LABEL_MANAGED_BY, super::MANAGER)
        );
    }

    use super::*;
    use crate::api::{OnlineDeployment, OnlineEndpoint};

    #[test]
    fn selectors_spell_what_children_carry() {
        assert_eq!(
            owner_label_key::<OnlineDeployment>(),
            "mlcompute.io/onlinedeployment"
        );
        assert_eq!(
            component_selector::<OnlineEndpoint>("keys"),
            "app.kubernetes.io/managed-by=mlcompute,app.kubernetes.io/name=onlineendpoint,app.kubernetes.io/component=keys"
        );
    }
}
