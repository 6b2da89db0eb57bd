//! Why a Pod's containers do not run, read off the Pods alone (pure): an image that cannot be
//! pulled, a container the runtime cannot create or start, a container that keeps crashing. Every
//! controller that owns Pods (directly or through a Deployment or Job) reports the same problems
//! with the same reasons, so a user sees the kubelet's words on the object they applied.

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod};
use kube::ResourceExt;

/// Container waiting reasons that mean the image cannot be pulled.
pub const IMAGE_PULL_REASONS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
];

/// Container waiting reasons that mean the runtime cannot create or run the container (a missing
/// Secret or ConfigMap key, a bad mount, an entrypoint that does not exist).
const CANNOT_START_REASONS: &[&str] = &[
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// Termination reasons of a container whose command never ran (the runtime failed to start it):
/// a crash loop of these is a start failure, not a crashing program.
const START_FAILED_REASONS: &[&str] = &["StartError", "ContainerCannotRun"];

/// The kubelet's message is quoted, but bounded: registries can answer with pages of text.
const MAX_MESSAGE_CHARS: usize = 1000;

/// Condition reasons, one per [`Kind`].
pub const IMAGE_PULL_ERROR: &str = "ImagePullError";
pub const CONTAINER_CANNOT_START: &str = "ContainerCannotStart";
pub const CRASH_LOOP_BACK_OFF: &str = "CrashLoopBackOff";

/// Whether a container waiting reason is an image pull failure.
pub fn is_image_pull(reason: &str) -> bool {
    IMAGE_PULL_REASONS.contains(&reason)
}

/// Whether a condition reason is one of this module's (so callers can treat them alike).
pub fn is_reason(reason: &str) -> bool {
    [
        IMAGE_PULL_ERROR,
        CONTAINER_CANNOT_START,
        CRASH_LOOP_BACK_OFF,
    ]
    .contains(&reason)
}

/// What kind of problem; the order is precedence (an image that cannot be pulled explains more
/// than a crash elsewhere: nothing of that Pod can run at all).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    ImagePull,
    CannotStart,
    CrashLoop,
}

impl Kind {
    /// The condition reason for this kind.
    pub fn reason(self) -> &'static str {
        match self {
            Kind::ImagePull => IMAGE_PULL_ERROR,
            Kind::CannotStart => CONTAINER_CANNOT_START,
            Kind::CrashLoop => CRASH_LOOP_BACK_OFF,
        }
    }
}

/// The most telling container problem among a set of Pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub kind: Kind,
    pub pod: String,
    pub container: String,
    /// The container is an init container (or a sidecar declared as one).
    pub init: bool,
    pub image: String,
    /// The kubelet's reason: the waiting reason (`ImagePullBackOff`, …), `CrashLoopBackOff` for
    /// a crash loop (also while the container runs between back-offs), or the termination reason
    /// (`StartError`) of a container the runtime could not start.
    pub reason: String,
    /// The kubelet's message (bounded); for a crash, the last termination's exit code and message.
    pub message: String,
    /// How many other Pods have a problem too.
    pub others: usize,
}

impl Problem {
    /// Whether waiting can help: the kubelet retries pulls, re-reads missing Secrets and restarts
    /// crashed containers, so a fixed registry or Secret heals without a spec change. A malformed
    /// image reference never will.
    pub fn retrying(&self) -> bool {
        self.reason != "InvalidImageName"
    }

    /// One line for a condition or Event, `pod` naming what a Pod is to the user: e.g. `instance
    /// blue-7d9f-abc, container inference-server: image reg/nope:1 cannot be pulled: Back-off …`.
    pub fn describe(&self, pod: &str) -> String {
        let others = match self.others {
            0 => String::new(),
            n => format!(" (and {n} more)"),
        };
        let container = if self.init {
            "init container"
        } else {
            "container"
        };
        let what = match self.kind {
            Kind::ImagePull => format!("image {} cannot be pulled", self.image),
            Kind::CannotStart => "cannot start".to_string(),
            Kind::CrashLoop => "keeps crashing".to_string(),
        };
        // A pull failure's and a crash's message say it all; a start failure's needs its reason
        // (`CreateContainerConfigError: secret "x" not found`).
        let detail = match (self.kind, self.message.is_empty()) {
            (_, true) => self.reason.clone(),
            (Kind::CannotStart, false) => format!("{}: {}", self.reason, self.message),
            (_, false) => self.message.clone(),
        };
        format!(
            "{pod} {}{others}, {container} {}: {what}: {detail}",
            self.pod, self.container
        )
    }
}

