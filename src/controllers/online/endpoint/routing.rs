//! The routing table of one endpoint: ONE pure function of the endpoint, its deployments and
//! their readiness. Both the built-in router's ConfigMap and the HTTPRoute are built from its
//! result, so they never disagree.
//!
//! Traffic to a deployment that is missing (no OnlineDeployment of that name for this
//! endpoint) or not ready (no ready instance) is never silently dropped, and never sent to a
//! backend that cannot answer: that share is **excluded**, the remaining live shares are
//! scaled up in proportion to sum to 100 (largest remainder), `status.trafficApplied` shows
//! the split in force, and the `Ready` condition (reason `TrafficToMissingDeployment` or
//! `TrafficToUnreadyDeployment`) says which share was moved and why. When no deployment with
//! traffic is ready, nothing takes live traffic: the router answers 503 to unpinned requests
//! (reason `NoReadyDeployment`). A mirror to a missing or unready deployment is not applied
//! (`MirrorToMissingDeployment`, `MirrorToUnreadyDeployment`). Every deployment of the endpoint
//! stays in the table, so the pinning header reaches it whatever its share.
//!
//! A deployment that scales from zero (`target_utilization` with `minInstances: 0`) counts as
//! ready with no instance: the router holds its requests while the autoscaler starts one, so its
//! share must stay with it (moving it would leave it at zero for ever).

use std::collections::BTreeMap;

use crate::{
    api::online_endpoint::{AuthMode, DeploymentReadiness, OnlineEndpoint},
    contract::{
        keys::secret_name,
        routing::{ClusterAuth, ClusterDeployment, ClusterRequestSettings, ClusterRoute},
    },
};

/// What the endpoint controller knows about one deployment of the endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeploymentView {
    pub name: String,
    pub ready_instances: i32,
    /// Scaled by the autoscaler down to zero (`minInstances: 0`): routable without an instance.
    pub scales_from_zero: bool,
    pub instances: i32,
    pub scoring_path: String,
    pub request_settings: ClusterRequestSettings,
    pub service: String,
    pub port: i32,
    pub port_name: String,
}

impl DeploymentView {
    fn ready(&self) -> bool {
        self.ready_instances > 0 || self.scales_from_zero
    }
}

/// A reason the applied routing differs from the spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

/// The routing of one endpoint and how it differs from what was asked.
#[derive(Clone, Debug, PartialEq)]
pub struct Routing {
    pub route: ClusterRoute,
    pub traffic_applied: BTreeMap<String, i32>,
    pub mirror_applied: BTreeMap<String, i32>,
    pub readiness: Vec<DeploymentReadiness>,
    /// Empty when the spec is applied exactly.
    pub problems: Vec<Problem>,
}

/// The routing of `endpoint` over `deployments` (those whose `endpointName` is this endpoint).
pub fn compute(endpoint: &OnlineEndpoint, deployments: &[DeploymentView]) -> Routing {
    let name = endpoint.metadata.name.clone().unwrap_or_default();
    let spec = &endpoint.spec;
    let find = |d: &str| deployments.iter().find(|v| v.name == d);
    let mut problems = Vec::new();

    let mut eligible: BTreeMap<String, i32> = BTreeMap::new();
    for (d, &pct) in spec.traffic.iter().filter(|(_, p)| **p > 0) {
        match find(d) {
            None => problems.push(Problem {
                reason: "TrafficToMissingDeployment",
                message: format!("traffic names deployment {d:?} ({pct} %), which does not exist for this endpoint"),
            }),
            Some(v) if !v.ready() => problems.push(Problem {
                reason: "TrafficToUnreadyDeployment",
                message: format!("deployment {d:?} ({pct} %) has no ready instance"),
            }),
            Some(_) => {
                eligible.insert(d.clone(), pct);
            }
        }
    }
    let requested: i32 = spec.traffic.values().sum();
    let traffic_applied = if requested > 0 && eligible.is_empty() {
        problems.push(Problem {
            reason: "NoReadyDeployment",
            message: "no deployment with traffic is ready: requests without the azureml-model-deployment header get 503".into(),
        });
        BTreeMap::new()
    } else {
        let applied = rescale(&eligible);
        if !problems.is_empty() {
            let split: Vec<String> = applied.iter().map(|(k, v)| format!("{k}={v}")).collect();
            problems.push(Problem {
                reason: problems[0].reason,
                message: format!(
                    "the share of those deployments goes to the others in proportion: applied {}",
                    split.join(" ")
                ),
            });
        }
        applied
    };

    let mut mirror_applied = BTreeMap::new();
    for (d, &pct) in spec.mirror_traffic.iter().filter(|(_, p)| **p > 0) {
        match find(d) {
            None => problems.push(Problem {
                reason: "MirrorToMissingDeployment",
                message: format!("mirrorTraffic names deployment {d:?}, which does not exist for this endpoint; not mirrored"),
            }),
            Some(v) if !v.ready() => problems.push(Problem {
                reason: "MirrorToUnreadyDeployment",
                message: format!("mirror deployment {d:?} has no ready instance; not mirrored"),
            }),
            Some(_) => {
                mirror_applied.insert(d.clone(), pct);
            }
        }
    }

    let mut sorted: Vec<&DeploymentView> = deployments.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let route = ClusterRoute {
        endpoint: name.clone(),
        auth: match spec.auth_mode {
            AuthMode::None => ClusterAuth::None,
            AuthMode::Key => ClusterAuth::Key {
                secret_name: secret_name(&name),
            },
            AuthMode::AmlToken => ClusterAuth::Token {
                secret_name: secret_name(&name),
            },
        },
        deployments: sorted
            .iter()
            .map(|v| ClusterDeployment {
                name: v.name.clone(),
                traffic: traffic_applied.get(&v.name).copied().unwrap_or(0).max(0) as u32,
                mirror: mirror_applied.get(&v.name).copied().unwrap_or(0).max(0) as u32,
                scoring_path: v.scoring_path.clone(),
                request_settings: v.request_settings,
                service: v.service.clone(),
                port: v.port,
                port_name: v.port_name.clone(),
            })
            .collect(),
    };
    let readiness = sorted
        .iter()
        .map(|v| DeploymentReadiness {
            name: v.name.clone(),
            ready: v.ready(),
            ready_instances: v.ready_instances,
            instances: v.instances,
        })
        .collect();
    Routing {
        route,
        traffic_applied,
        mirror_applied,
        readiness,
        problems,
    }
}

