//! The cluster form of an endpoint's route, and its translation into the router's table.
//!
//! The OnlineEndpoint controller writes one [`ClusterRoute`] per endpoint as JSON into the
//! ConfigMap `<endpoint>-routing` (label `mlcompute.io/routing-table: "true"`, key
//! `route.json`). It names backends by Service and port, and keys by Secret, because instances
//! come and go faster than the controller should rewrite anything: the router's cluster source
//! ([`super::cluster_source`]) joins the route with the Services' EndpointSlices and the keys
//! Secret into an [`EndpointRoute`] with instance addresses. That join is [`endpoint_route`],
//! a pure function.
//!
//! ```json
//! { "endpoint": "fraud", "auth": { "mode": "key", "secretName": "fraud-keys" },
//!   "deployments": [
//!     { "name": "blue", "traffic": 90, "service": "blue", "port": 5001, "portName": "http" },
//!     { "name": "green", "traffic": 10, "service": "green", "port": 5001, "portName": "http" } ] }
//! ```

use std::collections::BTreeMap;

use k8s_openapi::api::{core::v1::Secret, discovery::v1::EndpointSlice};
use serde::{Deserialize, Serialize};

use super::table::{Auth, Backend, DeploymentRoute, EndpointRoute, RequestSettings};

/// Label EndpointSlices carry naming their Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Keys in the keys Secret.
pub const PRIMARY_KEY: &str = "primaryKey";
pub const SECONDARY_KEY: &str = "secondaryKey";
/// Key in the keys Secret holding the key tokens are signed with (aml_token mode).
pub const TOKEN_SIGNING_KEY: &str = "tokenSigningKey";

/// One endpoint's route with backends by Service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRoute {
    /// The OnlineEndpoint name.
    pub endpoint: String,
    /// Who may call it.
    #[serde(default)]
    pub auth: ClusterAuth,
    /// Every deployment of the endpoint, sorted by name (0 % ones are reachable by pinning).
    #[serde(default)]
    pub deployments: Vec<ClusterDeployment>,
}

/// Authentication, with keys kept in a Secret (never in the ConfigMap).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "camelCase")]
pub enum ClusterAuth {
    #[default]
    None,
    #[serde(rename_all = "camelCase")]
    Key { secret_name: String },
    #[serde(rename_all = "camelCase")]
    Token { secret_name: String },
}

/// One deployment: the router's [`DeploymentRoute`] fields, with a Service instead of backends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterDeployment {
    pub name: String,
    #[serde(default)]
    pub traffic: u32,
    #[serde(default)]
    pub mirror: u32,
    pub scoring_path: String,
    #[serde(default)]
    pub request_settings: RequestSettings,
    /// Service in the endpoint's namespace whose EndpointSlices list the instances.
    pub service: String,
    /// The Service port (for an HTTPRoute backendRef).
    pub port: i32,
    /// The Service port's name, looked up in EndpointSlices for the instance port.
    pub port_name: String,
}

/// Why an endpoint was left out of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skipped {
    /// Key or token auth and the Secret (or its key) is not (yet) seen: failing closed, the
    /// endpoint is absent.
    NoKeys,
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
    };
    let deployments = route
        .deployments
        .iter()
        .map(|d| DeploymentRoute {
            name: d.name.clone(),
            traffic: d.traffic,
            mirror: d.mirror,
            scoring_path: d.scoring_path.clone(),
            request_settings: d.request_settings,
            backends: backends(namespace, &d.service, &d.port_name, slices),
        })
        .collect();
    Ok(EndpointRoute {
        name: route.endpoint.clone(),
        auth,
        deployments,
    })
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

    use super::*;

    const SLICES: &str = include_str!("../../tests/fixtures/online/endpointslices.yaml");

    fn slices() -> Vec<EndpointSlice> {
        serde_yaml::Deserializer::from_str(SLICES)
            .map(|d| EndpointSlice::deserialize(d).unwrap())
            .collect()
    }

    fn route() -> ClusterRoute {
        serde_json::from_str(include_str!("../../tests/fixtures/online/route.json")).unwrap()
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
        let table = super::super::table::RoutingTable { endpoints: vec![e] };
        table.validate().unwrap();
    }
}