/// The most telling problem among `pods`: the worst [`Kind`], then the first Pod by name (so the
/// answer is stable however the cache orders them). Pods being deleted or already ended are
/// skipped: they are not what the user waits for.
pub fn worst<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Option<Problem> {
    let mut found: Vec<Problem> = pods.into_iter().filter_map(of_pod).collect();
    found.sort_by(|a, b| (a.kind, &a.pod).cmp(&(b.kind, &b.pod)));
    let others = found.len().saturating_sub(1);
    found.into_iter().next().map(|p| Problem { others, ..p })
}

/// The worst problem of one Pod's containers, init containers first (they block the others).
pub fn of_pod(pod: &Pod) -> Option<Problem> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let spec = pod.spec.as_ref();
    let init = status
        .init_container_statuses
        .iter()
        .flatten()
        .map(|c| (true, c, spec.and_then(|s| s.init_containers.as_ref())));
    let main = status
        .container_statuses
        .iter()
        .flatten()
        .map(|c| (false, c, spec.map(|s| &s.containers)));
    init.chain(main)
        .filter_map(|(is_init, c, declared)| {
            let (kind, reason, message) = classify(c)?;
            let image = declared
                .and_then(|cs| cs.iter().find(|d| d.name == c.name))
                .and_then(|d: &Container| d.image.clone())
                .unwrap_or_else(|| c.image.clone());
            Some(Problem {
                kind,
                pod: pod.name_any(),
                container: c.name.clone(),
                init: is_init,
                image,
                reason,
                message: bounded(&message),
                others: 0,
            })
        })
        .min_by_key(|p| p.kind)
}

/// The problem of one container, if it has one: (kind, reason, message).
fn classify(c: &ContainerStatus) -> Option<(Kind, String, String)> {
    let state = c.state.as_ref();
    if let Some(w) = state.and_then(|s| s.waiting.as_ref())
        && let Some(reason) = w.reason.as_deref()
    {
        let message = w.message.clone().unwrap_or_default();
        if is_image_pull(reason) {
            return Some((Kind::ImagePull, reason.to_string(), message));
        }
        if CANNOT_START_REASONS.contains(&reason) {
            return Some((Kind::CannotStart, reason.to_string(), message));
        }
        if reason == CRASH_LOOP_BACK_OFF {
            // The last termination says more than the back-off ("back-off 40s restarting …").
            return Some(crashed(c).unwrap_or((Kind::CrashLoop, reason.to_string(), message)));
        }
        return None;
    }
    // Between back-offs a crashing container runs (or has just ended) again: still the same
    // crash loop until it proves itself ready, or the condition would flap (and each flap would
    // be an Event) with every restart.
    if c.ready || c.restart_count == 0 {
        return None;
    }
    crashed(c)
}

/// A container's last failed termination (the current state if terminated, else the last one).
fn crashed(c: &ContainerStatus) -> Option<(Kind, String, String)> {
    let t = c
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .or_else(|| c.last_state.as_ref()?.terminated.as_ref())
        .filter(|t| t.exit_code != 0)?;
    let reason = t.reason.as_deref().unwrap_or("Error");
    if START_FAILED_REASONS.contains(&reason) {
        let message = t.message.as_deref().unwrap_or_default().trim().to_string();
        return Some((Kind::CannotStart, reason.to_string(), message));
    }
    // `Error` is every non-zero exit; `OOMKilled` and the like say something.
    let why = match reason {
        "Error" => String::new(),
        r => format!(" ({r})"),
    };
    let last_line = t
        .message
        .as_deref()
        .and_then(|m| m.trim().lines().last())
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    Some((
        Kind::CrashLoop,
        CRASH_LOOP_BACK_OFF.to_string(),
        format!("last exit code {}{why}{last_line}", t.exit_code),
    ))
}

