//! The Gateway API HTTPRoute of an endpoint, from the same [`Routing`](super::routing::Routing)
//! the built-in router gets. Pure.
//!
//! - one rule per deployment matching the pinning header `azureml-model-deployment: <name>`
//!   (header matches take precedence over the plain path match in Gateway API);
//! - one rule with the weighted backendRefs (weight = applied traffic) and, when a mirror is
//!   applied, a `RequestMirror` filter with `percent`;
//! - every rule matches the scoring URI path `/api/v1/endpoint/<endpoint>/score` exactly and
//!   rewrites it to the deployment's scoring path.
//!
//! Key auth is not expressible in Gateway API: a gateway does not check endpoint keys (use the
//! built-in router, or the gateway's own policy, for that).

use serde_json::{Value, json};

use crate::{
    api::online_endpoint::OnlineEndpoint,
    contract::{
        router_http::{PINNING_HEADER, scoring_path},
        routing::{ClusterDeployment, ClusterRoute},
        scoring_server::SCORING_PATH,
    },
    runtime::children::child_meta,
};

pub const GROUP: &str = "gateway.networking.k8s.io";
pub const VERSION: &str = "v1";
pub const KIND: &str = "HTTPRoute";
/// The CRD whose presence turns HTTPRoutes on.
pub const CRD_NAME: &str = "httproutes.gateway.networking.k8s.io";
/// Gateway API allows 16 rules per HTTPRoute: one is the weighted rule, the rest pin. Beyond
/// 15 deployments the later ones (by name) are reachable by pinning through the router only.
pub const MAX_PINNED: usize = 15;

/// The Gateway the routes attach to (`--gateway namespace/name`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayRef {
    pub namespace: String,
    pub name: String,
}

impl std::str::FromStr for GatewayRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(GatewayRef {
                    namespace: ns.into(),
                    name: name.into(),
                })
            }
            _ => Err(format!("gateway {s:?} is not <namespace>/<name>")),
        }
    }
}

fn backend_ref(d: &ClusterDeployment, weight: u32) -> Value {
    json!({ "name": d.service, "port": d.port, "weight": weight })
}

fn rewrite(path: &str) -> Value {
    json!({ "type": "URLRewrite", "urlRewrite": { "path": { "type": "ReplaceFullPath", "replaceFullPath": path } } })
}

/// The HTTPRoute for `endpoint` with routing `route`, attached to `gateway`.
pub fn http_route(endpoint: &OnlineEndpoint, route: &ClusterRoute, gateway: &GatewayRef) -> Value {
    let path = scoring_path(&route.endpoint);
    let path_match = json!({ "type": "Exact", "value": path });
    let mut rules: Vec<Value> = route
        .deployments
        .iter()
        .take(MAX_PINNED)
        .map(|d| {
            json!({
                "matches": [{ "path": path_match, "headers": [{ "type": "Exact", "name": PINNING_HEADER, "value": d.name }] }],
                "filters": [rewrite(&d.scoring_path)],
                "backendRefs": [backend_ref(d, 1)],
            })
        })
        .collect();
    let live: Vec<&ClusterDeployment> =
        route.deployments.iter().filter(|d| d.traffic > 0).collect();
    // Gateway API rewrites per rule: the live rule uses the scoring path of its largest share.
    let main_path = live
        .iter()
        .max_by_key(|d| d.traffic)
        .map_or(SCORING_PATH, |d| d.scoring_path.as_str());
    let mut filters = vec![rewrite(main_path)];
    if let Some(m) = route.deployments.iter().find(|d| d.mirror > 0) {
        filters.push(json!({
            "type": "RequestMirror",
            "requestMirror": { "backendRef": { "name": m.service, "port": m.port }, "percent": m.mirror },
        }));
    }
    rules.push(json!({
        "matches": [{ "path": path_match }],
        "filters": filters,
        "backendRefs": live.iter().map(|d| backend_ref(d, d.traffic)).collect::<Vec<_>>(),
    }));
    let meta = child_meta(endpoint, route.endpoint.clone(), "httproute");
    json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": KIND,
        "metadata": meta,
        "spec": {
            "parentRefs": [{ "group": GROUP, "kind": "Gateway", "namespace": gateway.namespace, "name": gateway.name }],
            "rules": rules,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::routing::ClusterRequestSettings;

    fn dep(name: &str, traffic: u32, mirror: u32) -> ClusterDeployment {
        ClusterDeployment {
            name: name.into(),
            traffic,
            mirror,
            scoring_path: "/score".into(),
            request_settings: ClusterRequestSettings::default(),
            service: name.into(),
            port: 5001,
            port_name: "http".into(),
        }
    }

    #[test]
    fn weights_mirror_and_pinning() {
        let ep: OnlineEndpoint = serde_json::from_value(json!({
            "apiVersion": "mlcompute.io/v1alpha1", "kind": "OnlineEndpoint",
            "metadata": { "name": "fraud", "namespace": "ns", "uid": "u" }, "spec": {} }))
        .unwrap();
        let route = ClusterRoute {
            endpoint: "fraud".into(),
            deployments: vec![
                dep("blue", 90, 0),
                dep("green", 10, 0),
                dep("shadow", 0, 20),
            ],
            ..ClusterRoute::default()
        };
        let gw: GatewayRef = "infra/public".parse().unwrap();
        let r = http_route(&ep, &route, &gw);
        let rules = r["spec"]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 4);
        assert_eq!(rules[2]["matches"][0]["headers"][0]["value"], "shadow");
        let main = &rules[3];
        assert_eq!(main["backendRefs"][0]["weight"], 90);
        assert_eq!(main["backendRefs"][1]["weight"], 10);
        assert_eq!(main["backendRefs"].as_array().unwrap().len(), 2);
        assert_eq!(main["filters"][1]["requestMirror"]["percent"], 20);
        assert_eq!(
            main["matches"][0]["path"]["value"],
            "/api/v1/endpoint/fraud/score"
        );
        assert_eq!(r["spec"]["parentRefs"][0]["namespace"], "infra");
        assert_eq!(r["metadata"]["ownerReferences"][0]["name"], "fraud");
        assert!("nope".parse::<GatewayRef>().is_err());
    }
}
