//! The cluster routing source: routing ConfigMaps, EndpointSlices and keys Secrets, watched and
//! joined into one [`RoutingTable`].
//!
//! Three reflectors (per watched namespace, or cluster-wide) feed caches; any change wakes one
//! rebuild task, which waits [`SETTLE`] for a burst to end, joins everything with
//! [`cluster_table::endpoint_route`] and publishes the table when it differs from the last one.
//! Watches reconnect with backoff on their own, so the source never fails after start-up.
//!
//! Endpoint names are unique in the table (they are the scoring URI). The operator publishes a
//! routing ConfigMap only for the endpoint holding its name (the oldest; see
//! `crate::runtime::names`); should two watched namespaces still route one name (an
//! older operator, or a moment of overlap), the same rule applies to the ConfigMaps — the oldest
//! `creationTimestamp` wins, then namespace order — and the other is logged and left out.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use futures::{Stream, StreamExt};
use k8s_openapi::{
    NamespaceResourceScope,
    api::{
        core::v1::{ConfigMap, Secret},
        discovery::v1::EndpointSlice,
    },
};
use kube::{
    Client, Resource, ResourceExt,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store, reflector},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use super::{
    cluster_table::{self, Skipped},
    source::{RoutingSource, SourceError, TableSink},
    table::RoutingTable,
};
use crate::{
    contract::{
        keys,
        routing::{self, ClusterRoute, ROUTING_TABLE_KEY},
    },
    runtime::names::claim_order,
};

/// How long a burst of changes may settle before the table is rebuilt.
pub const SETTLE: Duration = Duration::from_millis(20);

/// Routing tables from the cluster.
pub struct ClusterSource {
    client: Client,
    namespaces: Vec<Option<String>>,
}

impl ClusterSource {
    /// Watches `namespaces`, or all namespaces when empty.
    pub fn new(client: Client, namespaces: &[String]) -> Self {
        let mut namespaces: Vec<Option<String>> = namespaces
            .iter()
            .filter(|n| !n.is_empty())
            .cloned()
            .map(Some)
            .collect();
        if namespaces.is_empty() {
            namespaces.push(None);
        }
        Self { client, namespaces }
    }
}

/// One cache per kind and namespace.
struct Caches {
    routes: Vec<Store<ConfigMap>>,
    slices: Vec<Store<EndpointSlice>>,
    secrets: Vec<Store<Secret>>,
}

fn watch<K>(
    client: &Client,
    namespace: Option<&str>,
    selector: &str,
    wake: Arc<Notify>,
) -> (
    Store<K>,
    impl std::future::Future<Output = ()> + Send + 'static,
)
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let api = crate::runtime::client::api::<K>(client, namespace);
    let (store, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(api, watcher::Config::default().labels(selector))
            .default_backoff()
            .modify(|o: &mut K| o.managed_fields_mut().clear()),
    );
    (store, drive(stream, wake))
}

async fn drive<S, K>(stream: S, wake: Arc<Notify>)
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(_) => wake.notify_one(),
            Err(error) => tracing::warn!(%error, "routing watch failed; retrying"),
        }
    }
}

impl Caches {
    /// The table from what the caches hold now.
    fn table(&self) -> RoutingTable {
        let slices: Vec<Arc<EndpointSlice>> = self.slices.iter().flat_map(Store::state).collect();
        let slice_refs: Vec<&EndpointSlice> = slices.iter().map(|s| &**s).collect();
        let secrets: Vec<Arc<Secret>> = self.secrets.iter().flat_map(Store::state).collect();
        let mut maps: Vec<Arc<ConfigMap>> = self.routes.iter().flat_map(Store::state).collect();
        sort_by_claim(&mut maps);
        build(&maps, &slice_refs, &secrets)
    }
}

/// Orders routing ConfigMaps as endpoint names are claimed: oldest first, then namespace (see
/// `crate::runtime::names`), so that [`build`] keeps the holder of a contested name.
pub fn sort_by_claim(maps: &mut [Arc<ConfigMap>]) {
    maps.sort_by(|a, b| {
        claim_order(a.meta(), b.meta()).then_with(|| a.name_any().cmp(&b.name_any()))
    });
}

