//! Writing children: server-side apply that writes nothing when nothing changed, create for
//! write-once children, and in both cases never taking over an object that is not ours.
//!
//! The desired object's hash goes into an annotation; the controller compares it with the cached
//! child (from its reflector) and skips the write when they match. The API server also treats an
//! identical apply as a no-op, but skipping saves the request, the rate-limit token and the audit
//! entry: "a reconcile that changes nothing writes nothing".
//!
//! Ownership: a forced apply plus a controller ownerReference would rewrite a user's own Service
//! named like the child, and deleting the parent would then garbage-collect it. So before the first
//! write of a child the object of that name is looked up, and a child that exists but is not
//! controlled by the parent (the UID in the desired object's controller ownerReference) is left
//! byte-for-byte alone: [`ChildError::NameConflict`].

use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions},
};
use serde::{Serialize, de::DeserializeOwned};

use super::children::{LABEL_MANAGED_BY, MANAGER};

/// Annotation holding the hash of what the operator last applied.
pub const DESIRED_HASH: &str = "mlcompute.io/desired-hash";

/// A child write that failed.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    /// An object of the child's name exists and another owner (or nobody) controls it.
    #[error(
        "{kind} {name} already exists and is not controlled by this {owner_kind} ({holder}); it was left untouched: rename this {owner_kind} or remove that {kind}"
    )]
    NameConflict {
        kind: String,
        name: String,
        owner_kind: String,
        holder: String,
    },
    #[error(transparent)]
    Api(#[from] kube::Error),
}

impl ChildError {
    /// A bounded label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            ChildError::NameConflict { .. } => "name_conflict",
            ChildError::Api(e) => super::error_category(e),
        }
    }
}

/// FNV-1a (64 bit) of the object's JSON, as 16 hex digits: stable across builds and platforms.
pub fn hash_of<T: Serialize>(value: &T) -> String {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Puts the hash of `desired` (computed without the annotation) into its annotations.
pub fn stamp<K: Resource + Serialize>(desired: &mut K) -> String {
    desired.annotations_mut().remove(DESIRED_HASH);
    let hash = hash_of(desired);
    desired
        .annotations_mut()
        .insert(DESIRED_HASH.into(), hash.clone());
    hash
}

/// Whether the cached child already carries `hash`.
pub fn is_current<K: Resource>(cached: Option<&K>, hash: &str) -> bool {
    cached.is_some_and(|c| c.annotations().get(DESIRED_HASH).map(String::as_str) == Some(hash))
}

/// Counts one comparison of a desired child with the cache (bounded labels).
pub fn record(
    metrics: &crate::runtime::metrics::Metrics,
    controller: &str,
    kind: &str,
    written: bool,
) {
    let result = if written { "written" } else { "unchanged" };
    metrics
        .child_applies
        .with_label_values(&[controller, kind, result])
        .inc();
}

/// The UID in `obj`'s controller ownerReference.
pub fn controller_uid<K: Resource>(obj: &K) -> Option<&str> {
    obj.meta()
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

/// Whether `owner` (by UID) is the controller of `child`.
pub fn controlled_by<C: Resource, O: Resource>(child: &C, owner: &O) -> bool {
    owner
        .meta()
        .uid
        .as_deref()
        .is_some_and(|uid| controller_uid(child) == Some(uid))
}

/// `Ok` when `existing` is controlled by the owner named in `desired`'s controller reference;
/// otherwise the conflict, describing who holds the name.
pub fn check_owner<K: Resource<DynamicType = ()>>(
    existing: &K,
    desired: &K,
) -> Result<(), ChildError> {
    check_owner_meta(&K::kind(&()), existing.meta(), desired.meta())
}

/// [`check_owner`] on the metadata of a child of kind `kind` (for dynamic types).
pub fn check_owner_meta(
    kind: &str,
    existing: &ObjectMeta,
    desired: &ObjectMeta,
) -> Result<(), ChildError> {
    let controller_of = |m: &ObjectMeta| {
        m.owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .cloned()
    };
    let owner = controller_of(desired);
    let holder = controller_of(existing);
    if let (Some(o), Some(h)) = (&owner, &holder)
        && o.uid == h.uid
    {
        return Ok(());
    }
    let managed = existing
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_MANAGED_BY))
        .map(String::as_str)
        == Some(MANAGER);
    let holder = match holder {
        Some(h) => format!("it is controlled by {} {}", h.kind, h.name),
        None if managed => {
            "it carries mlcompute's label but no mlcompute object controls it".into()
        }
        None => "it was not created by mlcompute".into(),
    };
    Err(ChildError::NameConflict {
        kind: kind.to_string(),
        name: desired.name.clone().unwrap_or_default(),
        owner_kind: owner.map(|o| o.kind).unwrap_or_default(),
        holder,
    })
}

