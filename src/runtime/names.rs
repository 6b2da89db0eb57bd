//! Who holds a name across the watched namespaces, for kinds whose name alone is a URI on the
//! router: an OnlineEndpoint's is its scoring URI (`/api/v1/endpoint/<name>/score`, also the
//! gateway's HTTPRoute path), a BatchEndpoint's its invoke URI (`/api/v1/batch/<name>/invoke`).
//! One object of a name is served: the live one created first (earliest
//! `metadata.creationTimestamp`, ties by namespace), as Gateway API resolves conflicting routes.
//! The others are told (condition `Ready` reason [`NAME_TAKEN`]) and not served, and look again
//! every [`RECHECK`] to take the name over once the holder is gone.
//!
//! [`holder`] is the rule (pure), [`claim_order`] its order (shared with the router);
//! [`Names`] gives the rule every controller instance's cache of a kind, since the operator runs
//! one controller instance per watched namespace.

use std::{
    cmp::Ordering,
    fmt,
    sync::{
        Arc, RwLock,
        atomic::{self, AtomicBool},
    },
    time::{Duration, Instant},
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::{Resource, ResourceExt, runtime::reflector::Store};

/// Condition reason (and Event reason) of an object whose name another namespace holds.
pub const NAME_TAKEN: &str = "NameTaken";

/// How often an object whose name another namespace holds looks again (to take the name over
/// once the holder is gone: that deletion reaches another controller instance, not this one).
pub const RECHECK: Duration = Duration::from_secs(15);

/// How soon a reconcile retries while the other instances have not listed yet ([`NotListed`]).
pub const LIST_RETRY: Duration = Duration::from_secs(1);

/// The order in which objects claim a name: the oldest `creationTimestamp` first (one without a
/// timestamp counts as newest), then namespace. Shared with the router's tie-breaks.
pub fn claim_order(a: &ObjectMeta, b: &ObjectMeta) -> Ordering {
    fn key(m: &ObjectMeta) -> (bool, Option<&Time>, Option<&str>) {
        (
            m.creation_timestamp.is_none(),
            m.creation_timestamp.as_ref(),
            m.namespace.as_deref(),
        )
    }
    key(a).cmp(&key(b))
}

/// The object in another namespace that holds `obj`'s name, or `None` when `obj` holds it.
/// Objects being deleted hold nothing; `obj`'s own namespace is never a conflict.
pub fn holder<'a, K: Resource>(
    obj: &K,
    candidates: impl IntoIterator<Item = &'a K>,
) -> Option<&'a K> {
    let me = obj.meta();
    candidates
        .into_iter()
        .filter(|c| {
            let m = c.meta();
            m.name == me.name && m.namespace != me.namespace && m.deletion_timestamp.is_none()
        })
        .min_by(|a, b| claim_order(a.meta(), b.meta()))
        .filter(|first| claim_order(first.meta(), me) == Ordering::Less)
}

/// The `Ready` message of a `what` (e.g. "batch endpoint") whose name `holder_namespace` holds;
/// `uris` says what the name is (e.g. "invoke URIs").
pub fn taken_message(what: &str, uris: &str, name: &str, holder_namespace: &str) -> String {
    format!(
        "{what} name {name:?} is already served by namespace {holder_namespace} (created first); \
         {uris} are per name — rename this endpoint or delete that one"
    )
}

/// Every controller instance's cache of kind `K`, shared between the instances (a cheap
/// clonable handle). Created once per operator with the number of instances.
pub struct Names<K: Resource<DynamicType = ()> + Clone + 'static>(Arc<RwLock<Registry<K>>>);

struct Registry<K: Resource<DynamicType = ()> + Clone + 'static> {
    /// Instances that will register; until they have, the picture is incomplete.
    expected: usize,
    members: Vec<Member<K>>,
    created: Instant,
}

struct Member<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    /// Raised once the instance's watch delivered its first full list.
    listed: Arc<AtomicBool>,
}

/// Not every instance's cache holds its first list yet: retry shortly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotListed;

/// How long a reconcile waits for the other instances' first lists before checking names with
/// the caches it has (an instance that cannot list, e.g. for lack of RBAC, must not stall the
/// others for good).
const LIST_WAIT: Duration = crate::runtime::synced::CACHE_SYNC_TIMEOUT;

