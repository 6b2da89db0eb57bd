//! The OnlineDeployment's status: a pure function of what was resolved and the observed
//! Deployment. Conditions keep their lastTransitionTime, so an unchanged world yields an equal
//! status and nothing is written.

use k8s_openapi::{api::apps::v1::Deployment, apimachinery::pkg::apis::meta::v1::Time};

use super::build;
use crate::{
    api::{
        common::condition_types::{PROGRESSING, READY, RESOLVED},
        online_deployment::{OnlineDeployment, OnlineDeploymentStatus},
        online_endpoint::ProvisioningState,
    },
    online::{
        Transition,
        resolve::{Missing, Resolved},
    },
    operator::conditions,
};

/// Whether the endpoint the deployment names exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointPresence {
    Found,
    NotFound,
}

/// What the Deployment reports, reduced to what status needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub exists: bool,
    pub desired: i32,
    pub replicas: i32,
    pub ready: i32,
    pub updated: i32,
    /// The Deployment controller has seen the latest Deployment spec.
    pub current: bool,
    /// Why the ReplicaSet cannot create Pods (the Deployment's `ReplicaFailure` condition, with
    /// reason `FailedCreate`): admission (PodSecurity, quota, a webhook) refused them.
    pub pods_rejected: Option<String>,
}

impl Observed {
    pub fn from_deployment(d: Option<&Deployment>) -> Self {
        let Some(d) = d else {
            return Self::default();
        };
        let st = d.status.clone().unwrap_or_default();
        let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        Observed {
            exists: true,
            desired,
            replicas: st.replicas.unwrap_or(0),
            ready: st.ready_replicas.unwrap_or(0),
            updated: st.updated_replicas.unwrap_or(0),
            current: st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0),
            pods_rejected: st
                .conditions
                .iter()
                .flatten()
                .find(|c| {
                    c.type_ == "ReplicaFailure"
                        && c.status == "True"
                        && c.reason.as_deref() == Some("FailedCreate")
                })
                .map(|c| {
                    c.message
                        .clone()
                        .unwrap_or_else(|| "the API server refused the instances' Pods".into())
                }),
        }
    }
}

/// Ready's reason when admission refuses the instances' Pods.
pub const PODS_REJECTED: &str = "PodsRejected";

/// The new status of `od`.
pub fn compute(
    od: &OnlineDeployment,
    resolution: &Result<Resolved, Missing>,
    endpoint: EndpointPresence,
    observed: Observed,
    now: &Time,
) -> OnlineDeploymentStatus {
    let old = od.status.clone().unwrap_or_default();
    let generation = od.metadata.generation;
    let mut st = OnlineDeploymentStatus {
        conditions: old.conditions.clone(),
        observed_generation: generation,
        selector: Some(build::selector_string(od)),
        image: old.image.clone(),
        environment_version: old.environment_version.clone(),
        ..OnlineDeploymentStatus::default()
    };
    let blocked = match (resolution, endpoint) {
        (Err(m), _) => Some((m.reason, m.message.clone())),
        (Ok(_), EndpointPresence::NotFound) => Some((
            "EndpointNotFound",
            format!(
                "OnlineEndpoint {:?} does not exist in this namespace; the deployment starts once it is created",
                od.spec.endpoint_name
            ),
        )),
        (Ok(_), EndpointPresence::Found) => None,
    };
    match (&blocked, resolution) {
        (Some((reason, message)), _) => conditions::set(
            &mut st.conditions,
            RESOLVED,
            false,
            reason,
            message.clone(),
            generation,
            now,
        ),
        (None, Ok(r)) => {
            st.image = Some(r.image.clone());
            st.environment_version = r.environment_version.clone();
            conditions::set(
                &mut st.conditions,
                RESOLVED,
                true,
                "Resolved",
                r.summary(),
                generation,
                now,
            )
        }
        (None, Err(_)) => {}
    }
    if observed.exists {
        st.replicas = Some(observed.replicas);
        st.ready_instances = Some(observed.ready);
        st.updated_instances = Some(observed.updated);
    }

    // Old-template instances still exist (or the Deployment controller has not seen the spec).
    let rolling = observed.exists && (!observed.current || observed.updated < observed.replicas);
    let scaling = observed.exists && !rolling && observed.ready != observed.desired;
    let was_creating = matches!(
        old.provisioning_state,
        None | Some(ProvisioningState::Creating)
    );
    st.provisioning_state = Some(
        if !observed.exists || (was_creating && observed.ready == 0) {
            ProvisioningState::Creating
        } else if rolling {
            ProvisioningState::Updating
        } else if scaling {
            ProvisioningState::Scaling
        } else {
            ProvisioningState::Succeeded
        },
    );

    let (ready, reason, message) = match (&blocked, observed.ready) {
        (Some((reason, _)), 0) => (
            false,
            *reason,
            "not started: see the Resolved condition".to_string(),
        ),
        (_, 0) if observed.pods_rejected.is_some() => (
            false,
            PODS_REJECTED,
            format!(
                "the instances' Pods are refused: {}",
                observed.pods_rejected.clone().unwrap_or_default()
            ),
        ),
        (_, 0) => (
            false,
            "NoReadyInstances",
            format!("0 of {} instances ready", observed.desired),
        ),
        (_, n) => (
            true,
            "InstancesReady",
            format!("{n} of {} instances ready", observed.desired),
        ),
    };
    conditions::set(
        &mut st.conditions,
        READY,
        ready,
        reason,
        message,
        generation,
        now,
    );
    let (progressing, reason, message) = if let Some(why) = &observed.pods_rejected {
        // Waiting does not help: the spec or the namespace's policy must change.
        (
            false,
            PODS_REJECTED,
            format!("the instances' Pods are refused: {why}"),
        )
    } else if rolling {
        (
            true,
            "RollingUpdate",
            format!(
                "{} of {} instances updated",
                observed.updated, observed.desired
            ),
        )
    } else if scaling {
        (
            true,
            "Scaling",
            format!("{} of {} instances ready", observed.ready, observed.desired),
        )
    } else if observed.exists {
        (
            false,
            "RolloutComplete",
            "all instances run the current spec".to_string(),
        )
    } else {
        (false, "NotStarted", "no instances yet".to_string())
    };
    conditions::set(
        &mut st.conditions,
        PROGRESSING,
        progressing,
        reason,
        message,
        generation,
        now,
    );
    st
}

