//! What the controller reads off a job's Pods: a pure summary used by the lifecycle decision.

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

/// Label holding the attempt a Pod belongs to.
pub const ATTEMPT_LABEL: &str = "mlcompute.io/attempt";

/// The state of one Pod, as far as the job cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodState {
    /// Not yet placed on a node; `message` is the scheduler's reason when it gave one.
    Unscheduled {
        message: Option<String>,
    },
    /// On a node, containers not all running; `reason` is a container's waiting reason.
    Starting {
        reason: Option<String>,
        message: Option<String>,
    },
    Running,
    Succeeded,
    /// Ended in failure; `exit_code` is the main container's, if it terminated with one.
    Failed {
        exit_code: Option<i32>,
        reason: Option<String>,
    },
    /// Being deleted: neither counted nor replaced until it is gone.
    Terminating,
}

/// A Pod of the job with its attempt and state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedPod {
    pub name: String,
    pub attempt: Option<i32>,
    pub node: Option<String>,
    pub state: PodState,
}

pub fn observe(pod: &Pod) -> ObservedPod {
    let status = pod.status.clone().unwrap_or_default();
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let main = status
        .container_statuses
        .as_ref()
        .and_then(|cs| cs.iter().find(|c| c.name == "main").or_else(|| cs.first()));
    let terminated = main.and_then(|c| c.state.as_ref()?.terminated.as_ref());
    let state = if pod.metadata.deletion_timestamp.is_some() {
        PodState::Terminating
    } else {
        match status.phase.as_deref() {
            Some("Succeeded") => PodState::Succeeded,
            Some("Failed") => PodState::Failed {
                exit_code: terminated.map(|t| t.exit_code),
                reason: terminated
                    .and_then(|t| t.reason.clone())
                    .or(status.reason.clone()),
            },
            Some("Running") => PodState::Running,
            _ if node.is_none() => {
                let scheduled = status
                    .conditions
                    .as_ref()
                    .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"));
                PodState::Unscheduled {
                    message: scheduled.and_then(|c| c.message.clone()),
                }
            }
            _ => {
                let waiting = status
                    .container_statuses
                    .iter()
                    .flatten()
                    .chain(status.init_container_statuses.iter().flatten())
                    .find_map(|c| c.state.as_ref()?.waiting.clone());
                PodState::Starting {
                    reason: waiting.as_ref().and_then(|w| w.reason.clone()),
                    message: waiting.and_then(|w| w.message),
                }
            }
        }
    };
    ObservedPod {
        name: pod.name_any(),
        attempt: pod.labels().get(ATTEMPT_LABEL).and_then(|a| a.parse().ok()),
        node,
        state,
    }
}
