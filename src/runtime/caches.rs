//! One shared cache per kind (and namespace) per process.
//!
//! Every controller asks [`Caches`] for what it reads; the first ask starts one watch and one
//! reflector, later asks share them. Each subscriber gets its own stream of the objects that
//! changed, deletions included (so a deleted child wakes its owner). A slow subscriber never
//! stalls the watch or the others: when it falls behind the broadcast buffer it is sent every
//! cached object once instead (reconciles are idempotent, so a spurious wake-up is harmless and a
//! missed one is not).
//!
//! One readiness signal, [`Synced`], turns true once every cache asked for before
//! [`Caches::seal`] holds its first full list; every controller waits on it before it acts.

use std::{
    any::{Any, TypeId},
    collections::HashMap,
    hash::Hash,
    sync::{Arc, Mutex},
};

use futures::{Stream, StreamExt, future::BoxFuture};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

use super::synced::Synced;

pub use crate::contract::labels::MANAGED_SELECTOR;

/// How many changes a subscriber may fall behind before it is resent the whole cache.
const BUFFER: usize = 4096;

/// Where a cache looks.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Scope {
    /// A cluster-scoped kind (InstanceType, Node).
    Cluster,
    /// A namespaced kind, in one namespace or (`None`) all of them.
    Namespaced(Option<String>),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    kind: TypeId,
    scope: Scope,
    labels: Option<String>,
    fields: Option<String>,
}

/// The process's shared caches.
#[derive(Clone)]
pub struct Caches {
    client: Client,
    inner: Arc<Mutex<Inner>>,
    synced: Synced,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, Box<dyn Any + Send + Sync>>,
    /// First-list futures of the caches not yet handed to a [`Synced`].
    pending: Vec<BoxFuture<'static, bool>>,
    /// How many watches were started, for the tests and `/metrics`.
    started: usize,
    /// Turns [`Caches::synced`] true; taken by [`Caches::seal`].
    synced_tx: Option<tokio::sync::watch::Sender<bool>>,
}

/// One shared cache: its store and the broadcast of what changed in it.
pub struct Cache<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    changes: broadcast::Sender<Arc<K>>,
    /// True once the first list is in. (A store's own `wait_until_ready` wakes only its latest
    /// waiter; a watch channel wakes them all.)
    listed: tokio::sync::watch::Receiver<bool>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Clone for Cache<K> {
    fn clone(&self) -> Self {
        Cache {
            store: self.store.clone(),
            changes: self.changes.clone(),
            listed: self.listed.clone(),
        }
    }
}

/// What a cached kind must be.
pub trait Cached:
    Resource<DynamicType = ()> + Clone + std::fmt::Debug + DeserializeOwned + Send + Sync + 'static
{
    /// Drops what no controller reads, so a cache of thousands stays small. The default drops
    /// managed fields only.
    fn slim(&mut self) {
        self.managed_fields_mut().clear();
    }
}

impl Caches {
    pub fn new(client: Client) -> Self {
        let (tx, rx) = tokio::sync::watch::channel(false);
        Caches {
            client,
            inner: Arc::new(Mutex::new(Inner {
                synced_tx: Some(tx),
                ..Inner::default()
            })),
            synced: Synced::from(rx),
        }
    }

    /// The one readiness signal: true once every cache asked for before [`Caches::seal`] holds
    /// its first list.
    pub fn synced(&self) -> Synced {
        self.synced.clone()
    }

    /// The shared cache of the namespaced kind `K` in `namespace` (`None`: all namespaces), of
    /// the objects matching `labels` if given; started on first use (inside a Tokio runtime).
    pub fn namespaced<K>(&self, namespace: Option<&str>, labels: Option<&str>) -> Cache<K>
    where
        K: Cached + Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    {
        self.namespaced_fields(namespace, labels, None)
    }