/// The table from routing ConfigMaps, EndpointSlices and keys Secrets. Pure. Of two maps
/// routing one endpoint name, the earlier in `maps` wins (callers sort by `claim_order`).
pub fn build(
    maps: &[Arc<ConfigMap>],
    slices: &[&EndpointSlice],
    secrets: &[Arc<Secret>],
) -> RoutingTable {
    let mut names = BTreeSet::new();
    let mut endpoints = Vec::new();
    for map in maps {
        let ns = map.namespace().unwrap_or_default();
        let Some(text) = map.data.as_ref().and_then(|d| d.get(ROUTING_TABLE_KEY)) else {
            continue;
        };
        let route: ClusterRoute = match serde_json::from_str(text) {
            Ok(r) => r,
            Err(error) => {
                tracing::warn!(namespace = %ns, configmap = %map.name_any(), %error, "routing ConfigMap does not parse; skipped");
                continue;
            }
        };
        if names.contains(&route.endpoint) {
            tracing::warn!(namespace = %ns, endpoint = %route.endpoint, "an endpoint of this name is already routed from another namespace; skipped");
            continue;
        }
        let keys = route.auth.secret_name().and_then(|n| {
            secrets
                .iter()
                .find(|s| s.namespace().as_deref() == Some(ns.as_str()) && s.name_any() == n)
                .map(|s| &**s)
        });
        match cluster_table::endpoint_route(&route, &ns, slices, keys) {
            Ok(endpoint) => {
                // One bad route must not keep every other endpoint's changes out.
                let alone = RoutingTable {
                    endpoints: vec![endpoint],
                };
                if let Err(error) = alone.validate() {
                    tracing::warn!(namespace = %ns, endpoint = %route.endpoint, category = error.category(), %error, "route refused; skipped");
                    continue;
                }
                names.insert(route.endpoint.clone());
                endpoints.extend(alone.endpoints);
            }
            Err(Skipped::NoKeys) => {
                tracing::debug!(namespace = %ns, endpoint = %route.endpoint, "keys Secret not seen yet; endpoint not served")
            }
            Err(Skipped::UnknownAuth) => {
                tracing::warn!(namespace = %ns, endpoint = %route.endpoint, "the route asks for an auth mode this router does not know (a newer operator's?); endpoint not served until the router is upgraded")
            }
        }
    }
    RoutingTable { endpoints }
}

impl RoutingSource for ClusterSource {
    async fn run(self, sink: TableSink) -> Result<(), SourceError> {
        let wake = Arc::new(Notify::new());
        let mut caches = Caches {
            routes: vec![],
            slices: vec![],
            secrets: vec![],
        };
        let (routes, slices, secrets) = (
            routing::routing_selector(),
            routing::instance_slice_selector(),
            keys::secret_selector(),
        );
        for ns in &self.namespaces {
            let ns = ns.as_deref();
            let (s, f) = watch::<ConfigMap>(&self.client, ns, &routes, wake.clone());
            caches.routes.push(s);
            tokio::spawn(f);
            let (s, f) = watch::<EndpointSlice>(&self.client, ns, &slices, wake.clone());
            caches.slices.push(s);
            tokio::spawn(f);
            let (s, f) = watch::<Secret>(&self.client, ns, &secrets, wake.clone());
            caches.secrets.push(s);
            tokio::spawn(f);
        }
        for store in &caches.routes {
            let _ = store.wait_until_ready().await;
        }
        for store in &caches.slices {
            let _ = store.wait_until_ready().await;
        }
        for store in &caches.secrets {
            let _ = store.wait_until_ready().await;
        }
        tracing::info!(namespaces = ?self.namespaces, "cluster routing source synced");
        let mut last: Option<RoutingTable> = None;
        loop {
            let table = caches.table();
            if last.as_ref() != Some(&table) {
                match sink.publish(&table) {
                    Ok(()) => {
                        tracing::info!(endpoints = table.endpoints.len(), "routing table published")
                    }
                    Err(error) => {
                        tracing::warn!(category = error.category(), %error, "routing table refused")
                    }
                }
                last = Some(table);
            }
            wake.notified().await;
            tokio::time::sleep(SETTLE).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::{ByteString, apimachinery::pkg::apis::meta::v1::ObjectMeta};

    use super::*;
    use crate::dataplane::router::table::Auth;

    fn map(ns: &str, text: &str) -> Arc<ConfigMap> {
        Arc::new(ConfigMap {
            metadata: ObjectMeta {
                name: Some("fraud-routing".into()),
                namespace: Some(ns.into()),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(
                ROUTING_TABLE_KEY.to_string(),
                text.to_string(),
            )])),
            ..ConfigMap::default()
        })
    }

