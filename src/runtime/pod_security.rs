//! Identity and security settings of workload Pods (training, serving, batch), applied by every Pod
//! builder as its last step so that they cover every container it made, init containers included.
//!
//! - No Kubernetes credentials in user code: the ServiceAccount token is not mounted unless the user
//!   names a ServiceAccount (then that account's own `automountServiceAccountToken` decides).
//! - PodSecurity `baseline` by default, with what is safe for any image: seccomp `RuntimeDefault`
//!   and `allowPrivilegeEscalation: false` (it only stops setuid binaries such as `sudo`; sshd
//!   running as root, as MPI does, still drops privileges itself).
//! - The rest of `restricted` once a container runs as a non-root user: `runAsNonRoot: true` and
//!   all capabilities dropped. Not for root containers: sshd as root needs the runtime's default
//!   capabilities (`SETUID`, `SETGID`, `SYS_CHROOT`) to separate privileges.
//!
//! What the user set explicitly wins, field by field; fields a builder set on a container of its
//! own win over the user's container settings (the builder knows what that container needs).

use k8s_openapi::api::core::v1::{
    Capabilities, Container, PodSecurityContext, PodSpec, SeccompProfile, SecurityContext,
};

use crate::api::security_context as api;

/// The user's security settings of a workload, as the API holds them.
#[derive(Clone, Copy, Debug, Default)]
pub struct UserSecurity<'a> {
    pub pod: Option<&'a api::PodSecurityContext>,
    pub container: Option<&'a api::SecurityContext>,
}

/// The Pod's identity: the ServiceAccount the user named (whose own `automountServiceAccountToken`
/// then decides), else no token at all.
pub fn service_account(spec: &mut PodSpec, name: Option<&str>) {
    match name {
        Some(name) => {
            spec.service_account_name = Some(name.to_string());
            spec.automount_service_account_token = None;
        }
        None => spec.automount_service_account_token = Some(false),
    }
}

/// Applies the user's security contexts and the defaults to `spec` and every container in it.
pub fn apply(spec: &mut PodSpec, user: UserSecurity<'_>) {
    let mut pod = overlay_pod(
        user.pod.map(api::PodSecurityContext::to_core),
        spec.security_context.take(),
    );
    if pod.seccomp_profile.is_none() {
        pod.seccomp_profile = Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        });
    }
    let user_container = user.container.map(api::SecurityContext::to_core);
    for c in spec
        .init_containers
        .iter_mut()
        .flatten()
        .chain(spec.containers.iter_mut())
    {
        harden(c, &pod, user_container.as_ref());
    }
    spec.security_context = Some(pod);
}

/// One container: the user's settings under the builder's own, then the defaults.
fn harden(c: &mut Container, pod: &PodSecurityContext, user: Option<&SecurityContext>) {
    let mut sc = overlay(user.cloned(), c.security_context.take());
    let adds_sys_admin = sc
        .capabilities
        .as_ref()
        .and_then(|c| c.add.as_ref())
        .is_some_and(|add| {
            add.iter().any(|a| {
                a.eq_ignore_ascii_case("SYS_ADMIN") || a.eq_ignore_ascii_case("CAP_SYS_ADMIN")
            })
        });
    // The API server refuses `false` with privileged or SYS_ADMIN: they escalate anyway.
    if sc.allow_privilege_escalation.is_none() && sc.privileged != Some(true) && !adds_sys_admin {
        sc.allow_privilege_escalation = Some(false);
    }
    let non_root_set = sc.run_as_non_root.or(pod.run_as_non_root);
    let user_id = sc.run_as_user.or(pod.run_as_user);
    // An explicit `runAsNonRoot: false` means "do not enforce": nothing of `restricted` is added.
    let non_root = non_root_set.unwrap_or_else(|| user_id.is_some_and(|u| u != 0));
    if non_root {
        if non_root_set.is_none() {
            sc.run_as_non_root = Some(true);
        }
        let caps = sc.capabilities.get_or_insert_with(Capabilities::default);
        if caps.drop.as_ref().is_none_or(Vec::is_empty) {
            caps.drop = Some(vec!["ALL".into()]);
        }
    }
    c.security_context = Some(sc);
}

/// `base` with every field `over` sets replaced (field by field, not deep).
fn overlay(base: Option<SecurityContext>, over: Option<SecurityContext>) -> SecurityContext {
    merge(base.unwrap_or_default(), over)
}

fn overlay_pod(
    base: Option<PodSecurityContext>,
    over: Option<PodSecurityContext>,
) -> PodSecurityContext {
    merge(base.unwrap_or_default(), over)
}

