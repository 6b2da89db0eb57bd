//! The one helper every controller uses to name, label and own the objects it creates.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

// The label keys are a contract: the router and the CLI select on them.
pub use crate::contract::labels::{
    LABEL_COMPONENT, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_NAME, MANAGER, name_label_value,
    owner_label_key,
};

/// The labels every child carries. `component` says what the child is to its owner
/// (`worker`, `launcher`, `rendezvous`, …).
pub fn labels<K: Resource<DynamicType = ()>>(
    owner: &K,
    component: &str,
) -> BTreeMap<String, String> {
    let name = owner.name_any();
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), MANAGER.to_string()),
        (LABEL_NAME.to_string(), name_label_value::<K>()),
        (LABEL_INSTANCE.to_string(), name.clone()),
        (LABEL_COMPONENT.to_string(), component.to_string()),
        (owner_label_key::<K>(), name),
    ])
}

/// A label selector (`key=value,…`) matching every child of `owner`.
pub fn selector<K: Resource<DynamicType = ()>>(owner: &K) -> String {
    format!(
        "{LABEL_MANAGED_BY}={MANAGER},{}={}",
        owner_label_key::<K>(),
        owner.name_any()
    )
}

/// The controller owner reference to `owner`, so deleting it garbage-collects the child.
pub fn owner_ref<K: Resource<DynamicType = ()>>(owner: &K) -> Option<OwnerReference> {
    owner.controller_owner_ref(&())
}

/// Metadata for a child named `name` in the owner's namespace, labelled and owned.
pub fn child_meta<K: Resource<DynamicType = ()>>(
    owner: &K,
    name: String,
    component: &str,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: owner.namespace(),
        labels: Some(labels(owner, component)),
        owner_references: owner_ref(owner).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}
