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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub exists: bool,
    pub desired: i32,
    pub replicas: i32,
    pub ready: i32,
    pub updated: i32,
    /// The Deployment controller has seen the latest Deployment spec.
    pub current: bool,
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
        }
    }
}

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
    let (progressing, reason, message) = if rolling {
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
        };
        let st = compute(&d, &r, EndpointPresence::Found, seen, &now());
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
        assert_eq!(compute(&d, &r, EndpointPresence::Found, seen, &later), st);
        let scaling = Observed { desired: 3, ..seen };
        let st2 = compute(&d, &r, EndpointPresence::Found, scaling, &later);
        assert_eq!(st2.provisioning_state, Some(ProvisioningState::Scaling));
        assert!(transitions(Some(&st), &st2).is_empty());
    }
}