    /// [`Caches::namespaced`] with a field selector too (Events by reason).
    pub fn namespaced_fields<K>(
        &self,
        namespace: Option<&str>,
        labels: Option<&str>,
        fields: Option<&str>,
    ) -> Cache<K>
    where
        K: Cached + Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    {
        let scope = Scope::Namespaced(namespace.map(str::to_string));
        self.get(scope, labels, fields, || match namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        })
    }

    /// The shared cache of the cluster-scoped kind `K` (InstanceType, Node).
    pub fn cluster<K>(&self, labels: Option<&str>) -> Cache<K>
    where
        K: Cached + Resource<Scope = k8s_openapi::ClusterResourceScope>,
    {
        self.get(Scope::Cluster, labels, None, || {
            Api::all(self.client.clone())
        })
    }

    fn get<K: Cached>(
        &self,
        scope: Scope,
        labels: Option<&str>,
        fields: Option<&str>,
        api: impl FnOnce() -> Api<K>,
    ) -> Cache<K> {
        let key = Key {
            kind: TypeId::of::<K>(),
            scope,
            labels: labels.map(str::to_string),
            fields: fields.map(str::to_string),
        };
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cache) = inner
            .entries
            .get(&key)
            .and_then(|c| c.downcast_ref::<Cache<K>>())
        {
            return cache.clone();
        }
        let api = api();
        let mut config = watcher::Config::default();
        if let Some(l) = labels {
            config = config.labels(l);
        }
        if let Some(f) = fields {
            config = config.fields(f);
        }
        let (store, writer) = reflector::store();
        let (changes, _) = broadcast::channel(BUFFER);
        let tx = changes.clone();
        let kind = K::kind(&());
        let (listed_tx, listed) = tokio::sync::watch::channel(false);
        let stream = reflector::reflector(
            writer,
            watcher(api, config).default_backoff().modify(K::slim),
        )
        .inspect(move |e| {
            if matches!(e, Ok(watcher::Event::InitDone)) {
                listed_tx.send_replace(true);
            }
        })
        .touched_objects();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    // No receivers yet (or any more) is fine: the store is still kept.
                    Ok(obj) => drop(tx.send(Arc::new(obj))),
                    Err(e) => tracing::warn!(%kind, error = %e, "watch failed; retrying"),
                }
            }
        });
        let cache = Cache {
            store,
            changes,
            listed,
        };
        let ready = cache.clone();
        inner
            .pending
            .push(Box::pin(async move { ready.listed().await }));
        inner.started += 1;
        inner.entries.insert(key, Box::new(cache.clone()));
        cache
    }

    /// Starts awaiting every cache asked for so far: call once, after every controller has
    /// asked for its caches. `on_synced` runs once they all hold their first list.
    pub fn seal(&self, on_synced: impl FnOnce() + Send + 'static) {
        let (pending, tx) = {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            (std::mem::take(&mut inner.pending), inner.synced_tx.take())
        };
        let Some(tx) = tx else {
            tracing::error!("the caches were sealed twice; the second seal is ignored");
            return;
        };
        tokio::spawn(async move {
            let all = futures::future::join_all(pending).await;
            if all.into_iter().all(|ok| ok) {
                on_synced();
                let _ = tx.send(true);
            }
        });
    }

    /// How many watches this process started.
    pub fn watches(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).started
    }
}

impl<K: Cached> Cache<K> {
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Waits until the first list is in; false if the watch task is gone.
    pub async fn listed(&self) -> bool {
        let mut rx = self.listed.clone();
        rx.wait_for(|l| *l).await.is_ok()
    }