impl<K: Resource<DynamicType = ()> + Clone + 'static> Names<K> {
    /// A registry that `instances` controller instances will join.
    pub fn new(instances: usize) -> Self {
        Names(Arc::new(RwLock::new(Registry {
            expected: instances,
            members: Vec::new(),
            created: Instant::now(),
        })))
    }

    /// Adds one instance's cache. The instance raises the returned flag once its first list is
    /// in the cache.
    pub fn register(&self, store: Store<K>) -> Arc<AtomicBool> {
        let listed = Arc::new(AtomicBool::new(false));
        let mut reg = self.0.write().unwrap_or_else(|e| e.into_inner());
        reg.members.push(Member {
            store,
            listed: listed.clone(),
        });
        listed
    }

    /// Registers a controller instance's shared cache, flagged as listed once its first list
    /// is in.
    pub fn register_cache(&self, cache: &super::caches::Cache<K>)
    where
        K: super::caches::Cached,
    {
        let listed = self.register(cache.store());
        let cache = cache.clone();
        tokio::spawn(async move {
            if cache.listed().await {
                listed.store(true, atomic::Ordering::Release);
            }
        });
    }

    /// The namespace of the live object in another watched namespace that holds `obj`'s name
    /// ([`holder`] over every instance's cache), or `None` when `obj` holds it.
    pub fn holder_of(&self, obj: &K) -> Result<Option<String>, NotListed> {
        let reg = self.0.read().unwrap_or_else(|e| e.into_inner());
        let complete = reg.members.len() >= reg.expected
            && reg
                .members
                .iter()
                .all(|m| m.listed.load(atomic::Ordering::Acquire));
        if !complete && reg.created.elapsed() < LIST_WAIT {
            return Err(NotListed);
        }
        let name = obj.meta().name.as_deref();
        let same_name: Vec<Arc<K>> = reg
            .members
            .iter()
            .flat_map(|m| m.store.state())
            .filter(|c| c.meta().name.as_deref() == name)
            .collect();
        Ok(holder(obj, same_name.iter().map(|c| &**c)).and_then(|h| h.namespace()))
    }
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Clone for Names<K> {
    fn clone(&self) -> Self {
        Names(self.0.clone())
    }
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Default for Names<K> {
    /// A registry for a single instance.
    fn default() -> Self {
        Names::new(1)
    }
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> fmt::Debug for Names<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reg = self.0.read().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("Names")
            .field("kind", &K::kind(&()))
            .field("expected", &reg.expected)
            .field("registered", &reg.members.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::api::{batch_endpoint::BatchEndpoint, online_endpoint::OnlineEndpoint};
    use kube::runtime::{reflector, watcher};
    use serde::de::DeserializeOwned;

    /// One case of `tests/fixtures/{online,batch}/name-cases.yaml`.
    #[derive(Deserialize)]
    #[serde(bound = "K: DeserializeOwned")]
    struct Case<K> {
        case: String,
        endpoint: K,
        others: Vec<K>,
        /// Namespace of the expected holder; absent: the endpoint holds its name.
        holder: Option<String>,
    }

    fn cases<K: DeserializeOwned>(all: &str) -> Vec<Case<K>> {
        serde_yaml::Deserializer::from_str(all)
            .map(|doc| Case::deserialize(doc).unwrap())
            .collect()
    }

    const ONLINE: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/online/name-cases.yaml"
    ));
    const BATCH: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/batch/name-cases.yaml"
    ));

    fn fixtures<K: Resource + DeserializeOwned>(all: &str) {
        let cases = cases::<K>(all);
        for c in &cases {
            // The endpoint itself among the candidates (as in a cache) changes nothing.
            let with_self: Vec<&K> = c.others.iter().chain([&c.endpoint]).collect();
            for candidates in [c.others.iter().collect::<Vec<_>>(), with_self] {
                let got = holder(&c.endpoint, candidates).and_then(|h| h.meta().namespace.clone());
                assert_eq!(got, c.holder, "{}", c.case);
            }
        }
        assert!(cases.len() >= 5);
    }

    #[test]
    fn online_fixtures() {
        fixtures::<OnlineEndpoint>(ONLINE);
    }

    #[test]
    fn batch_fixtures() {
        fixtures::<BatchEndpoint>(BATCH);
    }

    fn symmetric<K: Resource + DeserializeOwned>(all: &str) {
        // Of two live objects of one name in different namespaces, exactly one holds it.
        for c in cases::<K>(all) {
            let me = c.endpoint.meta();
            for other in c.others.iter().filter(|o| {
                let m = o.meta();
                m.name == me.name && m.namespace != me.namespace && m.deletion_timestamp.is_none()
            }) {
                let mine = holder(&c.endpoint, [other]).is_none();
                let theirs = holder(other, [&c.endpoint]).is_none();
                assert!(mine != theirs, "{}", c.case);
            }
        }
    }

    #[test]
    fn the_rule_is_symmetric() {
        symmetric::<OnlineEndpoint>(ONLINE);
        symmetric::<BatchEndpoint>(BATCH);
    }

    fn registry_waits_for_every_instance_then_sees_across_them<K>()
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + 'static,
    {
        let obj = |ns: &str, at: &str| -> K {
            serde_json::from_value(serde_json::json!({
                "metadata": { "name": "scorer", "namespace": ns, "creationTimestamp": at },
                "spec": {}
            }))
            .unwrap()
        };
        let names = Names::<K>::new(2);
        let (a, mut wa) = reflector::store::<K>();
        let (b, mut wb) = reflector::store::<K>();
        let team_a = obj("team-a", "2025-01-01T00:00:00Z");
        let team_b = obj("team-b", "2025-01-02T00:00:00Z");
        let listed_a = names.register(a);
        assert_eq!(names.holder_of(&team_b), Err(NotListed));
        let listed_b = names.register(b);
        wa.apply_watcher_event(&watcher::Event::Apply(team_a.clone()));
        wb.apply_watcher_event(&watcher::Event::Apply(team_b.clone()));
        listed_a.store(true, atomic::Ordering::Release);
        assert_eq!(names.holder_of(&team_b), Err(NotListed));
        listed_b.store(true, atomic::Ordering::Release);
        assert_eq!(names.holder_of(&team_b), Ok(Some("team-a".into())));
        assert_eq!(names.holder_of(&team_a), Ok(None));
        let debug = format!("{names:?}");
        assert!(debug.contains("registered: 2"), "{debug}");
        assert!(debug.contains(&format!("{:?}", K::kind(&()))), "{debug}");
    }

    #[test]
    fn registries_wait_for_every_instance_then_see_across_them() {
        registry_waits_for_every_instance_then_sees_across_them::<OnlineEndpoint>();
        registry_waits_for_every_instance_then_sees_across_them::<BatchEndpoint>();
    }

    #[test]
    fn a_registry_holds_one_kind() {
        // A batch endpoint does not conflict with an online endpoint of the same name.
        let online = Names::<OnlineEndpoint>::new(1);
        let batch = Names::<BatchEndpoint>::new(1);
        let (o, mut wo) = reflector::store::<OnlineEndpoint>();
        let (b, mut wb) = reflector::store::<BatchEndpoint>();
        let meta = |ns: &str, at: &str| serde_json::json!({ "metadata": { "name": "scorer", "namespace": ns, "creationTimestamp": at }, "spec": {} });
        wo.apply_watcher_event(&watcher::Event::Apply(
            serde_json::from_value(meta("team-a", "2025-01-01T00:00:00Z")).unwrap(),
        ));
        online.register(o).store(true, atomic::Ordering::Release);
        batch.register(b).store(true, atomic::Ordering::Release);
        let younger: BatchEndpoint =
            serde_json::from_value(meta("team-b", "2025-01-02T00:00:00Z")).unwrap();
        wb.apply_watcher_event(&watcher::Event::Apply(younger.clone()));
        assert_eq!(batch.holder_of(&younger), Ok(None));
    }

    #[test]
    fn message_names_the_holder() {
        let m = taken_message("batch endpoint", "invoke URIs", "scorer", "team-a");
        assert!(
            m.starts_with("batch endpoint name \"scorer\"")
                && m.contains("namespace team-a")
                && m.contains("invoke URIs are per name"),
            "{m}"
        );
    }
}