fn bounded(s: &str) -> String {
    match s.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

/// Pods for tests, by name, from `fixtures/pods.yaml`.
#[cfg(test)]
pub(crate) fn fixture(name: &str) -> Pod {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(include_str!("fixtures/pods.yaml"))
        .map(|d| Pod::deserialize(d).unwrap())
        .find(|p| p.name_any() == name)
        .unwrap_or_else(|| panic!("no fixture Pod {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods(names: &[&str]) -> Vec<Pod> {
        names.iter().map(|n| fixture(n)).collect()
    }

    #[test]
    fn an_image_pull_back_off_names_pod_container_image_and_kubelet_message() {
        let p = worst(&pods(&["blue-pull"])).unwrap();
        assert_eq!(
            (p.kind, p.reason.as_str(), p.container.as_str(), p.init),
            (
                Kind::ImagePull,
                "ImagePullBackOff",
                "inference-server",
                false
            )
        );
        assert_eq!(
            p.describe("instance"),
            "instance blue-pull, container inference-server: image 127.0.0.1:5000/nope:1 cannot be pulled: \
             Back-off pulling image \"127.0.0.1:5000/nope:1\""
        );
        assert!(p.retrying());
    }

    #[test]
    fn an_init_container_counts_and_blocks_first() {
        let p = worst(&pods(&["driver-init-pull"])).unwrap();
        assert_eq!((p.kind, p.init), (Kind::ImagePull, true));
        assert_eq!(p.container, "install-mlcompute");
        assert!(
            p.describe("driver pod")
                .starts_with("driver pod driver-init-pull, init container install-mlcompute: image ghcr.io/mlcompute/mlcompute:0 cannot be pulled: rpc error"),
            "{}",
            p.describe("driver pod")
        );
    }

    #[test]
    fn a_missing_secret_is_a_start_failure_with_the_kubelets_words() {
        let p = worst(&pods(&["blue-config"])).unwrap();
        assert_eq!(p.kind, Kind::CannotStart);
        assert_eq!(
            p.describe("instance"),
            "instance blue-config, container inference-server: cannot start: \
             CreateContainerConfigError: secret \"model-key\" not found"
        );
    }

    #[test]
    fn a_crash_loop_stays_one_while_the_container_runs_between_back_offs() {
        let waiting = worst(&pods(&["blue-crash"])).unwrap();
        assert_eq!(waiting.kind, Kind::CrashLoop);
        assert_eq!(
            waiting.describe("instance"),
            "instance blue-crash, container inference-server: keeps crashing: \
             last exit code 1: ModuleNotFoundError: No module named 'sklearn'"
        );
        let mut running = worst(&pods(&["blue-crash-running"])).unwrap();
        running.pod = waiting.pod.clone();
        assert_eq!(running, waiting, "the same problem, the same words");
        // Once ready it is healthy, whatever its past.
        let mut ready = fixture("blue-crash-running");
        if let Some(s) = ready
            .status
            .as_mut()
            .and_then(|s| s.container_statuses.as_mut())
        {
            s[0].ready = true;
        }
        assert_eq!(of_pod(&ready), None);
    }

    #[test]
    fn a_command_that_cannot_be_executed_is_a_start_failure_not_a_crash() {
        let p = worst(&pods(&["blue-exec"])).unwrap();
        assert_eq!(
            (p.kind, p.reason.as_str()),
            (Kind::CannotStart, "StartError")
        );
        assert!(
            p.message.contains("executable file not found"),
            "{}",
            p.message
        );
    }

    #[test]
    fn the_worst_kind_wins_then_the_first_pod_by_name_and_others_are_counted() {
        let all = pods(&[
            "blue-crash",
            "blue-ok",
            "blue-terminating-pull",
            "blue-config",
            "blue-pull",
        ]);
        let p = worst(all.iter().rev()).unwrap();
        assert_eq!((p.pod.as_str(), p.others), ("blue-pull", 2));
        assert!(
            p.describe("instance")
                .starts_with("instance blue-pull (and 2 more), ")
        );
        assert_eq!(worst(&pods(&["blue-ok", "blue-terminating-pull"])), None);
        assert_eq!(
            worst(&pods(&["blue-config", "blue-crash"])).unwrap().kind,
            Kind::CannotStart
        );
    }

    #[test]
    fn an_invalid_image_name_will_not_heal_by_waiting() {
        let mut pod = fixture("blue-pull");
        if let Some(w) = pod
            .status
            .as_mut()
            .and_then(|s| s.container_statuses.as_mut())
            .and_then(|s| s[0].state.as_mut())
            .and_then(|s| s.waiting.as_mut())
        {
            w.reason = Some("InvalidImageName".into());
        }
        assert!(!of_pod(&pod).unwrap().retrying());
    }

    #[test]
    fn long_kubelet_messages_are_bounded() {
        let long = "x".repeat(5000);
        assert_eq!(bounded(&long).chars().count(), MAX_MESSAGE_CHARS + 1);
        assert_eq!(bounded("short"), "short");
    }

    #[test]
    fn training_and_the_other_controllers_share_the_image_pull_reasons() {
        assert!(IMAGE_PULL_REASONS.iter().all(|r| is_image_pull(r)));
        assert!(!is_image_pull("CrashLoopBackOff"));
        assert!(is_reason(Kind::CannotStart.reason()) && !is_reason("PodsRejected"));
    }
}
