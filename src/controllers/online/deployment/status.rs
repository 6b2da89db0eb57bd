//! The OnlineDeployment's status: a pure function of what was resolved, the observed Deployment
//! and its instances' Pods. Conditions keep their lastTransitionTime, so an unchanged world yields an equal
//! status and nothing is written.

use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::Pod},
    apimachinery::pkg::apis::meta::v1::Time,
};

use super::build;
use crate::{
    api::{
        common::condition_types::{PROGRESSING, READY, RESOLVED},
        online_deployment::{OnlineDeployment, OnlineDeploymentStatus},
        online_endpoint::ProvisioningState,
    },
    controllers::online::{
        Transition,
        resolve::{Missing, Resolved},
    },
    runtime::{
        conditions::{self, Progress},
        pod_problems::{self, Problem},
    },
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
    /// Why an instance of the current template cannot run (image pull, start failure, crash
    /// loop), read off its Pod.
    pub problem: Option<Problem>,
}

impl Observed {
    /// The Deployment and the instances' Pods (those carrying the deployment's label).
    pub fn from_children(d: Option<&Deployment>, pods: &[&Pod]) -> Self {
        let mut observed = Self::from_deployment(d);
        observed.problem = d.and_then(|d| {
            pod_problems::worst(pods.iter().copied().filter(|p| runs_template(p, d)))
        });
        observed
    }

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
            problem: None,
        }
    }
}

/// Whether `pod` runs the Deployment's current template, as far as its containers' images go.
/// During a rollout only the new Pods' problems are the rollout's: the old ones are on their way
/// out. The ReplicaSets' `pod-template-hash` would tell them apart too, but they are not cached,
/// and an image is what a pull problem is about.
fn runs_template(pod: &Pod, d: &Deployment) -> bool {
    let images = |cs: Option<&Vec<k8s_openapi::api::core::v1::Container>>| {
        cs.into_iter()
            .flatten()
            .map(|c| (c.name.clone(), c.image.clone()))
            .collect::<Vec<_>>()
    };
    let template = d.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    let spec = pod.spec.as_ref();
    images(template.map(|t| &t.containers)) == images(spec.map(|s| &s.containers))
        && images(template.and_then(|t| t.init_containers.as_ref()))
            == images(spec.and_then(|s| s.init_containers.as_ref()))
}