/// The conditions that changed (Progressing excluded: it flips on every rollout), for Events.
pub fn transitions(
    old: Option<&OnlineDeploymentStatus>,
    new: &OnlineDeploymentStatus,
) -> Vec<Transition> {
    let old = old.map(|o| o.conditions.as_slice()).unwrap_or_default();
    crate::online::transitions(old, &new.conditions, &[PROGRESSING])
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    use super::*;
    use crate::online::resolve::resolve_from;

    fn od() -> OnlineDeployment {
        serde_json::from_value(json!({
            "apiVersion": "mlcompute.io/v1alpha1", "kind": "OnlineDeployment",
            "metadata": { "name": "blue", "namespace": "ns", "generation": 2 },
            "spec": { "endpointName": "fraud", "image": "x", "instanceCount": 2 },
        }))
        .unwrap()
    }

    fn now() -> Time {
        Time(Timestamp::from_second(100).unwrap())
    }

    #[test]
    fn missing_endpoint_is_a_condition() {
        let d = od();
        let r = resolve_from(&d, None, None);
        let st = compute(
            &d,
            &r,
            EndpointPresence::NotFound,
            Observed::default(),
            &now(),
        );
        let c = st.conditions.iter().find(|c| c.type_ == RESOLVED).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "EndpointNotFound")
        );
        assert_eq!(st.provisioning_state, Some(ProvisioningState::Creating));
    }

    #[test]
    fn ready_deployment_succeeds_and_recomputing_is_stable() {
        let mut d = od();
        let r = resolve_from(&d, None, None);
        let seen = Observed {
            exists: true,
            desired: 2,
            replicas: 2,
            ready: 2,
            updated: 2,
            current: true,
            pods_rejected: None,
        };
        let st = compute(&d, &r, EndpointPresence::Found, seen.clone(), &now());
        assert_eq!(st.provisioning_state, Some(ProvisioningState::Succeeded));
        assert_eq!(
            (st.ready_instances, st.selector.as_deref()),
            (
                Some(2),
                Some("app.kubernetes.io/managed-by=mlcompute,mlcompute.io/onlinedeployment=blue")
            )
        );
        assert_eq!(transitions(None, &st).len(), 2);
        d.status = Some(st.clone());
        let later = Time(Timestamp::from_second(200).unwrap());
        assert_eq!(
            compute(&d, &r, EndpointPresence::Found, seen.clone(), &later),
            st
        );
        let scaling = Observed { desired: 3, ..seen };
        let st2 = compute(&d, &r, EndpointPresence::Found, scaling, &later);
        assert_eq!(st2.provisioning_state, Some(ProvisioningState::Scaling));
        assert!(transitions(Some(&st), &st2).is_empty());
    }

    #[test]
    fn pods_refused_by_admission_are_reported_with_the_servers_message() {
        let d = od();
        let r = resolve_from(&d, None, None);
        let deployment: Deployment = serde_json::from_value(json!({
            "metadata": { "name": "blue", "generation": 1 },
            "spec": { "replicas": 2, "selector": {}, "template": {} },
            "status": { "observedGeneration": 1, "conditions": [
                { "type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable" },
                { "type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                  "message": "pods \"blue-1\" is forbidden: violates PodSecurity \"restricted:latest\": runAsNonRoot != true" }
            ] }
        }))
        .unwrap();
        let seen = Observed::from_deployment(Some(&deployment));
        let st = compute(&d, &r, EndpointPresence::Found, seen, &now());
        let ready = st.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", PODS_REJECTED)
        );
        assert!(
            ready.message.contains("violates PodSecurity"),
            "{}",
            ready.message
        );
        let changed = transitions(None, &st);
        assert!(
            changed.iter().any(|t| t.reason == PODS_REJECTED),
            "{changed:?}"
        );
    }
}
