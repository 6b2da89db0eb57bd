//! Who a workload's processes run as and what they may do: the subset of Kubernetes' Pod and
//! container security contexts that the training, online and batch kinds accept.
//!
//! The operator adds defaults that are safe for any image (seccomp `RuntimeDefault`, no privilege
//! escalation) and, once the Pod runs as a non-root user, the rest of PodSecurity `restricted`
//! (`runAsNonRoot`, all capabilities dropped); what is set here wins over those defaults
//! (see `operator::pod_security`).

use k8s_openapi::api::core::v1 as core;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Pod-wide security settings of a workload's Pods (a subset of Kubernetes' `PodSecurityContext`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSecurityContext {
    /// UID the containers run as (overrides the image's `USER`). A non-zero UID makes the operator
    /// also set `runAsNonRoot` and drop all capabilities, which a namespace enforcing PodSecurity
    /// `restricted` requires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub run_as_user: Option<i64>,
    /// GID the containers' processes run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub run_as_group: Option<i64>,
    /// Refuse to start a container whose user is root (the kubelet checks the image's user when
    /// `runAsUser` is not set). True: all capabilities are dropped too. False: the operator adds
    /// nothing of `restricted`, even with a non-zero `runAsUser`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_non_root: Option<bool>,
    /// Group that owns mounted volumes (claims, emptyDirs) and joins every process: set it when a
    /// non-root user must write to a claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub fs_group: Option<i64>,
    /// Further groups every process joins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(range(min = 0, max = 2147483647)))]
    pub supplemental_groups: Vec<i64>,
    /// Seccomp profile of every container. Default: `RuntimeDefault`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_profile: Option<SeccompProfile>,
}

/// Security settings applied to every container of a workload's Pods, init containers included
/// (a subset of Kubernetes' container `securityContext`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!(has(self.privileged) && self.privileged && has(self.allowPrivilegeEscalation) && !self.allowPrivilegeEscalation)")
        .message("a privileged container always allows privilege escalation: unset allowPrivilegeEscalation or privileged"),
)]
pub struct SecurityContext {
    /// UID the containers run as; overrides `podSecurityContext.runAsUser`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub run_as_user: Option<i64>,
    /// GID the containers run as; overrides `podSecurityContext.runAsGroup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub run_as_group: Option<i64>,
    /// Overrides `podSecurityContext.runAsNonRoot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_non_root: Option<bool>,
    /// Whether a process may gain more privileges than its parent (setuid binaries such as
    /// `sudo`). Default: false (true for a privileged container or one that adds `SYS_ADMIN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_privilege_escalation: Option<bool>,
    /// Run the containers privileged (refused by PodSecurity `baseline` and `restricted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    /// Mount the image's root filesystem read-only. The operator's own mounts (code, model,
    /// downloads, `/dev/shm`) stay writable where they are today.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_root_filesystem: Option<bool>,
    /// Linux capabilities to add and drop. Default: the runtime's set, or none at all (`drop: [ALL]`)
    /// when the containers run as a non-root user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    /// Overrides `podSecurityContext.seccompProfile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_profile: Option<SeccompProfile>,
}

/// Linux capabilities, by name (`NET_BIND_SERVICE`, or `ALL` to drop).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    /// Capabilities to add (PodSecurity `restricted` allows only `NET_BIND_SERVICE`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 40),
        inner(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z_]+$"))
    )]
    pub add: Vec<String>,
    /// Capabilities to drop; `ALL` drops every one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 40),
        inner(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z_]+$"))
    )]
    pub drop: Vec<String>,
}

/// Which seccomp profile confines the containers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SeccompProfileType {
    // The container runtime's default profile.
    #[default]
    RuntimeDefault,
    // A profile file on the node, named by localhostProfile.
    Localhost,
    // No seccomp confinement (refused by PodSecurity restricted).
    Unconfined,
}

/// A seccomp profile.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("(self.type == 'Localhost') == has(self.localhostProfile)")
        .message("localhostProfile is required for seccomp type Localhost and only for it"),
)]
pub struct SeccompProfile {
    /// `RuntimeDefault`, `Localhost` or `Unconfined`.
    #[serde(rename = "type")]
    pub type_: SeccompProfileType,
    /// Type `Localhost`: the profile's path relative to the kubelet's seccomp directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub localhost_profile: Option<String>,
}

impl SeccompProfile {
    fn to_core(&self) -> core::SeccompProfile {
        let type_ = match self.type_ {
            SeccompProfileType::RuntimeDefault => "RuntimeDefault",
            SeccompProfileType::Localhost => "Localhost",
            SeccompProfileType::Unconfined => "Unconfined",
        };
        core::SeccompProfile {
            type_: type_.into(),
            localhost_profile: self.localhost_profile.clone(),
        }
    }
}

impl PodSecurityContext {
    /// The Kubernetes form.
    pub fn to_core(&self) -> core::PodSecurityContext {
        core::PodSecurityContext {
            run_as_user: self.run_as_user,
            run_as_group: self.run_as_group,
            run_as_non_root: self.run_as_non_root,
            fs_group: self.fs_group,
            supplemental_groups: Some(self.supplemental_groups.clone()).filter(|g| !g.is_empty()),
            seccomp_profile: self.seccomp_profile.as_ref().map(SeccompProfile::to_core),
            ..core::PodSecurityContext::default()
        }
    }
}

impl SecurityContext {
    /// The Kubernetes form.
    pub fn to_core(&self) -> core::SecurityContext {
        core::SecurityContext {
            run_as_user: self.run_as_user,
            run_as_group: self.run_as_group,
            run_as_non_root: self.run_as_non_root,
            allow_privilege_escalation: self.allow_privilege_escalation,
            privileged: self.privileged,
            read_only_root_filesystem: self.read_only_root_filesystem,
            capabilities: self.capabilities.as_ref().map(|c| core::Capabilities {
                add: Some(c.add.clone()).filter(|a| !a.is_empty()),
                drop: Some(c.drop.clone()).filter(|d| !d.is_empty()),
            }),
            seccomp_profile: self.seccomp_profile.as_ref().map(SeccompProfile::to_core),
            ..core::SecurityContext::default()
        }
    }
}
