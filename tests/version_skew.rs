//! Version skew: the operator, the router and the batch driver Pods run different releases during
//! an upgrade. `helm upgrade` rolls the operator and the router Deployments independently, so for a
//! while a router of the previous release reads the routes the new operator writes, or a new router
//! reads routes an operator of the previous release wrote; batch Pods started before the upgrade
//! keep reporting progress to the new controller. Needs no cluster: the processes' own pure
//! functions on the bytes they exchange.
//!
//! "The previous release" is commit `1cb0798`, the last before `src/contract/`: its routing-table
//! types are vendored byte for byte in `tests/router_1cb0798/` (see the README there), its progress
//! record type in [`progress_1cb0798`].
//!
//! What the tests show, each way:
//! - **new operator → previous router**: the route the operator writes today parses with the
//!   previous type and joins into the same table the new router builds
//!   ([`a_previous_router_routes_the_new_operators_output_the_same`]). The previous type is lenient
//!   at the top, in `auth` and in each deployment, but refuses unknown fields in `requestSettings`
//!   (`deny_unknown_fields`) and unknown auth modes; its cluster source then skips that route, so
//!   the endpoint disappears from that router. [`what_a_previous_router_refuses`] pins exactly
//!   that, and [`the_operator_writes_only_what_a_previous_router_reads`] fails if the operator
//!   starts writing a field or mode the previous router would refuse. From this release on,
//!   routers ignore unknown fields everywhere and fail closed on an unknown mode, so later additions
//!   are safe ([`a_future_operators_output_routes_the_same`]).
//! - **previous operator → new router**: routes the previous type writes parse with the current
//!   type and join into the same table the previous router builds
//!   ([`the_new_router_routes_the_previous_operators_output_the_same`]).
//! - **progress records**: both ways for the driver's `PodProgress`, and a future driver's unknown
//!   fields and phase ([`progress_records_cross_releases`]).
//!
//! The batch invoke body is not here: a user writes it, so it stays strict
//! (`contract::batch_invoke`). The driver's environment is not serialized; the CLI's test parses
//! every variable the controller sets, and every variable the driver reads has a default.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::{
    ByteString,
    api::{
        core::v1::{ConfigMap, Secret},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use mlcompute::{
    api::{Environment, OnlineDeployment, OnlineEndpoint},
    contract::{
        keys,
        progress::{self, Counts, Phase, PodProgress},
        routing::{ClusterAuth, ClusterRoute, ROUTING_TABLE_KEY},
    },
    controllers::online::endpoint::{self as endpoint_controller, routing},
    dataplane::router::{
        cluster_source,
        cluster_table::{self, Skipped},
        table::{Auth, RoutingTable},
    },
};
use serde::Deserialize;
use serde_json::{Value, json};

/// The router's routing-table types at commit `1cb0798`, vendored verbatim.
#[allow(dead_code)]
mod router_1cb0798 {
    pub mod cluster_table;
    pub mod table;
}

use router_1cb0798::{cluster_table as previous, table as previous_table};

/// The progress record types of the batch driver at commit `1cb0798` (`src/batch/pod_progress.rs`
/// and `src/batch/progress.rs`), copied verbatim.
mod progress_1cb0798 {
    use serde::{Deserialize, Serialize};

    /// Lifecycle of an instance, named as Azure ML job phases.
    #[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
    pub enum Phase {
        #[default]
        Running,
        Completed,
        Failed,
    }

    /// Total / succeeded / failed.
    #[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
    pub struct Counts {
        pub total: u64,
        pub succeeded: u64,
        pub failed: u64,
    }

    /// What one instance reports: counters of its shard, and why it stopped. Unknown fields are
    /// accepted (a newer driver may add some).
    #[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
    #[serde(rename_all = "camelCase")]
    pub struct PodProgress {
        pub instance: u32,
        pub instance_count: u32,
        pub phase: Phase,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub reason: Option<String>,
        pub mini_batches: Counts,
        pub items: Counts,
        pub updated_unix_ms: u64,
    }
}

const NS: &str = "ns";

fn endpoint() -> OnlineEndpoint {
    serde_json::from_value(json!({
        "apiVersion": "mlcompute.io/v1alpha1", "kind": "OnlineEndpoint",
        "metadata": { "name": "fraud", "namespace": NS, "uid": "e1" },
        "spec": { "authMode": "key", "traffic": { "blue": 90, "green": 10 },
                  "mirrorTraffic": { "shadow": 20 } }
    }))
    .unwrap()
}

/// Three deployments as the operator sees them: a scoring script with its own request settings,
/// a custom container whose Environment names its routes, and a mirror target with defaults.
fn deployments() -> Vec<(OnlineDeployment, Option<Environment>)> {
    let deployment = |name: &str, spec: Value, ready: i32| -> OnlineDeployment {
        let mut spec = spec;
        spec["endpointName"] = json!("fraud");
        serde_json::from_value(json!({
            "apiVersion": "mlcompute.io/v1alpha1", "kind": "OnlineDeployment",
            "metadata": { "name": name, "namespace": NS },
            "spec": spec,
            "status": { "replicas": ready, "readyInstances": ready }
        }))
        .unwrap()
    };
    let custom: Environment = serde_json::from_value(json!({
        "apiVersion": "mlcompute.io/v1alpha1", "kind": "Environment",
        "metadata": { "name": "custom", "namespace": NS },
        "spec": { "image": "ghcr.io/example/custom:1", "inferenceConfig": {
            "livenessRoute": { "port": 8000, "path": "/health" },
            "readinessRoute": { "port": 8000, "path": "/ready" },
            "scoringRoute": { "port": 8000, "path": "/predict" } } }
    }))
    .unwrap();
    let script = json!({ "code": "configmap://fraud-code", "scoringScript": "score.py" });
    vec![
        (
            deployment(
                "blue",
                json!({ "codeConfiguration": script, "environment": "sklearn", "instanceCount": 2,
                        "requestSettings": { "requestTimeoutMs": 1000,
                                             "maxConcurrentRequestsPerInstance": 2,
                                             "maxQueueWaitMs": 100 } }),
                2,
            ),
            None,
        ),
        (
            deployment(
                "green",
                json!({ "environment": "custom", "instanceCount": 1 }),
                1,
            ),
            Some(custom),
        ),
        (
            deployment(
                "shadow",
                json!({ "codeConfiguration": script, "environment": "sklearn", "instanceCount": 1 }),
                1,
            ),
            None,
        ),
    ]
}

/// The routing ConfigMap the OnlineEndpoint controller writes for [`endpoint`] today, through its
/// own pure builders.
fn operator_output() -> ConfigMap {
    let ep = endpoint();
    let views: Vec<_> = deployments()
        .iter()
        .map(|(d, env)| endpoint_controller::view(d, env.as_ref()))
        .collect();
    let computed = routing::compute(&ep, &views);
    assert!(computed.problems.is_empty(), "{:?}", computed.problems);
    endpoint_controller::routing_config_map(&ep, &computed)
}

fn route_text(map: &ConfigMap) -> String {
    map.data.as_ref().unwrap()[ROUTING_TABLE_KEY].clone()
}

/// A routing ConfigMap holding `text` (as another release would have written it).
fn map_with(name: &str, text: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(format!("{name}-routing")),
            namespace: Some(NS.into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            ROUTING_TABLE_KEY.to_string(),
            text.to_string(),
        )])),
        ..ConfigMap::default()
    }
}