/// Applies `desired` (field manager `mlcompute`, forced) unless `cached` already has its hash.
/// A child missing from the cache is looked up first, and one held by anybody else is left alone.
/// Returns whether a write happened.
pub async fn apply_if_changed<K>(
    api: &Api<K>,
    cached: Option<&K>,
    mut desired: K,
) -> Result<bool, ChildError>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
{
    let hash = stamp(&mut desired);
    match cached {
        Some(c) => {
            check_owner(c, &desired)?;
            if is_current(Some(c), &hash) {
                return Ok(false);
            }
        }
        // Not in our (label-filtered) cache: new, or somebody else's.
        None => {
            if let Some(existing) = api.get_opt(&desired.name_any()).await? {
                check_owner(&existing, &desired)?;
            }
        }
    }
    api.patch(
        &desired.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&desired),
    )
    .await?;
    Ok(true)
}

/// Creates a write-once child. An existing object of the name is fine when it is ours (the cache
/// was behind) and a conflict otherwise. Returns whether the child was created now.
pub async fn create_owned<K>(api: &Api<K>, desired: &K) -> Result<bool, ChildError>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
{
    let pp = PostParams {
        field_manager: Some(MANAGER.into()),
        ..PostParams::default()
    };
    match api.create(&pp, desired).await {
        Ok(_) => Ok(true),
        Err(e) if super::is_already_exists(&e) => {
            match api.get_opt(&desired.name_any()).await? {
                Some(existing) => check_owner(&existing, desired).map(|()| false),
                // Deleted in between: the next reconcile creates it.
                None => Err(ChildError::Api(e)),
            }
        }
        Err(e) => Err(ChildError::Api(e)),
    }
}

/// Deletes child `name` only if it is still the object with `uid` (never a same-named object
/// that replaced it). Gone already is fine.
pub async fn delete_owned<K>(api: &Api<K>, name: &str, uid: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(()),
        Err(e) if super::is_not_found(&e) => Ok(()),
        // 409: the precondition failed, the object of that name is another one now.
        Err(e) if super::is_already_exists(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes the child `name` if it exists and `owner_uid` controls it (one GET, then a delete
/// with a UID precondition); a same-named object of somebody else's stays.
pub async fn delete_if_owned<K>(
    api: &Api<K>,
    name: &str,
    owner_uid: &str,
) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let Some(existing) = api.get_opt(name).await? else {
        return Ok(());
    };
    if controller_uid(&existing) != Some(owner_uid) {
        return Ok(());
    }
    match existing.meta().uid.as_deref() {
        Some(uid) => delete_owned(api, name, uid).await,
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::core::v1::{ConfigMap, Service},
        apimachinery::pkg::apis::meta::v1::OwnerReference,
    };

    use super::*;

    fn cm(value: &str) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some("x".into());
        cm.data = Some([("k".to_string(), value.to_string())].into());
        cm
    }

    #[test]
    fn hash_ignores_its_own_annotation_and_tracks_content() {
        let mut a = cm("1");
        let first = stamp(&mut a);
        let again = stamp(&mut a);
        assert_eq!(first, again);
        assert!(is_current(Some(&a), &first));
        let mut b = cm("2");
        assert_ne!(stamp(&mut b), first);
        assert!(!is_current::<ConfigMap>(None, &first));
    }

    fn svc(owner: Option<(&str, &str, &str)>, managed: bool) -> Service {
        let mut s = Service::default();
        s.metadata.name = Some("web".into());
        s.metadata.owner_references = owner.map(|(kind, name, uid)| {
            vec![OwnerReference {
                kind: kind.into(),
                name: name.into(),
                uid: uid.into(),
                controller: Some(true),
                ..OwnerReference::default()
            }]
        });
        if managed {
            s.metadata.labels = Some([(LABEL_MANAGED_BY.to_string(), MANAGER.to_string())].into());
        }
        s
    }

    #[test]
    fn only_the_controlling_owner_may_write() {
        let desired = svc(Some(("OnlineDeployment", "web", "u-od")), true);
        assert!(
            check_owner(
                &svc(Some(("OnlineDeployment", "web", "u-od")), true),
                &desired
            )
            .is_ok()
        );

        let err = check_owner(&svc(None, false), &desired).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Service web already exists and is not controlled by this OnlineDeployment (it was not created by mlcompute); it was left untouched: rename this OnlineDeployment or remove that Service"
        );
        assert_eq!(err.category(), "name_conflict");
        let err =
            check_owner(&svc(Some(("TrainingJob", "web", "u-tj")), true), &desired).unwrap_err();
        assert!(
            err.to_string()
                .contains("it is controlled by TrainingJob web"),
            "{err}"
        );
        let err = check_owner(&svc(None, true), &desired).unwrap_err();
        assert!(
            err.to_string().contains("carries mlcompute's label"),
            "{err}"
        );
        // A non-controller reference to us does not make it ours.
        let mut shared = svc(None, false);
        shared.metadata.owner_references = Some(vec![OwnerReference {
            kind: "OnlineDeployment".into(),
            name: "web".into(),
            uid: "u-od".into(),
            controller: None,
            ..OwnerReference::default()
        }]);
        assert!(check_owner(&shared, &desired).is_err());
    }
}