/// Shallow merge of two objects of one Kubernetes type through their JSON form: a field `over`
/// sets replaces `base`'s. Both are plain data, so the round trip cannot fail; if it did, `over`
/// (the builder's own, or the user's) is kept whole.
fn merge<T>(base: T, over: Option<T>) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let Some(over) = over else {
        return base;
    };
    let (Ok(serde_json::Value::Object(mut b)), Ok(serde_json::Value::Object(o))) =
        (serde_json::to_value(&base), serde_json::to_value(&over))
    else {
        return over;
    };
    b.extend(o);
    serde_json::from_value(serde_json::Value::Object(b)).unwrap_or(over)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec() -> PodSpec {
        serde_json::from_value(json!({
            "initContainers": [{ "name": "fetch" }],
            "containers": [{ "name": "main" }],
        }))
        .unwrap()
    }

    fn containers(s: &PodSpec) -> Vec<&SecurityContext> {
        s.init_containers
            .iter()
            .flatten()
            .chain(&s.containers)
            .map(|c| c.security_context.as_ref().unwrap())
            .collect()
    }

    fn user_pod(v: serde_json::Value) -> api::PodSecurityContext {
        serde_json::from_value(v).unwrap()
    }

    fn user_container(v: serde_json::Value) -> api::SecurityContext {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn defaults_pass_baseline_and_mount_no_token() {
        let mut s = spec();
        service_account(&mut s, None);
        apply(&mut s, UserSecurity::default());
        assert_eq!(s.automount_service_account_token, Some(false));
        assert_eq!(s.service_account_name, None);
        let pod = s.security_context.as_ref().unwrap();
        assert_eq!(
            pod.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        assert_eq!(pod.run_as_non_root, None);
        for c in containers(&s) {
            assert_eq!(c.allow_privilege_escalation, Some(false));
            // Root containers keep the runtime's capabilities (sshd needs them).
            assert_eq!(c.capabilities, None);
            assert_eq!(c.run_as_non_root, None);
        }
    }

    #[test]
    fn a_named_service_account_is_used_and_its_own_automount_setting_decides() {
        let mut s = spec();
        service_account(&mut s, Some("trainer"));
        assert_eq!(s.service_account_name.as_deref(), Some("trainer"));
        assert_eq!(s.automount_service_account_token, None);
    }

    #[test]
    fn a_non_root_user_gets_the_rest_of_restricted_on_every_container() {
        let mut s = spec();
        let pod = user_pod(json!({ "runAsUser": 1000, "fsGroup": 2000 }));
        apply(
            &mut s,
            UserSecurity {
                pod: Some(&pod),
                container: None,
            },
        );
        let p = s.security_context.as_ref().unwrap();
        assert_eq!((p.run_as_user, p.fs_group), (Some(1000), Some(2000)));
        for c in containers(&s) {
            assert_eq!(c.run_as_non_root, Some(true));
            assert_eq!(c.allow_privilege_escalation, Some(false));
            assert_eq!(
                c.capabilities.as_ref().unwrap().drop.as_deref(),
                Some(&["ALL".to_string()][..])
            );
        }
    }

    #[test]
    fn run_as_non_root_alone_is_enough_and_explicit_false_adds_nothing() {
        let mut s = spec();
        let pod = user_pod(json!({ "runAsNonRoot": true }));
        apply(
            &mut s,
            UserSecurity {
                pod: Some(&pod),
                container: None,
            },
        );
        for c in containers(&s) {
            // Inherited from the Pod level, which restricted accepts.
            assert_eq!(c.run_as_non_root, None);
            assert!(c.capabilities.is_some());
        }

        let mut s = spec();
        let pod = user_pod(json!({ "runAsUser": 1000, "runAsNonRoot": false }));
        apply(
            &mut s,
            UserSecurity {
                pod: Some(&pod),
                container: None,
            },
        );
        for c in containers(&s) {
            assert_eq!((c.run_as_non_root, &c.capabilities), (None, &None));
        }
    }

    #[test]
    fn the_users_explicit_settings_win() {
        let mut s = spec();
        let pod = user_pod(json!({ "runAsUser": 1000,
            "seccompProfile": { "type": "Localhost", "localhostProfile": "p.json" } }));
        let container = user_container(json!({ "allowPrivilegeEscalation": true,
            "readOnlyRootFilesystem": true,
            "capabilities": { "add": ["NET_BIND_SERVICE"], "drop": ["NET_RAW"] } }));
        apply(
            &mut s,
            UserSecurity {
                pod: Some(&pod),
                container: Some(&container),
            },
        );
        let p = s
            .security_context
            .as_ref()
            .unwrap()
            .seccomp_profile
            .as_ref()
            .unwrap();
        assert_eq!(
            (p.type_.as_str(), p.localhost_profile.as_deref()),
            ("Localhost", Some("p.json"))
        );
        for c in containers(&s) {
            assert_eq!(c.allow_privilege_escalation, Some(true));
            assert_eq!(c.read_only_root_filesystem, Some(true));
            let caps = c.capabilities.as_ref().unwrap();
            assert_eq!(caps.drop.as_deref(), Some(&["NET_RAW".to_string()][..]));
            assert_eq!(
                caps.add.as_deref(),
                Some(&["NET_BIND_SERVICE".to_string()][..])
            );
        }
    }

    #[test]
    fn privileged_containers_are_not_given_a_setting_the_api_server_refuses() {
        for container in [
            json!({ "privileged": true }),
            json!({ "capabilities": { "add": ["SYS_ADMIN"] } }),
        ] {
            let mut s = spec();
            let c = user_container(container);
            apply(
                &mut s,
                UserSecurity {
                    pod: None,
                    container: Some(&c),
                },
            );
            for c in containers(&s) {
                assert_eq!(c.allow_privilege_escalation, None);
            }
        }
    }

    #[test]
    fn a_container_root_override_keeps_its_capabilities_and_a_builders_own_settings_win() {
        let mut s = spec();
        s.init_containers.as_mut().unwrap()[0].security_context = Some(SecurityContext {
            run_as_user: Some(0),
            ..SecurityContext::default()
        });
        let pod = user_pod(json!({ "runAsUser": 1000 }));
        let container = user_container(json!({ "readOnlyRootFilesystem": true }));
        apply(
            &mut s,
            UserSecurity {
                pod: Some(&pod),
                container: Some(&container),
            },
        );
        let cs = containers(&s);
        assert_eq!(cs[0].run_as_user, Some(0));
        assert_eq!(cs[0].capabilities, None);
        assert_eq!(cs[0].read_only_root_filesystem, Some(true));
        assert_eq!(cs[1].run_as_non_root, Some(true));
    }
}