fn slices() -> Vec<EndpointSlice> {
    serde_yaml::Deserializer::from_str(include_str!("fixtures/online/endpointslices.yaml"))
        .map(|d| EndpointSlice::deserialize(d).unwrap())
        .collect()
}

fn keys_secret(endpoint: &str) -> Secret {
    let key = |v: &str| ByteString(v.as_bytes().to_vec());
    Secret {
        metadata: ObjectMeta {
            name: Some(keys::secret_name(endpoint)),
            namespace: Some(NS.into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([
            (keys::PRIMARY_KEY.to_string(), key("k1")),
            (keys::SECONDARY_KEY.to_string(), key("k2")),
            (keys::TOKEN_SIGNING_KEY.to_string(), key("signing")),
        ])),
        ..Secret::default()
    }
}

/// The table the current router builds from these routing ConfigMaps.
fn current_router(maps: &[ConfigMap]) -> Value {
    let all = slices();
    let refs: Vec<&EndpointSlice> = all.iter().collect();
    let maps: Vec<Arc<ConfigMap>> = maps.iter().cloned().map(Arc::new).collect();
    let secrets = [
        Arc::new(keys_secret("fraud")),
        Arc::new(keys_secret("iris")),
    ];
    let table = cluster_source::build(&maps, &refs, &secrets);
    table.validate().unwrap();
    serde_json::to_value(&table).unwrap()
}

/// The table the previous router builds from one route's text (its cluster source parsed the
/// text with its type, skipped routes that did not parse, and joined with the same function).
fn previous_router(text: &str) -> Result<Value, serde_json::Error> {
    let route: previous::ClusterRoute = serde_json::from_str(text)?;
    let all = slices();
    let refs: Vec<&EndpointSlice> = all.iter().collect();
    let secret = keys_secret(&route.endpoint);
    let joined = previous::endpoint_route(&route, NS, &refs, Some(&secret)).unwrap();
    let table = previous_table::RoutingTable {
        endpoints: vec![joined],
    };
    table.validate().unwrap();
    Ok(serde_json::to_value(&table).unwrap())
}

#[test]
fn a_previous_router_routes_the_new_operators_output_the_same() {
    let map = operator_output();
    let text = route_text(&map);
    // Everything the operator writes, the previous type reads: nothing dropped on the way.
    let old: previous::ClusterRoute = serde_json::from_str(&text).unwrap();
    let written: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(serde_json::to_value(&old).unwrap(), written);
    // And both routers route it the same: instances, keys, split, mirror, settings.
    let table = previous_router(&text).unwrap();
    assert_eq!(table, current_router(&[map]));
    let fraud = &table["endpoints"][0];
    assert_eq!(fraud["auth"]["mode"], "key");
    let blue = &fraud["deployments"][0];
    assert_eq!(blue["requestSettings"]["requestTimeoutMs"], 1000);
    assert_eq!(blue["backends"].as_array().unwrap().len(), 3);
    assert_eq!(fraud["deployments"][1]["scoringPath"], "/predict");
    assert_eq!(fraud["deployments"][2]["mirror"], 20);
}

/// The fields and auth modes the previous router accepts where it is strict.
const PREVIOUS_REQUEST_SETTINGS: [&str; 3] = [
    "requestTimeoutMs",
    "maxConcurrentRequestsPerInstance",
    "maxQueueWaitMs",
];
const PREVIOUS_AUTH_MODES: [&str; 3] = ["none", "key", "token"];

#[test]
fn the_operator_writes_only_what_a_previous_router_reads() {
    // Every auth mode, so that a new mode is caught too.
    for mode in ["none", "key", "aml_token"] {
        let mut ep = endpoint();
        ep.spec.auth_mode = serde_json::from_value(json!(mode)).unwrap();
        let views: Vec<_> = deployments()
            .iter()
            .map(|(d, env)| endpoint_controller::view(d, env.as_ref()))
            .collect();
        let map = endpoint_controller::routing_config_map(&ep, &routing::compute(&ep, &views));
        let written: Value = serde_json::from_str(&route_text(&map)).unwrap();
        let written_mode = written["auth"]["mode"].as_str().unwrap();
        assert!(
            PREVIOUS_AUTH_MODES.contains(&written_mode),
            "auth mode {written_mode:?}: a 1cb0798 router cannot parse it and drops the endpoint"
        );
        for d in written["deployments"].as_array().unwrap() {
            for field in d["requestSettings"].as_object().unwrap().keys() {
                assert!(
                    PREVIOUS_REQUEST_SETTINGS.contains(&field.as_str()),
                    "requestSettings.{field}: a 1cb0798 router refuses unknown fields there and \
                     drops the endpoint; put a new setting beside requestSettings, or wait until \
                     no such router runs"
                );
            }
        }
        previous_router(&route_text(&map)).unwrap();
    }
}

#[test]
fn what_a_previous_router_refuses() {
    let written: Value = serde_json::from_str(&route_text(&operator_output())).unwrap();
    let parses = |v: &Value| serde_json::from_value::<previous::ClusterRoute>(v.clone()).is_ok();
    // Ignored: new fields at the top, in auth, in a deployment.
    let mut v = written.clone();
    v["generation"] = json!(7);
    v["auth"]["audience"] = json!("scoring");
    v["deployments"][0]["weightHint"] = json!(3);
    assert!(parses(&v));
    assert_eq!(
        previous_router(&v.to_string()).unwrap(),
        previous_router(&written.to_string()).unwrap()
    );
    // Refused (so the previous router leaves the endpoint out): a new request setting, a new
    // auth mode. This release writes neither (the test above).
    let mut v = written.clone();
    v["deployments"][0]["requestSettings"]["maxBodyBytes"] = json!(1024);
    assert!(!parses(&v));
    let mut v = written.clone();
    v["auth"] = json!({ "mode": "entraId", "secretName": "fraud-keys" });
    assert!(!parses(&v));
}

/// `value` with an unknown field added in every object, as a later operator might write.
fn with_unknown_fields(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut map: serde_json::Map<String, Value> = map
                .iter()
                .map(|(k, v)| (k.clone(), with_unknown_fields(v)))
                .collect();
            map.insert("addedLater".into(), json!({ "nested": [1, "two"] }));
            Value::Object(map)
        }
        Value::Array(items) => Value::Array(items.iter().map(with_unknown_fields).collect()),
        other => other.clone(),
    }
}

