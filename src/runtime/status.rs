//! The status write every controller shares: server-side apply on the status subresource, field
//! manager `mlcompute`.

use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;

use crate::runtime::children::MANAGER;

/// Applies `status` to `obj`'s status subresource (server-side apply, field manager `mlcompute`).
pub async fn patch_status<K, S>(
    client: &kube::Client,
    obj: &K,
    status: &S,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    S: Serialize,
{
    let api: Api<K> = Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    apply(api, obj, status).await
}

/// [`patch_status`] for a cluster-scoped kind (InstanceType).
pub async fn patch_cluster_status<K, S>(
    client: &kube::Client,
    obj: &K,
    status: &S,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    S: Serialize,
{
    apply(Api::all(client.clone()), obj, status).await
}

async fn apply<K, S>(api: Api<K>, obj: &K, status: &S) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let patch =
        json!({ "apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
}
