//! The Kubernetes client every controller shares: kubeconfig or in-cluster config, behind the
//! client-side token bucket.

use std::path::Path;

use k8s_openapi::NamespaceResourceScope;
use kube::{
    Api, Client, Config, Resource,
    client::ClientBuilder,
    config::{KubeConfigOptions, Kubeconfig},
};

use super::ratelimit::RateLimit;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("reading kubeconfig {path}: {source}")]
    ReadKubeconfig {
        path: String,
        source: kube::config::KubeconfigError,
    },
    #[error("finding a cluster configuration (in-cluster or $KUBECONFIG): {0}")]
    InferConfig(#[from] kube::config::InferConfigError),
    #[error("building the client: {0}")]
    Build(#[from] kube::Error),
}

/// A namespaced API in `namespace`, or across all namespaces (how every controller and the
/// router's cluster source scope their watches).
pub fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Loads the configuration: the given kubeconfig, else in-cluster, else `$KUBECONFIG`/`~/.kube/config`.
pub async fn config(kubeconfig: Option<&Path>) -> Result<Config, ClientError> {
    match kubeconfig {
        Some(path) => {
            let read_err = |source| ClientError::ReadKubeconfig {
                path: path.display().to_string(),
                source,
            };
            let kc = Kubeconfig::read_from(path).map_err(read_err)?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(read_err)
        }
        None => Ok(Config::infer().await?),
    }
}

/// A client whose requests pass through a token bucket of `limit`.
pub async fn rate_limited(
    kubeconfig: Option<&Path>,
    limit: RateLimit,
) -> Result<Client, ClientError> {
    let config = config(kubeconfig).await?;
    let builder = ClientBuilder::try_from(config)?;
    Ok(builder.with_layer(&limit).build())
}