#[test]
fn a_future_operators_output_routes_the_same() {
    let text = route_text(&operator_output());
    let written: Value = serde_json::from_str(&text).unwrap();
    let future = with_unknown_fields(&written);
    assert!(future["deployments"][0]["requestSettings"]["addedLater"].is_object());
    let now: ClusterRoute = serde_json::from_str(&text).unwrap();
    assert_eq!(
        serde_json::from_value::<ClusterRoute>(future.clone()).unwrap(),
        now
    );
    assert_eq!(
        current_router(&[map_with("fraud", &future.to_string())]),
        current_router(&[map_with("fraud", &text)])
    );
    // An auth mode this router does not know: parsed, and failing closed — the endpoint is not
    // served (never served without auth), and every other endpoint still is.
    let mut unknown = future.clone();
    unknown["auth"] = json!({ "mode": "entraId", "tenant": "t", "addedLater": true });
    let route: ClusterRoute = serde_json::from_value(unknown.clone()).unwrap();
    assert_eq!(route.auth, ClusterAuth::Unknown);
    let all = slices();
    let refs: Vec<&EndpointSlice> = all.iter().collect();
    assert_eq!(
        cluster_table::endpoint_route(&route, NS, &refs, Some(&keys_secret("fraud"))),
        Err(Skipped::UnknownAuth)
    );
    let iris = json!({ "endpoint": "iris", "deployments": [
        { "name": "blue", "traffic": 100, "scoringPath": "/score", "service": "blue", "port": 5001,
          "portName": "http" } ] });
    let table = current_router(&[
        map_with("fraud", &unknown.to_string()),
        map_with("iris", &iris.to_string()),
    ]);
    let served: Vec<&str> = table["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(served, ["iris"]);
}

#[test]
fn the_new_router_routes_the_previous_operators_output_the_same() {
    // What an operator of the previous release wrote: its type, serialized (for this endpoint, and
    // for a token endpoint with default settings), and the route fixture kept from that time.
    let old: previous::ClusterRoute =
        serde_json::from_str(&route_text(&operator_output())).unwrap();
    let token = previous::ClusterRoute {
        endpoint: "iris".into(),
        auth: previous::ClusterAuth::Token {
            secret_name: keys::secret_name("iris"),
        },
        deployments: vec![previous::ClusterDeployment {
            name: "blue".into(),
            traffic: 100,
            mirror: 0,
            scoring_path: "/score".into(),
            request_settings: previous_table::RequestSettings::default(),
            service: "blue".into(),
            port: 5001,
            port_name: "http".into(),
        }],
    };
    let fixture = include_str!("fixtures/online/route.json");
    for text in [
        serde_json::to_string(&old).unwrap(),
        serde_json::to_string_pretty(&token).unwrap(),
        fixture.to_string(),
    ] {
        let route: ClusterRoute = serde_json::from_str(&text).unwrap();
        assert_eq!(
            current_router(&[map_with(&route.endpoint, &text)]),
            previous_router(&text).unwrap(),
            "{text}"
        );
    }
    let table = current_router(&[map_with("iris", &serde_json::to_string(&token).unwrap())]);
    let table: RoutingTable = serde_json::from_value(table).unwrap();
    assert!(
        matches!(&table.endpoints[0].auth, Auth::Token { signing_key } if signing_key == "signing")
    );
}

#[test]
fn progress_records_cross_releases() {
    use progress_1cb0798 as previous;
    let old = previous::PodProgress {
        instance: 1,
        instance_count: 2,
        phase: previous::Phase::Failed,
        reason: Some("error threshold crossed".into()),
        mini_batches: previous::Counts {
            total: 10,
            succeeded: 9,
            failed: 1,
        },
        items: previous::Counts {
            total: 100,
            succeeded: 95,
            failed: 5,
        },
        updated_unix_ms: 1_700_000_000_000,
    };
    // A driver Pod of the previous release → the new controller.
    let entry = progress::parse_entry("1", &serde_json::to_string(&old).unwrap(), 2).unwrap();
    assert_eq!((entry.phase, entry.items.failed), (Phase::Failed, 5));
    assert_eq!(entry.reason.as_deref(), Some("error threshold crossed"));
    // A driver of this release → a controller of the previous release.
    let new = PodProgress {
        instance: 0,
        instance_count: 2,
        phase: Phase::Completed,
        reason: None,
        mini_batches: Counts {
            total: 5,
            succeeded: 5,
            failed: 0,
        },
        items: Counts {
            total: 50,
            succeeded: 50,
            failed: 0,
        },
        updated_unix_ms: 1,
    };
    let read: previous::PodProgress = serde_json::from_str(&new.to_json().unwrap()).unwrap();
    assert_eq!(
        (read.phase, read.items.succeeded),
        (previous::Phase::Completed, 50)
    );
    // A later driver: unknown fields everywhere are ignored by both; an unknown phase reads as
    // Unknown here (its counters still count), while the previous controller ignores the entry.
    let mut later = with_unknown_fields(&serde_json::to_value(&new).unwrap());
    assert_eq!(
        progress::parse_entry("0", &later.to_string(), 2).unwrap(),
        new
    );
    assert!(serde_json::from_value::<previous::PodProgress>(later.clone()).is_ok());
    later["phase"] = json!("Draining");
    let entry = progress::parse_entry("0", &later.to_string(), 2).unwrap();
    assert_eq!((entry.phase, entry.items.succeeded), (Phase::Unknown, 50));
    assert!(serde_json::from_value::<previous::PodProgress>(later).is_err());
}