/// Ready's reason when the autoscaler scaled the deployment to zero (`minInstances: 0`).
pub const SCALED_TO_ZERO: &str = "ScaledToZero";

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
        if !observed.exists || (was_creating && observed.ready == 0 && observed.desired > 0) {
            ProvisioningState::Creating
        } else if rolling {
            ProvisioningState::Updating
        } else if scaling {
            ProvisioningState::Scaling
        } else {
            ProvisioningState::Succeeded
        },
    );

    let (ready, reason, message) = match (&blocked, observed.ready, &observed.problem) {
        (Some((reason, _)), 0, _) => (
            false,
            *reason,
            "not started: see the Resolved condition".to_string(),
        ),
        (_, 0, _) if observed.pods_rejected.is_some() => (
            false,
            PODS_REJECTED,
            format!(
                "the instances' Pods are refused: {}",
                observed.pods_rejected.clone().unwrap_or_default()
            ),
        ),
        (_, 0, Some(p)) => (false, p.kind.reason(), p.describe("instance")),
        // Scaled to zero on purpose (`minInstances: 0`): nothing is wrong, and the router holds
        // the next request while the autoscaler starts an instance.
        (None, 0, None) if observed.exists && observed.desired == 0 && observed.replicas == 0 => (
            true,
            SCALED_TO_ZERO,
            "scaled to zero: no instance runs; the next request is held at the router while the autoscaler starts one".to_string(),
        ),
        (_, 0, None) => (
            false,
            "NoReadyInstances",
            format!("0 of {} instances ready", observed.desired),
        ),
        (_, n, _) => (
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
    } else if let Some(p) = observed.problem.as_ref().filter(|_| rolling || scaling) {
        // The kubelet keeps retrying (pulls back off, a missing Secret is looked up again, a
        // crashed container restarts), so a fixed registry or Secret lets the rollout go on
        // without a spec change: still progressing, saying what holds it up. A malformed image
        // name never heals: that rollout is stuck until the spec changes.
        let done = if rolling {
            format!(
                "{} of {} instances updated",
                observed.updated, observed.desired
            )
        } else {
            format!("{} of {} instances ready", observed.ready, observed.desired)
        };
        (
            p.retrying(),
            p.kind.reason(),
            format!("{done}; {}", p.describe("instance")),
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
    let progress = kstatus(&blocked, &observed, rolling, scaling);
    conditions::mark_progress(&mut st.conditions, &progress, generation, now);
    st
}

/// Where the deployment stands by the kstatus conventions (`Ready` above stays what it says:
/// whether any instance serves, so a deployment rolling out is Ready and Reconciling at once):
/// working while a referenced object is missing (waited for: GitOps applies the objects of one
/// sync in any order) and while instances are created, rolled out or scaled; stalled when the
/// instances cannot run without a change (admission refuses their Pods; an image that cannot be
/// pulled, a container that cannot start or keeps crashing, on the current template's Pods);
/// done once every instance runs the current spec and is ready.
fn kstatus(
    blocked: &Option<(&'static str, String)>,
    observed: &Observed,
    rolling: bool,
    scaling: bool,
) -> Progress {
    if let Some((reason, message)) = blocked {
        return Missing {
            reason,
            message: message.clone(),
        }
        .progress();
    }
    if let Some(why) = &observed.pods_rejected {
        return Progress::stalled(
            PODS_REJECTED,
            format!("the instances' Pods are refused: {why}"),
        );
    }
    let held_up = rolling || scaling || observed.ready == 0;
    if let Some(p) = observed.problem.as_ref().filter(|_| held_up) {
        return Progress::stalled(p.kind.reason(), p.describe("instance"));
    }
    if !observed.exists {
        Progress::working("Creating", "the instances are being created")
    } else if rolling {
        Progress::working(
            "RollingUpdate",
            format!(
                "{} of {} instances updated; {} ready",
                observed.updated, observed.desired, observed.ready
            ),
        )
    } else if scaling {
        Progress::working(
            "Scaling",
            format!("{} of {} instances ready", observed.ready, observed.desired),
        )
    } else {
        Progress::done(
            "InstancesReady",
            "all instances run the current spec and are ready",
        )
    }
}

/// The conditions that changed, for Events. Progressing is left out (it flips on every rollout)
/// except when a rollout is held up by its Pods while Ready stays True: nothing else would tell.
pub fn transitions(
    old: Option<&OnlineDeploymentStatus>,
    new: &OnlineDeploymentStatus,
) -> Vec<Transition> {
    let old = old.map(|o| o.conditions.as_slice()).unwrap_or_default();
    let ready = conditions::is_true(&new.conditions, READY);
    crate::controllers::online::transitions(old, &new.conditions, &[])
        .into_iter()
        .filter(|t| t.type_ != PROGRESSING || (ready && pod_problems::is_reason(&t.reason)))
        // A stuck rollout is a Warning although the condition is True.
        .map(|t| Transition {
            ok: t.ok && t.type_ != PROGRESSING,
            ..t
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    use super::*;
    use crate::{
        controllers::online::resolve::resolve_from,
        runtime::conditions::{RECONCILING, STALLED},
    };

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
        // Waiting for the endpoint (GitOps may apply it later in the same sync), not failed.
        let (status, reason, message) = condition(&st, RECONCILING);
        assert_eq!((status, reason), ("True", "EndpointNotFound"));
        assert!(message.contains("\"fraud\" does not exist"), "{message}");
        assert!(st.conditions.iter().all(|c| c.type_ != STALLED));
        // No Event of its own: Resolved says it.
        assert!(
            transitions(None, &st)
                .iter()
                .all(|t| t.type_ != RECONCILING)
        );
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
            ..Observed::default()
        };
        let st = compute(&d, &r, EndpointPresence::Found, seen.clone(), &now());
        assert_eq!(st.provisioning_state, Some(ProvisioningState::Succeeded));
        // Done: neither Reconciling nor Stalled (kstatus Current).
        assert!(
            st.conditions
                .iter()
                .all(|c| c.type_ != RECONCILING && c.type_ != STALLED)
        );
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
        assert_eq!(
            condition(&st2, RECONCILING),
            ("True", "Scaling", "2 of 3 instances ready")
        );
        assert!(transitions(Some(&st), &st2).is_empty());
    }

    #[test]
    fn a_deployment_scaled_to_zero_is_ready_and_done() {
        let d = od();
        let r = resolve_from(&d, None, None);
        let zero = Observed {
            exists: true,
            current: true,
            ..Observed::default()
        };
        let st = compute(&d, &r, EndpointPresence::Found, zero.clone(), &now());
        assert_eq!(condition(&st, READY).0, "True");
        assert_eq!(condition(&st, READY).1, SCALED_TO_ZERO);
        // Even straight after creation (Creating → Succeeded), and kstatus Current.
        assert_eq!(st.provisioning_state, Some(ProvisioningState::Succeeded));
        assert!(
            st.conditions
                .iter()
                .all(|c| c.type_ != RECONCILING && c.type_ != STALLED)
        );
        // Scaling down to zero, the last instance still terminating: not yet at zero.
        let leaving = Observed {
            replicas: 1,
            updated: 1,
            ..zero
        };
        let st = compute(&d, &r, EndpointPresence::Found, leaving, &now());
        assert_eq!(condition(&st, READY).1, "NoReadyInstances");
    }

    /// The instances' Deployment running `image`, with `(replicas, ready, updated)`.
    fn deployment(image: &str, (replicas, ready, updated): (i32, i32, i32)) -> Deployment {
        serde_json::from_value(json!({
            "metadata": { "name": "blue", "generation": 2 },
            "spec": { "replicas": 2, "selector": {}, "template": { "spec": { "containers": [
                { "name": "inference-server", "image": image }
            ] } } },
            "status": { "observedGeneration": 2, "replicas": replicas, "readyReplicas": ready,
                        "updatedReplicas": updated }
        }))
        .unwrap()
    }

    fn condition<'a>(st: &'a OnlineDeploymentStatus, type_: &str) -> (&'a str, &'a str, &'a str) {
        let c = st.conditions.iter().find(|c| c.type_ == type_).unwrap();
        (c.status.as_str(), c.reason.as_str(), c.message.as_str())
    }

    #[test]
    fn an_image_that_cannot_be_pulled_is_why_no_instance_is_ready() {
        let mut d = od();
        let r = resolve_from(&d, None, None);
        let dep = deployment("127.0.0.1:5000/nope:1", (2, 0, 2));
        let pull = pod_problems::fixture("blue-pull");
        let seen = Observed::from_children(Some(&dep), &[&pull]);
        let st = compute(&d, &r, EndpointPresence::Found, seen, &now());
        let why = "instance blue-pull, container inference-server: image 127.0.0.1:5000/nope:1 \
                   cannot be pulled: Back-off pulling image \"127.0.0.1:5000/nope:1\"";
        assert_eq!(condition(&st, READY), ("False", "ImagePullError", why));
        // kstatus: Failed, with why (it shows the Stalled message).
        assert_eq!(condition(&st, STALLED), ("True", "ImagePullError", why));
        assert!(st.conditions.iter().all(|c| c.type_ != RECONCILING));
        // The kubelet keeps retrying: still progressing, saying why it does not get anywhere.
        assert_eq!(
            condition(&st, PROGRESSING),
            (
                "True",
                "ImagePullError",
                &*format!("0 of 2 instances ready; {why}")
            )
        );
        let events = transitions(None, &st);
        assert!(
            events
                .iter()
                .any(|t| t.type_ == READY && !t.ok && t.reason == "ImagePullError"),
            "{events:?}"
        );
        assert!(
            !events.iter().any(|t| t.type_ == PROGRESSING),
            "one Warning, on Ready"
        );

        // The kubelet alternates ErrImagePull and ImagePullBackOff: new words, no new Event.
        d.status = Some(st.clone());
        let mut err_pull = pull.clone();
        if let Some(w) = err_pull
            .status
            .as_mut()
            .and_then(|s| s.container_statuses.as_mut())
            .and_then(|s| s[0].state.as_mut())
            .and_then(|s| s.waiting.as_mut())
        {
            w.reason = Some("ErrImagePull".into());
            w.message = Some("failed to pull and unpack image: not found".into());
        }
        let seen = Observed::from_children(Some(&dep), &[&err_pull]);
        let st2 = compute(&d, &r, EndpointPresence::Found, seen, &now());
        assert!(
            condition(&st2, READY)
                .2
                .ends_with("cannot be pulled: failed to pull and unpack image: not found")
        );
        assert!(transitions(Some(&st), &st2).is_empty());
    }

    #[test]
    fn a_container_that_cannot_start_or_keeps_crashing_is_named() {
        let d = od();
        let r = resolve_from(&d, None, None);
        let dep = deployment("127.0.0.1:5000/score:1", (2, 0, 2));
        for (pod, reason) in [
            ("blue-config", "ContainerCannotStart"),
            ("blue-exec", "ContainerCannotStart"),
            ("blue-crash", "CrashLoopBackOff"),
            ("blue-crash-running", "CrashLoopBackOff"),
        ] {
            let p = pod_problems::fixture(pod);
            let seen = Observed::from_children(Some(&dep), &[&p]);
            let st = compute(&d, &r, EndpointPresence::Found, seen, &now());
            let (status, got, message) = condition(&st, READY);
            assert_eq!((status, got), ("False", reason), "{pod}");
            assert_eq!(condition(&st, STALLED), ("True", reason, message), "{pod}");
            assert!(
                message.starts_with(&format!("instance {pod}, container inference-server: ")),
                "{message}"
            );
        }
    }

    #[test]
    fn a_rollout_held_up_by_a_pull_says_so_in_progressing_and_ready_stays_true() {
        let d = od();
        let r = resolve_from(&d, None, None);
        // Two old instances serve; the new template's first Pod cannot pull its image.
        let dep = deployment("127.0.0.1:5000/nope:1", (3, 2, 1));
        let (old_ok, new_pull) = (
            pod_problems::fixture("blue-ok"),
            pod_problems::fixture("blue-pull"),
        );
        let before = Observed::from_children(Some(&dep), &[&old_ok]);
        assert_eq!(before.problem, None);
        let st = compute(&d, &r, EndpointPresence::Found, before, &now());
        assert_eq!(condition(&st, PROGRESSING).1, "RollingUpdate");
        // Half-way: the old instances serve (Ready), the rollout goes on (Reconciling: kstatus
        // InProgress).
        assert_eq!(condition(&st, READY).0, "True");
        assert_eq!(
            condition(&st, RECONCILING),
            ("True", "RollingUpdate", "1 of 2 instances updated; 2 ready")
        );

        let mut prev = d.clone();
        prev.status = Some(st.clone());
        let seen = Observed::from_children(Some(&dep), &[&old_ok, &new_pull]);
        let st2 = compute(&prev, &r, EndpointPresence::Found, seen, &now());
        assert_eq!(condition(&st2, READY).0, "True");
        // The new instances cannot run without a change (of the image or the registry).
        assert_eq!(condition(&st2, STALLED).1, "ImagePullError");
        assert!(st2.conditions.iter().all(|c| c.type_ != RECONCILING));
        let (status, reason, message) = condition(&st2, PROGRESSING);
        assert_eq!((status, reason), ("True", "ImagePullError"));
        assert!(
            message.starts_with("1 of 2 instances updated; instance blue-pull, "),
            "{message}"
        );
        // Nothing else would tell: one Warning, although Progressing is True.
        let events = transitions(Some(&st), &st2);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(
            (events[0].type_.as_str(), events[0].ok),
            (PROGRESSING, false)
        );

        // An old-template Pod's problem is not the rollout's: the new template runs another image.
        let fixed = deployment("127.0.0.1:5000/score:2", (3, 2, 1));
        let seen = Observed::from_children(Some(&fixed), &[&old_ok, &new_pull]);
        assert_eq!(seen.problem, None);
    }

    #[test]
    fn a_malformed_image_name_stops_progressing() {
        let d = od();
        let r = resolve_from(&d, None, None);
        let dep = deployment("127.0.0.1:5000/nope:1", (2, 0, 2));
        let mut pod = pod_problems::fixture("blue-pull");
        if let Some(w) = pod
            .status
            .as_mut()
            .and_then(|s| s.container_statuses.as_mut())
            .and_then(|s| s[0].state.as_mut())
            .and_then(|s| s.waiting.as_mut())
        {
            w.reason = Some("InvalidImageName".into());
        }
        let seen = Observed::from_children(Some(&dep), &[&pod]);
        let st = compute(&d, &r, EndpointPresence::Found, seen, &now());
        assert_eq!(condition(&st, PROGRESSING).0, "False");
        assert_eq!(condition(&st, READY).1, "ImagePullError");
        assert_eq!(condition(&st, STALLED).0, "True");
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
        let (status, reason, message) = condition(&st, STALLED);
        assert_eq!((status, reason), ("True", PODS_REJECTED));
        assert!(message.contains("violates PodSecurity"), "{message}");
        let changed = transitions(None, &st);
        assert!(
            changed.iter().any(|t| t.reason == PODS_REJECTED),
            "{changed:?}"
        );
    }
}