/// Scales `shares` to sum to 100 (largest remainder; ties by name), keeping exact splits exact.
fn rescale(shares: &BTreeMap<String, i32>) -> BTreeMap<String, i32> {
    let total: i64 = shares.values().map(|&v| i64::from(v)).sum();
    if total == 0 || total == 100 {
        return shares.clone();
    }
    let mut out: BTreeMap<String, i32> = BTreeMap::new();
    let mut rest: Vec<(i64, &String)> = Vec::new();
    let mut given = 0i64;
    for (k, &v) in shares {
        let scaled = i64::from(v) * 100;
        let floor = scaled / total;
        given += floor;
        out.insert(k.clone(), floor as i32);
        rest.push((scaled % total, k));
    }
    rest.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    for (_, k) in rest.into_iter().take((100 - given) as usize) {
        if let Some(v) = out.get_mut(k) {
            *v += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixture: the endpoint and its deployments' names and ready instances.
    #[derive(serde::Deserialize)]
    struct Fixture {
        endpoint: OnlineEndpoint,
        /// name → ready instances
        deployments: BTreeMap<String, i32>,
        #[serde(rename = "trafficApplied")]
        traffic_applied: BTreeMap<String, i32>,
        #[serde(default, rename = "mirrorApplied")]
        mirror_applied: BTreeMap<String, i32>,
        #[serde(default)]
        reasons: Vec<String>,
    }

    fn views(ready: &BTreeMap<String, i32>) -> Vec<DeploymentView> {
        ready
            .iter()
            .map(|(n, &r)| DeploymentView {
                name: n.clone(),
                ready_instances: r,
                scales_from_zero: false,
                instances: 2,
                scoring_path: "/score".into(),
                request_settings: ClusterRequestSettings::default(),
                service: n.clone(),
                port: 5001,
                port_name: "http".into(),
            })
            .collect()
    }

    #[test]
    fn a_deployment_that_scales_from_zero_keeps_its_traffic_at_zero_instances() {
        let endpoint: OnlineEndpoint = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "e" },
            "spec": { "traffic": { "blue": 50, "green": 50 } }
        }))
        .unwrap();
        let mut v = views(&BTreeMap::from([("blue".into(), 0), ("green".into(), 0)]));
        v[0].scales_from_zero = true;
        let r = compute(&endpoint, &v);
        assert_eq!(r.traffic_applied, BTreeMap::from([("blue".into(), 100)]));
        assert!(r.readiness[0].ready && !r.readiness[1].ready);
    }

    #[test]
    fn fixtures() {
        let all = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/online/routing-cases.yaml"
        ));
        let mut n = 0;
        for doc in serde_yaml::Deserializer::from_str(all) {
            let f: Fixture = serde::Deserialize::deserialize(doc).unwrap();
            let name = f.endpoint.metadata.name.clone().unwrap();
            let r = compute(&f.endpoint, &views(&f.deployments));
            assert_eq!(r.traffic_applied, f.traffic_applied, "{name}");
            assert_eq!(r.mirror_applied, f.mirror_applied, "{name}");
            let reasons: Vec<&str> = r.problems.iter().map(|p| p.reason).collect();
            for want in &f.reasons {
                assert!(
                    reasons.contains(&want.as_str()),
                    "{name}: {reasons:?} lacks {want}"
                );
            }
            if f.reasons.is_empty() {
                assert!(r.problems.is_empty(), "{name}: {:?}", r.problems);
            }
            // Every deployment stays routable by pinning; the table the router gets is valid.
            assert_eq!(r.route.deployments.len(), f.deployments.len(), "{name}");
            let sum: u32 = r.route.deployments.iter().map(|d| d.traffic).sum();
            assert!(sum == 0 || sum == 100, "{name}: {sum}");
            n += 1;
        }
        assert!(n >= 5);
    }

    #[test]
    fn rescale_keeps_100() {
        let m: BTreeMap<String, i32> = [
            ("a".to_string(), 33),
            ("b".to_string(), 33),
            ("c".to_string(), 1),
        ]
        .into();
        let out = rescale(&m);
        assert_eq!(out.values().sum::<i32>(), 100);
        assert_eq!(out["a"], 49);
    }
}
