//! The router's side of the routing table: joining an endpoint's [`ClusterRoute`] (written by
//! the OnlineEndpoint controller, see [`crate::contract::routing`]) with the Services'
//! EndpointSlices and the keys Secret into an [`EndpointRoute`] with instance addresses. That join
//! is [`endpoint_route`], a pure function; [`super::cluster_source`] feeds it.

use std::collections::BTreeMap;

use k8s_openapi::api::{core::v1::Secret, discovery::v1::EndpointSlice};

use super::table::{Auth, Backend, DeploymentRoute, EndpointRoute, RequestSettings};
use crate::contract::{
    keys::{PRIMARY_KEY, SECONDARY_KEY, TOKEN_SIGNING_KEY},
    routing::{ClusterAuth, ClusterRequestSettings, ClusterRoute},
};

/// Label EndpointSlices carry naming their Service (Kubernetes').
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Why an endpoint was left out of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skipped {
    /// Key or token auth and the Secret (or its key) is not (yet) seen: failing closed, the
    /// endpoint is absent.
    NoKeys,
    /// An auth mode this router does not know (a newer operator's): failing closed, the endpoint
    /// is absent.
    UnknownAuth,
}

/// The router's route for `route`: instances from the EndpointSlices of each deployment's
/// Service (in `namespace`), keys from `keys`.
pub fn endpoint_route(
    route: &ClusterRoute,
    namespace: &str,
    slices: &[&EndpointSlice],
    keys: Option<&Secret>,
) -> Result<EndpointRoute, Skipped> {
    let field = |name: &str| -> Option<String> {
        let data = keys?.data.as_ref()?.get(name)?;
        String::from_utf8(data.0.clone()).ok()
    };
    let auth = match &route.auth {
        ClusterAuth::None => Auth::None,
        ClusterAuth::Key { .. } => match (field(PRIMARY_KEY), field(SECONDARY_KEY)) {
            (Some(primary_key), Some(secondary_key))
                if !primary_key.is_empty() && !secondary_key.is_empty() =>
            {
                Auth::Key {
                    primary_key,
                    secondary_key,
                }
            }
            _ => return Err(Skipped::NoKeys),
        },
        ClusterAuth::Token { .. } => match field(TOKEN_SIGNING_KEY) {
            Some(signing_key) if !signing_key.is_empty() => Auth::Token { signing_key },
            _ => return Err(Skipped::NoKeys),
        },
        ClusterAuth::Unknown => return Err(Skipped::UnknownAuth),
    };
    let deployments = route
        .deployments
        .iter()
        .map(|d| DeploymentRoute {
            name: d.name.clone(),
            traffic: d.traffic,
            mirror: d.mirror,
            scoring_path: d.scoring_path.clone(),
            request_settings: settings(d.request_settings),
            backends: backends(namespace, &d.service, &d.port_name, slices),
        })
        .collect();
    Ok(EndpointRoute {
        name: route.endpoint.clone(),
        auth,
        deployments,
    })
}

/// The router's form of the settings a route carries.
fn settings(s: ClusterRequestSettings) -> RequestSettings {
    RequestSettings {
        request_timeout_ms: s.request_timeout_ms,
        max_concurrent_requests_per_instance: s.max_concurrent_requests_per_instance,
        max_queue_wait_ms: s.max_queue_wait_ms,
    }
}

/// The instances of Service `service`: every address of every endpoint in its slices, with the
/// port named `port_name`; ready as the slice says (absent means ready). An address listed in
/// two slices (during an EndpointSlice hand-over) appears once, ready if either says so.
pub fn backends(
    namespace: &str,
    service: &str,
    port_name: &str,
    slices: &[&EndpointSlice],
) -> Vec<Backend> {
    let mut seen: BTreeMap<String, bool> = BTreeMap::new();
    for slice in slices {
        let ours = slice.metadata.namespace.as_deref() == Some(namespace)
            && slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .map(String::as_str)
                == Some(service);
        if !ours || !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        let Some(port) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or("") == port_name)
            .and_then(|p| p.port)
        else {
            continue;
        };
        for ep in slice.endpoints.iter().flatten() {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            for ip in &ep.addresses {
                let address = match ip.parse::<std::net::IpAddr>() {
                    Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
                    Ok(std::net::IpAddr::V4(v4)) => format!("{v4}:{port}"),
                    Err(_) => continue,
                };
                *seen.entry(address).or_insert(false) |= ready;
            }
        }
    }
    seen.into_iter()
        .map(|(address, ready)| Backend { address, ready })
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use serde::Deserialize;

    use super::*;

    const SLICES: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/online/endpointslices.yaml"
    ));

    fn slices() -> Vec<EndpointSlice> {
        serde_yaml::Deserializer::from_str(SLICES)
            .map(|d| EndpointSlice::deserialize(d).unwrap())
            .collect()
    }

    fn route() -> ClusterRoute {
        serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/online/route.json"
        )))
        .unwrap()
    }

    fn keys() -> Secret {
        Secret {
            data: Some(BTreeMap::from([
                (PRIMARY_KEY.to_string(), ByteString(b"k1".to_vec())),
                (SECONDARY_KEY.to_string(), ByteString(b"k2".to_vec())),
            ])),
            ..Secret::default()
        }
    }

    // The addresses are fixture data (fake pod IPs): the test checks the translation and never dials.
    #[test]
    fn slices_become_instances_with_readiness() {
        let all = slices();
        let refs: Vec<&EndpointSlice> = all.iter().collect();
        let blue = backends("ns", "blue", "http", &refs);
        assert_eq!(
            blue,
            vec![
                Backend {
                    address: "10.244.0.5:5001".into(),
                    ready: true
                },
                Backend {
                    address: "10.244.0.6:5001".into(),
                    ready: false
                },
                // Listed in two slices, ready in one.
                Backend {
                    address: "10.244.0.7:5001".into(),
                    ready: true
                },
            ]
        );
        // Another namespace's Service of the same name and an unnamed port are ignored.
        assert!(backends("other", "green", "http", &refs).is_empty());
        assert_eq!(
            backends("ns", "green", "http", &refs)[0].address,
            "[fd00::1]:8000"
        );
    }

    #[test]
    fn the_route_joins_slices_and_keys_and_fails_closed_without_keys() {
        let all = slices();
        let refs: Vec<&EndpointSlice> = all.iter().collect();
        let r = route();
        assert_eq!(endpoint_route(&r, "ns", &refs, None), Err(Skipped::NoKeys));
        let k = keys();
        let e = endpoint_route(&r, "ns", &refs, Some(&k)).unwrap();
        assert!(matches!(&e.auth, Auth::Key { primary_key, .. } if primary_key == "k1"));
        assert_eq!(e.deployments[0].traffic, 90);
        assert_eq!(e.deployments[1].scoring_path, "/predict");
        assert_eq!(e.deployments[1].backends.len(), 1);
        assert_eq!(e.deployments[1].request_settings.request_timeout_ms, 1000);
        assert_eq!(e.deployments[1].request_settings.max_queue_wait_ms, 500);
        let unknown = ClusterRoute {
            auth: ClusterAuth::Unknown,
            ..r.clone()
        };
        assert_eq!(
            endpoint_route(&unknown, "ns", &refs, Some(&k)),
            Err(Skipped::UnknownAuth)
        );
        let table = super::super::table::RoutingTable { endpoints: vec![e] };
        table.validate().unwrap();
    }
}
