//! Who holds an OnlineEndpoint name. The name is the scoring URI (`/api/v1/endpoint/<name>/score`
//! on the built-in router, and the same path on the gateway's HTTPRoute), so one endpoint of a
//! name is routed across the watched namespaces: the live one created first (earliest
//! `metadata.creationTimestamp`, ties by namespace), as Gateway API resolves conflicting routes.
//! The others are told (condition `Ready` reason [`NAME_TAKEN`]) and not routed.
//!
//! [`holder`] is the rule (pure); [`Names`] gives it every controller instance's endpoint cache,
//! since the operator runs one OnlineEndpoint controller per watched namespace.

use std::{
    cmp::Ordering,
    fmt,
    sync::{
        Arc, RwLock,
        atomic::{self, AtomicBool},
    },
    time::Instant,
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::{Resource, ResourceExt, runtime::reflector::Store};

use crate::api::online_endpoint::OnlineEndpoint;

/// Condition reason (and Event reason) of an endpoint whose name another namespace holds.
pub const NAME_TAKEN: &str = "NameTaken";

/// The order in which objects claim a name: the oldest `creationTimestamp` first (one without a
/// timestamp counts as newest), then namespace. Shared with the router's tie-break.
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

/// The endpoint in another namespace that holds `ep`'s name, or `None` when `ep` holds it.
/// Endpoints being deleted hold nothing; `ep`'s own namespace is never a conflict.
pub fn holder<'a>(
    ep: &OnlineEndpoint,
    candidates: impl IntoIterator<Item = &'a OnlineEndpoint>,
) -> Option<&'a OnlineEndpoint> {
    let me = ep.meta();
    candidates
        .into_iter()
        .filter(|c| {
            let m = c.meta();
            m.name == me.name && m.namespace != me.namespace && m.deletion_timestamp.is_none()
        })
        .min_by(|a, b| claim_order(a.meta(), b.meta()))
        .filter(|first| claim_order(first.meta(), me) == Ordering::Less)
}

/// The `Ready` message of an endpoint whose name `holder_namespace` holds.
pub fn taken_message(name: &str, holder_namespace: &str) -> String {
    format!(
        "endpoint name {name:?} is already served by namespace {holder_namespace} (created first); \
         scoring URIs are per name — rename this endpoint or delete that one"
    )
}

/// Every OnlineEndpoint controller instance's endpoint cache, shared between the instances (a
/// cheap clonable handle). Created once per operator with the number of instances.
#[derive(Clone)]
pub struct Names(Arc<RwLock<Registry>>);

struct Registry {
    /// Instances that will register; until they have, the picture is incomplete.
    expected: usize,
    members: Vec<Member>,
    created: Instant,
}

struct Member {
    store: Store<OnlineEndpoint>,
    /// Raised once the instance's watch delivered its first full list.
    listed: Arc<AtomicBool>,
}

/// Not every instance's cache holds its first list yet: retry shortly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotListed;

/// How long a reconcile waits for the other instances' first lists before checking names with
/// the caches it has (an instance that cannot list, e.g. for lack of RBAC, must not stall the
/// others for good).
const LIST_WAIT: std::time::Duration = crate::online::CACHE_SYNC_TIMEOUT;

impl Names {
    /// A registry that `instances` controller instances will join.
    pub fn new(instances: usize) -> Self {
        Names(Arc::new(RwLock::new(Registry {
            expected: instances,
            members: Vec::new(),
            created: Instant::now(),
        })))
    }

    /// Adds one instance's endpoint cache. The instance raises the returned flag once its
    /// first list is in the cache.
    pub fn register(&self, store: Store<OnlineEndpoint>) -> Arc<AtomicBool> {
        let listed = Arc::new(AtomicBool::new(false));
        let mut reg = self.0.write().unwrap_or_else(|e| e.into_inner());
        reg.members.push(Member {
            store,
            listed: listed.clone(),
        });
        listed
    }

