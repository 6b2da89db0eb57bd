//! The OnlineEndpoint's status: a pure function of the routing and what was materialised.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{
    httproute::scoring_path,
    routing::{Routing, keys_secret_name},
};
use crate::{
    api::{
        common::condition_types::{READY, RESOLVED},
        online_endpoint::{AuthMode, OnlineEndpoint, OnlineEndpointStatus, ProvisioningState},
    },
    operator::conditions,
};

/// Condition on the HTTPRoute, present when a gateway is configured.
pub const GATEWAY_ROUTED: &str = "GatewayRouted";

/// What became of the HTTPRoute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gateway {
    /// No `--gateway`: no HTTPRoute, no condition.
    NotConfigured,
    /// `--gateway` set, but the HTTPRoute CRD is not installed.
    NotInstalled,
    Applied,
}

/// Reasons that say a deployment named in traffic does not exist.
const MISSING: [&str; 2] = ["TrafficToMissingDeployment", "MirrorToMissingDeployment"];

/// The new status of `endpoint`.
pub fn compute(
    endpoint: &OnlineEndpoint,
    routing: &Routing,
    keys_ready: bool,
    gateway: Gateway,
    router_url: &str,
    now: &Time,
) -> OnlineEndpointStatus {
    let old = endpoint.status.clone().unwrap_or_default();
    let generation = endpoint.metadata.generation;
    let name = routing.route.endpoint.as_str();
    let mut st = OnlineEndpointStatus {
        conditions: old.conditions,
        observed_generation: generation,
        scoring_uri: Some(format!(
            "{}{}",
            router_url.trim_end_matches('/'),
            scoring_path(name)
        )),
        keys_secret_name: (endpoint.spec.auth_mode != AuthMode::None)
            .then(|| keys_secret_name(name)),
        traffic_applied: routing.traffic_applied.clone(),
        mirror_traffic_applied: routing.mirror_applied.clone(),
        deployments: routing.readiness.clone(),
        ..OnlineEndpointStatus::default()
    };
    let auth_ready = endpoint.spec.auth_mode == AuthMode::None || keys_ready;
    st.provisioning_state = Some(if auth_ready {
        ProvisioningState::Succeeded
    } else {
        ProvisioningState::Creating
    });

    let missing: Vec<&str> = routing
        .problems
        .iter()
        .filter(|p| MISSING.contains(&p.reason))
        .map(|p| p.message.as_str())
        .collect();
    match routing
        .problems
        .iter()
        .find(|p| MISSING.contains(&p.reason))
    {
        Some(p) => conditions::set(
            &mut st.conditions,
            RESOLVED,
            false,
            p.reason,
            missing.join("; "),
            generation,
            now,
        ),
        None => conditions::set(
            &mut st.conditions,
            RESOLVED,
            true,
            "DeploymentsFound",
            "every deployment named in traffic and mirrorTraffic exists",
            generation,
            now,
        ),
    }
    let messages: Vec<&str> = routing
        .problems
        .iter()
        .map(|p| p.message.as_str())
        .collect();
    match routing.problems.first() {
        Some(p) => conditions::set(
            &mut st.conditions,
            READY,
            false,
            p.reason,
            messages.join("; "),
            generation,
            now,
        ),
        None if !auth_ready => conditions::set(
            &mut st.conditions,
            READY,
            false,
            "KeysPending",
            "the keys Secret is being created",
            generation,
            now,
        ),
        None => conditions::set(
            &mut st.conditions,
            READY,
            true,
            "TrafficApplied",
            "the router applies traffic and mirrorTraffic as specified",
            generation,
            now,
        ),
    }
    match gateway {
        Gateway::NotConfigured => conditions::remove(&mut st.conditions, GATEWAY_ROUTED),
        Gateway::NotInstalled => conditions::set(
            &mut st.conditions,
            GATEWAY_ROUTED,
            false,
            "GatewayAPINotInstalled",
            "a gateway is configured but the HTTPRoute CRD (gateway.networking.k8s.io/v1) is not installed; the built-in router still serves the endpoint",
            generation,
            now,
        ),
        Gateway::Applied => conditions::set(
            &mut st.conditions,
            GATEWAY_ROUTED,
            true,
            "HTTPRouteApplied",
            "the HTTPRoute carries the applied traffic, mirror and pinning rules",
            generation,
            now,
        ),
    }
    st
}