    /// The objects that change from now on (applied or deleted), as a controller trigger stream.
    pub fn changes(&self) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
        let rx = self.changes.subscribe();
        let state = (rx, self.store.clone(), self.listed.clone());
        futures::stream::unfold(state, |(mut rx, store, mut listed)| async move {
            loop {
                match rx.recv().await {
                    Ok(obj) => return Some((vec![Ok((*obj).clone())], (rx, store, listed))),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(
                            kind = %K::kind(&()),
                            missed,
                            "a controller fell behind its cache; resending every cached object"
                        );
                        // During the first list the store is not filled yet (the reflector
                        // swaps it in at the end): resend once it is.
                        if listed.wait_for(|l| *l).await.is_err() {
                            return None;
                        }
                        let all: Vec<_> = store.state().iter().map(|o| Ok((**o).clone())).collect();
                        if !all.is_empty() {
                            return Some((all, (rx, store, listed)));
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .flat_map(futures::stream::iter)
    }
}

macro_rules! cached {
    ($($t:ty),* $(,)?) => { $(impl Cached for $t {})* };
}

cached!(
    crate::api::environment::Environment,
    crate::api::instance_type::InstanceType,
    crate::api::training_job::TrainingJob,
    crate::api::online_endpoint::OnlineEndpoint,
    crate::api::online_deployment::OnlineDeployment,
    crate::api::batch_endpoint::BatchEndpoint,
    crate::api::batch_deployment::BatchDeployment,
    crate::api::batch_job::BatchJob,
    k8s_openapi::api::apps::v1::Deployment,
    k8s_openapi::api::batch::v1::Job,
    k8s_openapi::api::core::v1::ConfigMap,
    k8s_openapi::api::core::v1::Secret,
    k8s_openapi::api::core::v1::Service,
    k8s_openapi::api::core::v1::Event,
    k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler,
    k8s_openapi::api::rbac::v1::Role,
    k8s_openapi::api::discovery::v1::EndpointSlice,
);

impl Cached for k8s_openapi::api::core::v1::Pod {
    /// Keeps what the controllers read of a Pod (owners, labels, node, containers' names and
    /// images, phase, conditions and container states), so a cache of thousands stays small.
    fn slim(&mut self) {
        use k8s_openapi::api::core::v1::Container;
        self.managed_fields_mut().clear();
        if let Some(spec) = self.spec.as_mut() {
            // Containers by name and image: problems name the image the Pod was made from.
            let slim = |cs: &[Container]| -> Vec<Container> {
                cs.iter()
                    .map(|c| Container {
                        name: c.name.clone(),
                        image: c.image.clone(),
                        ..Container::default()
                    })
                    .collect()
            };
            *spec = k8s_openapi::api::core::v1::PodSpec {
                node_name: spec.node_name.take(),
                containers: slim(&spec.containers),
                init_containers: spec.init_containers.as_deref().map(slim),
                ..Default::default()
            };
        }
        if let Some(status) = self.status.as_mut() {
            for c in status
                .container_statuses
                .iter_mut()
                .flatten()
                .chain(status.init_container_statuses.iter_mut().flatten())
            {
                c.image_id = String::new();
                c.volume_mounts = None;
                c.resources = None;
                c.allocated_resources = None;
            }
        }
    }
}

impl Cached for k8s_openapi::api::core::v1::Node {
    /// Keeps labels, taints, schedulability, allocatable and the Ready condition: what placement
    /// reads. (Images and volumes are most of a node's size.)
    fn slim(&mut self) {
        self.managed_fields_mut().clear();
        self.annotations_mut().clear();
        if let Some(status) = self.status.as_mut() {
            status.images = None;
            status.volumes_attached = None;
            status.volumes_in_use = None;
            status.node_info = None;
            if let Some(c) = status.conditions.as_mut() {
                c.retain(|c| c.type_ == "Ready");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ConfigMap, Pod};
    use std::time::Duration;

    fn cm(name: &str) -> ConfigMap {
        serde_json::from_value(
            serde_json::json!({ "metadata": { "name": name, "namespace": "ns" } }),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_gets_the_whole_cache_once_it_is_listed() {
        let (store, mut writer) = reflector::store();
        let (changes, _) = broadcast::channel(2);
        let (listed_tx, listed) = tokio::sync::watch::channel(false);
        let cache = Cache {
            store,
            changes: changes.clone(),
            listed,
        };
        let mut sub = std::pin::pin!(cache.changes());
        for name in ["a", "b", "c", "d", "e"] {
            let _ = changes.send(Arc::new(cm(name)));
        }
        // Lagged during the first list: nothing is resent until the store is filled.
        let early = tokio::time::timeout(Duration::from_millis(50), sub.next()).await;
        assert!(
            early.is_err(),
            "resent before the first list was in: {early:?}"
        );
        for name in ["a", "b", "c", "d", "e"] {
            writer.apply_watcher_event(&watcher::Event::Apply(cm(name)));
        }
        listed_tx.send_replace(true);
        let mut names = Vec::new();
        for _ in 0..5 {
            let obj = tokio::time::timeout(Duration::from_secs(1), sub.next())
                .await
                .unwrap();
            names.push(obj.unwrap().unwrap().name_any());
        }
        names.sort();
        assert_eq!(names, ["a", "b", "c", "d", "e"]);
        // Afterwards, changes flow again (after what the broadcast still held: repeats are
        // harmless, a reconcile is idempotent).
        let _ = changes.send(Arc::new(cm("f")));
        let mut after = Vec::new();
        while after.last().map(String::as_str) != Some("f") {
            let obj = tokio::time::timeout(Duration::from_secs(1), sub.next())
                .await
                .unwrap();
            after.push(obj.unwrap().unwrap().name_any());
            assert!(after.len() <= 12, "f never came: {after:?}");
        }
    }

    #[test]
    fn a_slim_pod_keeps_what_controllers_read() {
        let mut pod: Pod = serde_yaml::from_str(
            r#"
metadata:
  name: p
  labels: {a: b}
  annotations: {x: y}
  managedFields: [{manager: kubelet}]
spec:
  nodeName: n1
  containers: [{name: c, image: i, command: [run], env: [{name: A, value: b}]}]
status:
  phase: Running
  conditions: [{type: Ready, status: "True"}]
  containerStatuses:
  - name: c
    image: i
    imageID: sha
    ready: false
    restartCount: 3
    state: {waiting: {reason: CrashLoopBackOff, message: boom}}
    lastState: {terminated: {exitCode: 137, reason: OOMKilled}}
"#,
        )
        .unwrap();
        pod.slim();
        assert!(
            pod.metadata
                .managed_fields
                .as_ref()
                .is_none_or(|m| m.is_empty())
        );
        assert_eq!(pod.labels().get("a").map(String::as_str), Some("b"));
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("n1"));
        assert_eq!(
            spec.containers[0].image.as_deref(),
            Some("i"),
            "problems name the image"
        );
        let status = pod.status.as_ref().unwrap();
        assert_eq!(status.conditions.as_ref().unwrap().len(), 1);
        assert!(spec.containers[0].env.is_none() && spec.containers[0].command.is_none());
        let c = &status.container_statuses.as_ref().unwrap()[0];
        assert_eq!(c.restart_count, 3);
        assert!(
            c.last_state.is_some(),
            "OOMKilled is read from the last state"
        );
        assert_eq!(c.image_id, "");
    }
}