    /// The namespace of the live endpoint in another watched namespace that holds `ep`'s name
    /// ([`holder`] over every instance's cache), or `None` when `ep` holds it.
    pub fn holder_of(&self, ep: &OnlineEndpoint) -> Result<Option<String>, NotListed> {
        let reg = self.0.read().unwrap_or_else(|e| e.into_inner());
        let complete = reg.members.len() >= reg.expected
            && reg
                .members
                .iter()
                .all(|m| m.listed.load(atomic::Ordering::Acquire));
        if !complete && reg.created.elapsed() < LIST_WAIT {
            return Err(NotListed);
        }
        let name = ep.meta().name.as_deref();
        let same_name: Vec<Arc<OnlineEndpoint>> = reg
            .members
            .iter()
            .flat_map(|m| m.store.state())
            .filter(|c| c.meta().name.as_deref() == name)
            .collect();
        Ok(holder(ep, same_name.iter().map(|c| &**c)).and_then(|h| h.namespace()))
    }
}

impl Default for Names {
    /// A registry for a single instance.
    fn default() -> Self {
        Names::new(1)
    }
}

impl fmt::Debug for Names {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reg = self.0.read().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("Names")
            .field("expected", &reg.expected)
            .field("registered", &reg.members.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    /// One case of `tests/fixtures/online/name-cases.yaml`.
    #[derive(Deserialize)]
    struct Case {
        case: String,
        endpoint: OnlineEndpoint,
        others: Vec<OnlineEndpoint>,
        /// Namespace of the expected holder; absent: the endpoint holds its name.
        holder: Option<String>,
    }

    fn cases() -> Vec<Case> {
        let all = include_str!("../../../tests/fixtures/online/name-cases.yaml");
        serde_yaml::Deserializer::from_str(all)
            .map(|doc| Case::deserialize(doc).unwrap())
            .collect()
    }

    #[test]
    fn fixtures() {
        let cases = cases();
        for c in &cases {
            // The endpoint itself among the candidates (as in a cache) changes nothing.
            let with_self: Vec<&OnlineEndpoint> = c.others.iter().chain([&c.endpoint]).collect();
            for candidates in [c.others.iter().collect::<Vec<_>>(), with_self] {
                let got =
                    holder(&c.endpoint, candidates).and_then(|h| h.metadata.namespace.clone());
                assert_eq!(got, c.holder, "{}", c.case);
            }
        }
        assert!(cases.len() >= 5);
    }

    #[test]
    fn the_rule_is_symmetric() {
        // Of two live endpoints of one name in different namespaces, exactly one holds it.
        for c in cases() {
            for other in c.others.iter().filter(|o| {
                o.metadata.name == c.endpoint.metadata.name
                    && o.metadata.namespace != c.endpoint.metadata.namespace
                    && o.metadata.deletion_timestamp.is_none()
            }) {
                let mine = holder(&c.endpoint, [other]).is_none();
                let theirs = holder(other, [&c.endpoint]).is_none();
                assert!(mine != theirs, "{}", c.case);
            }
        }
    }

    #[test]
    fn registry_waits_for_every_instance_then_sees_across_them() {
        let ep = |ns: &str, at: &str| -> OnlineEndpoint {
            serde_json::from_value(serde_json::json!({
                "metadata": { "name": "iris", "namespace": ns, "creationTimestamp": at },
                "spec": {}
            }))
            .unwrap()
        };
        let names = Names::new(2);
        let (a, mut wa) = kube::runtime::reflector::store::<OnlineEndpoint>();
        let (b, mut wb) = kube::runtime::reflector::store::<OnlineEndpoint>();
        let team_a = ep("team-a", "2025-01-01T00:00:00Z");
        let team_b = ep("team-b", "2025-01-02T00:00:00Z");
        let listed_a = names.register(a);
        assert_eq!(names.holder_of(&team_b), Err(NotListed));
        let listed_b = names.register(b);
        wa.apply_watcher_event(&kube::runtime::watcher::Event::Apply(team_a.clone()));
        wb.apply_watcher_event(&kube::runtime::watcher::Event::Apply(team_b.clone()));
        listed_a.store(true, atomic::Ordering::Release);
        assert_eq!(names.holder_of(&team_b), Err(NotListed));
        listed_b.store(true, atomic::Ordering::Release);
        assert_eq!(names.holder_of(&team_b), Ok(Some("team-a".into())));
        assert_eq!(names.holder_of(&team_a), Ok(None));
        assert!(format!("{names:?}").contains("registered: 2"));
    }

    #[test]
    fn message_names_the_holder() {
        let m = taken_message("iris", "team-a");
        assert!(
            m.contains("\"iris\"") && m.contains("namespace team-a"),
            "{m}"
        );
    }
}
