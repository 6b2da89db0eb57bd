//! The OnlineEndpoint's status: a pure function of the routing and what was materialised.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::routing::Routing;
use crate::{
    api::{
        common::condition_types::RESOLVED,
        online_endpoint::{AuthMode, OnlineEndpoint, OnlineEndpointStatus, ProvisioningState},
    },
    contract::{
        keys::secret_name as keys_secret_name,
        router_http::{scoring_path, swagger_path},
    },
    runtime::{
        conditions::{self, Progress},
        names::{NAME_TAKEN, taken_message},
    },
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
    /// Not applied (and deleted) because another namespace holds the endpoint's name.
    Withheld,
}

/// The `Ready` message of an endpoint whose name `holder_namespace` holds.
pub fn name_taken_message(name: &str, holder_namespace: &str) -> String {
    taken_message("endpoint", "scoring URIs", name, holder_namespace)
}

/// Reasons that say a deployment named in traffic does not exist.
const MISSING: [&str; 2] = ["TrafficToMissingDeployment", "MirrorToMissingDeployment"];

/// The new status of `endpoint`. `name_taken`: the namespace holding the endpoint's name, when
/// another one does; then nothing is routed, so there is no scoring URI and no applied traffic.
pub fn compute(
    endpoint: &OnlineEndpoint,
    routing: &Routing,
    keys_ready: bool,
    gateway: Gateway,
    name_taken: Option<&str>,
    router_url: &str,
    now: &Time,
) -> OnlineEndpointStatus {
    let old = endpoint.status.clone().unwrap_or_default();
    let generation = endpoint.metadata.generation;
    let name = routing.route.endpoint.as_str();
    let routed = name_taken.is_none();
    let router_url = router_url.trim_end_matches('/');
    let mut st = OnlineEndpointStatus {
        conditions: old.conditions,
        observed_generation: generation,
        scoring_uri: routed.then(|| format!("{router_url}{}", scoring_path(name))),
        // Beside the scoring URI, as on Azure ML's Kubernetes router; the router answers it with
        // the serving deployment's `/swagger.json`.
        openapi_uri: routed.then(|| format!("{router_url}{}", swagger_path(name))),
        keys_secret_name: (endpoint.spec.auth_mode != AuthMode::None)
            .then(|| keys_secret_name(name)),
        traffic_applied: if routed {
            routing.traffic_applied.clone()
        } else {
            Default::default()
        },
        mirror_traffic_applied: if routed {
            routing.mirror_applied.clone()
        } else {
            Default::default()
        },
        deployments: routing.readiness.clone(),
        ..OnlineEndpointStatus::default()
    };
    let auth_ready = endpoint.spec.auth_mode == AuthMode::None || keys_ready;
    st.provisioning_state = Some(if !routed {
        ProvisioningState::Failed
    } else if auth_ready {
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
    // By the kstatus conventions: a taken name needs a change (Stalled); traffic to a deployment
    // that does not exist yet or has no ready instance is waited for (GitOps applies the objects
    // of one sync in any order; a deployment starts), as are the keys; otherwise done. An
    // endpoint without traffic and deployments is done too (Azure ML provisions it Succeeded).
    let progress = match (name_taken, routing.problems.first()) {
        (Some(holder), _) => Progress::stalled(NAME_TAKEN, name_taken_message(name, holder)),
        (None, Some(p)) => Progress::working(p.reason, messages.join("; ")),
        (None, None) if !auth_ready => {
            Progress::working("KeysPending", "the keys Secret is being created")
        }
        (None, None) => Progress::done(
            "TrafficApplied",
            "the router applies traffic and mirrorTraffic as specified",
        ),
    };
    conditions::progress(&mut st.conditions, &progress, generation, now);
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
        Gateway::Withheld => conditions::set(
            &mut st.conditions,
            GATEWAY_ROUTED,
            false,
            NAME_TAKEN,
            "no HTTPRoute while another namespace holds the endpoint's name (see Ready)",
            generation,
            now,
        ),
    }
    st
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::{controllers::online::endpoint::routing, runtime::conditions::READY};

    fn endpoint() -> OnlineEndpoint {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "iris", "namespace": "team-b", "generation": 1 },
            "spec": { "traffic": {} }
        }))
        .unwrap()
    }

    fn ready(st: &OnlineEndpointStatus) -> (&str, &str, &str) {
        let c = st.conditions.iter().find(|c| c.type_ == READY).unwrap();
        (c.status.as_str(), c.reason.as_str(), c.message.as_str())
    }

    fn types_true(st: &OnlineEndpointStatus) -> Vec<&str> {
        st.conditions
            .iter()
            .filter(|c| {
                c.status == "True"
                    && ["Ready", "Reconciling", "Stalled"].contains(&c.type_.as_str())
            })
            .map(|c| c.type_.as_str())
            .collect()
    }

    #[test]
    fn an_endpoint_waits_for_its_deployments_and_without_any_is_done() {
        let now = Time(Timestamp::UNIX_EPOCH);
        let url = "http://router:8080";
        // No traffic, no deployment: done (Azure ML provisions such an endpoint Succeeded).
        let empty = endpoint();
        let r = routing::compute(&empty, &[]);
        let st = compute(&empty, &r, true, Gateway::NotConfigured, None, url, &now);
        assert_eq!(types_true(&st), ["Ready"]);
        // Traffic to a deployment that does not exist yet: waited for, saying which.
        let mut ghost = endpoint();
        ghost.spec.traffic.insert("ghost".into(), 100);
        let r = routing::compute(&ghost, &[]);
        let st = compute(&ghost, &r, true, Gateway::NotConfigured, None, url, &now);
        assert_eq!(types_true(&st), ["Reconciling"]);
        let c = st
            .conditions
            .iter()
            .find(|c| c.type_ == "Reconciling")
            .unwrap();
        assert_eq!(c.reason, "TrafficToMissingDeployment");
        assert!(c.message.contains("\"ghost\""), "{}", c.message);
        assert_eq!(ready(&st).0, "False");
        // The keys still being created: waited for.
        let r = routing::compute(&empty, &[]);
        let st = compute(&empty, &r, false, Gateway::NotConfigured, None, url, &now);
        assert_eq!(types_true(&st), ["Reconciling"]);
    }

    #[test]
    fn a_taken_name_has_no_scoring_uri_and_says_who_holds_it() {
        let ep = endpoint();
        let r = routing::compute(&ep, &[]);
        let now = Time(Timestamp::UNIX_EPOCH);
        let url = "http://router:8080";
        let ok = compute(&ep, &r, true, Gateway::Applied, None, url, &now);
        assert_eq!(
            ok.scoring_uri.as_deref(),
            Some("http://router:8080/api/v1/endpoint/iris/score")
        );
        assert_eq!(
            ok.openapi_uri.as_deref(),
            Some("http://router:8080/api/v1/endpoint/iris/swagger.json")
        );
        assert_eq!(ok.provisioning_state, Some(ProvisioningState::Succeeded));

        let taken = compute(&ep, &r, true, Gateway::Withheld, Some("team-a"), url, &now);
        assert_eq!(taken.scoring_uri, None);
        assert_eq!(taken.openapi_uri, None);
        assert_eq!(taken.provisioning_state, Some(ProvisioningState::Failed));
        assert_eq!(taken.keys_secret_name.as_deref(), Some("iris-keys"));
        let (status, reason, message) = ready(&taken);
        assert_eq!((status, reason), ("False", NAME_TAKEN));
        assert!(message.contains("namespace team-a"), "{message}");
        // kstatus Failed, with the same words.
        let stalled = taken
            .conditions
            .iter()
            .find(|c| c.type_ == "Stalled")
            .unwrap();
        assert_eq!(
            (stalled.status.as_str(), stalled.message.as_str()),
            ("True", message)
        );
        let gw = taken
            .conditions
            .iter()
            .find(|c| c.type_ == GATEWAY_ROUTED)
            .unwrap();
        assert_eq!(
            (gw.status.as_str(), gw.reason.as_str()),
            ("False", NAME_TAKEN)
        );
    }
}