    fn keys(ns: &str) -> Arc<Secret> {
        Arc::new(Secret {
            metadata: ObjectMeta {
                name: Some("fraud-keys".into()),
                namespace: Some(ns.into()),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([
                (keys::PRIMARY_KEY.to_string(), ByteString(b"p".to_vec())),
                (keys::SECONDARY_KEY.to_string(), ByteString(b"s".to_vec())),
            ])),
            ..Secret::default()
        })
    }

    const ROUTE: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/online/route.json"
    ));

    #[test]
    fn one_endpoint_per_name_keys_from_its_namespace_and_bad_routes_skipped() {
        let maps = [map("a", ROUTE), map("b", ROUTE), map("c", "not json")];
        // Keys only in namespace b: a's endpoint fails closed, b's is served, c's is skipped.
        let table = build(&maps, &[], &[keys("b")]);
        assert_eq!(table.endpoints.len(), 1);
        assert!(
            matches!(&table.endpoints[0].auth, Auth::Key { primary_key, .. } if primary_key == "p")
        );
        // With keys in both, the first namespace wins the name.
        let table = build(&maps, &[], &[keys("a"), keys("b")]);
        assert_eq!(table.endpoints.len(), 1);
        // A route the router would refuse (traffic sums to 90) is left out, others stay.
        let bad = ROUTE.replace("\"traffic\": 10", "\"traffic\": 0");
        let table = build(
            &[map("a", &bad), map("b", ROUTE)],
            &[],
            &[keys("a"), keys("b")],
        );
        assert_eq!(table.endpoints.len(), 1);
        table.validate().unwrap();
    }

    #[test]
    fn the_oldest_routing_config_map_wins_a_contested_name() {
        let at = |ns: &str, secs: i64| {
            let mut m = (*map(ns, ROUTE)).clone();
            m.metadata.creation_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::from_second(secs).unwrap(),
                ));
            Arc::new(m)
        };
        let keys_of = |ns: &str| {
            let mut s = (*keys(ns)).clone();
            if let Some(d) = s.data.as_mut() {
                d.insert(keys::PRIMARY_KEY.into(), ByteString(ns.as_bytes().to_vec()));
            }
            Arc::new(s)
        };
        // The namespace whose endpoint is served (its primary key is the namespace's name).
        let winner = |mut maps: Vec<Arc<ConfigMap>>| {
            sort_by_claim(&mut maps);
            let table = build(&maps, &[], &[keys_of("a"), keys_of("b")]);
            assert_eq!(table.endpoints.len(), 1);
            match &table.endpoints[0].auth {
                Auth::Key { primary_key, .. } => primary_key.clone(),
                other => panic!("{other:?}"),
            }
        };
        // b's map is older: it wins although a sorts first.
        assert_eq!(winner(vec![at("a", 200), at("b", 100)]), "b");
        // Same timestamp: namespace order.
        assert_eq!(winner(vec![at("b", 100), at("a", 100)]), "a");
        // Without timestamps (as before): namespace order.
        assert_eq!(winner(vec![map("b", ROUTE), map("a", ROUTE)]), "a");
    }
}
