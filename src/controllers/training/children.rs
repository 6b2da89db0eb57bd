//! Desired Pods, the headless Service and MPI's hostfile and SSH keys: pure builders from the job,
//! what it resolved to, and the attempt.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{
        ConfigMap, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar, KeyToPath,
        LocalObjectReference, Pod, PodSpec, ResourceRequirements, Secret, SecretVolumeSource,
        Service, ServicePort, ServiceSpec, Volume, VolumeMount,
    },
    apimachinery::pkg::api::resource::Quantity,
};
use kube::ResourceExt;

use super::{
    data,
    frameworks::{self, MPI_HOSTFILE},
    observe::ATTEMPT_LABEL,
    resolve::Resolved,
    topology::{self, Instance, PYTORCH_PORT, Role, SSH_PORT, TENSORFLOW_PORT},
};
use crate::{
    api::{
        common::parse_shm_size,
        training_job::{DistributionType, TrainingJob},
    },
    runtime::{
        children::{child_meta, labels},
        pod_data::{FETCH_FN, sh_quote},
        pod_security::{self, UserSecurity},
    },
};

pub const QUEUE_LABEL: &str = "kueue.x-k8s.io/queue-name";
pub const INDEX_LABEL: &str = "mlcompute.io/instance-index";
pub const ROLE_LABEL: &str = "mlcompute.io/role";
/// Where MPI's SSH keys are mounted (mpi-operator v2's default `sshAuthMountPath`).
pub const SSH_DIR: &str = "/root/.ssh";

fn mpi_names(job: &TrainingJob) -> (String, String) {
    (
        format!("{}-mpi-hostfile", job.name_any()),
        format!("{}-mpi-ssh", job.name_any()),
    )
}

/// The Pod for `inst` in `attempt`.
pub fn pod(
    job: &TrainingJob,
    resolved: &Resolved,
    all: &[Instance],
    inst: &Instance,
    attempt: i32,
) -> Pod {
    let spec = &job.spec;
    let data = data::plan(job);
    let mut meta = child_meta(job, inst.pod_name.clone(), inst.role.as_str());
    let pod_labels = meta.labels.get_or_insert_with(BTreeMap::new);
    pod_labels.insert(ATTEMPT_LABEL.into(), attempt.to_string());
    pod_labels.insert(INDEX_LABEL.into(), inst.index.to_string());
    pod_labels.insert(ROLE_LABEL.into(), inst.role.as_str().into());
    if let Some(q) = &spec.queue_name {
        pod_labels.insert(QUEUE_LABEL.into(), q.clone());
    }

    // Environment: the Environment's defaults, then the job's, then the framework's (which win).
    let mut env: BTreeMap<String, String> = resolved.environment_variables.clone();
    env.extend(spec.environment_variables.clone());
    let framework = frameworks::env(job, all, inst);
    let mut env_vars: Vec<EnvVar> = env
        .into_iter()
        .filter(|(k, _)| !framework.iter().any(|(f, _)| f == k))
        .map(|(name, value)| EnvVar {
            name,
            value: Some(value),
            ..EnvVar::default()
        })
        .collect();
    env_vars.extend(framework.into_iter().map(|(name, value)| EnvVar {
        name,
        value: Some(value),
        ..EnvVar::default()
    }));

    let mut volumes = data.volumes.clone();
    let mut mounts = data.mounts.clone();
    if let Ok(bytes) = parse_shm_size(&spec.resources.shm_size) {
        volumes.push(Volume {
            name: "dshm".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                size_limit: Some(Quantity(bytes.to_string())),
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: "dshm".into(),
            mount_path: "/dev/shm".into(),
            ..VolumeMount::default()
        });
    }

    let user_command = data::substitute(&spec.command, &data.substitutions);
    let is_mpi = matches!(
        spec.distribution.as_ref().map(|d| d.type_),
        Some(DistributionType::Mpi)
    );
    let script = if is_mpi {
        let (hostfile_cm, ssh_secret) = mpi_names(job);
        volumes.push(Volume {
            name: "mpi-hostfile".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: hostfile_cm,
                items: Some(vec![KeyToPath {
                    key: "hostfile".into(),
                    path: "hostfile".into(),
                    mode: Some(0o444),
                }]),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: "mpi-hostfile".into(),
            mount_path: "/etc/mpi".into(),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "mpi-ssh".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(ssh_secret),
                default_mode: Some(0o600),
                items: Some(vec![
                    KeyToPath {
                        key: "ssh-privatekey".into(),
                        path: "id_ed25519".into(),
                        mode: None,
                    },
                    KeyToPath {
                        key: "ssh-publickey".into(),
                        path: "id_ed25519.pub".into(),
                        mode: None,
                    },
                    KeyToPath {
                        key: "ssh-publickey".into(),
                        path: "authorized_keys".into(),
                        mode: None,
                    },
                ]),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: "mpi-ssh".into(),
            mount_path: SSH_DIR.into(),
            ..VolumeMount::default()
        });
        mpi_script(inst, &user_command)
    } else {
        user_command
    };
    let script = if data.upload_script.is_empty() {
        script
    } else {
        // Copy `upload` outputs to their claims whatever the command's outcome, keeping its exit code.
        format!(
            "( {script} ); rc=$?\n{}\nexit $rc",
            data.upload_script.join("\n")
        )
    };

    let resources = ResourceRequirements {
        requests: Some(resolved.resources.requests.clone()).filter(|r| !r.is_empty()),
        limits: Some(resolved.resources.limits.clone()).filter(|r| !r.is_empty()),
        ..ResourceRequirements::default()
    };
    let ports = container_ports(job, inst);
    let main = Container {
        name: "main".into(),
        image: Some(resolved.image.clone()),
        command: Some(vec!["/bin/sh".into(), "-c".into(), script]),
        working_dir: data.working_dir.clone(),
        env: Some(env_vars),
        resources: Some(resources),
        volume_mounts: Some(mounts).filter(|m| !m.is_empty()),
        ports,
        ..Container::default()
    };
    let init = (!data.fetch_script.is_empty()).then(|| Container {
        name: "fetch-inputs".into(),
        image: Some(resolved.image.clone()),
        command: Some(vec![
            "/bin/sh".into(),
            "-c".into(),
            format!("set -e\n{FETCH_FN}\n{}", data.fetch_script.join("\n")),
        ]),
        volume_mounts: Some(data.fetch_mounts.clone()),
        ..Container::default()
    });

    let mut pod_spec = PodSpec {
        // The operator restarts the whole gang on failure, so a Pod never restarts by itself.
        restart_policy: Some("Never".into()),
        hostname: Some(inst.pod_name.clone()),
        subdomain: topology::needs_service(job).then(|| job.name_any()),
        containers: vec![main],
        init_containers: init.map(|c| vec![c]),
        volumes: Some(volumes).filter(|v| !v.is_empty()),
        node_selector: Some(resolved.node_selector.clone()).filter(|n| !n.is_empty()),
        tolerations: Some(resolved.tolerations.clone()).filter(|t| !t.is_empty()),
        image_pull_secrets: Some(
            resolved
                .image_pull_secrets
                .iter()
                .map(|s| LocalObjectReference { name: s.clone() })
                .collect::<Vec<_>>(),
        )
        .filter(|s| !s.is_empty()),
        priority_class_name: spec.priority_class_name.clone(),
        enable_service_links: Some(false),
        ..PodSpec::default()
    };
    pod_security::service_account(&mut pod_spec, spec.service_account_name.as_deref());
    pod_security::apply(
        &mut pod_spec,
        UserSecurity {
            pod: spec.pod_security_context.as_ref(),
            container: spec.security_context.as_ref(),
        },
    );
    Pod {
        metadata: meta,
        spec: Some(pod_spec),
        status: None,
    }
}

/// The MPI entry: workers serve sshd; the launcher (a Pod of its own, or worker 0) runs mpirun
/// over the hostfile once every worker answers.
fn mpi_script(inst: &Instance, command: &str) -> String {
    let sshd =
        "mkdir -p /run/sshd; /usr/sbin/sshd -e -p 22 -o PermitRootLogin=yes -o StrictModes=no";
    let launch = format!(
        "for h in $(cut -d' ' -f1 {MPI_HOSTFILE}); do until ssh -o StrictHostKeyChecking=no -o ConnectTimeout=5 \"$h\" true 2>/dev/null; do sleep 2; done; done\n\
         exec mpirun --allow-run-as-root -np \"$MLCOMPUTE_MPI_NP\" --hostfile {MPI_HOSTFILE} /bin/sh -c {}",
        sh_quote(command)
    );
    match (inst.role, inst.also_launcher) {
        (Role::Launcher, _) => launch,
        (_, true) => format!("{sshd}\n{launch}"),
        _ => format!("{sshd} -D"),
    }
}

fn container_ports(
    job: &TrainingJob,
    inst: &Instance,
) -> Option<Vec<k8s_openapi::api::core::v1::ContainerPort>> {
    use k8s_openapi::api::core::v1::ContainerPort;
    let port = match job.spec.distribution.as_ref()?.type_ {
        DistributionType::Pytorch => PYTORCH_PORT,
        DistributionType::Tensorflow => TENSORFLOW_PORT,
        DistributionType::Mpi if inst.role == Role::Launcher => return None,
        DistributionType::Mpi => SSH_PORT,
    };
    Some(vec![ContainerPort {
        container_port: port,
        name: Some("rendezvous".into()),
        ..ContainerPort::default()
    }])
}

/// The headless Service that gives each Pod a stable DNS name (`<pod>.<job>`).
pub fn service(job: &TrainingJob) -> Service {
    let port = match job.spec.distribution.as_ref().map(|d| d.type_) {
        Some(DistributionType::Tensorflow) => TENSORFLOW_PORT,
        Some(DistributionType::Mpi) => SSH_PORT,
        _ => PYTORCH_PORT,
    };
    let mut selector = labels(job, "worker");
    selector.remove(crate::runtime::children::LABEL_COMPONENT);
    Service {
        metadata: child_meta(job, job.name_any(), "rendezvous"),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            // Rendezvous needs every peer's name before any of them is ready.
            publish_not_ready_addresses: Some(true),
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some("rendezvous".into()),
                port,
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// MPI: the hostfile ConfigMap.
pub fn mpi_hostfile(job: &TrainingJob, all: &[Instance]) -> ConfigMap {
    let (name, _) = mpi_names(job);
    ConfigMap {
        metadata: child_meta(job, name, "mpi-hostfile"),
        data: Some(BTreeMap::from([(
            "hostfile".to_string(),
            frameworks::mpi_hostfile(job, all),
        )])),
        ..ConfigMap::default()
    }
}

/// MPI: the SSH key Secret (type `kubernetes.io/ssh-auth`), from a freshly generated key pair.
pub fn mpi_ssh_secret(job: &TrainingJob, private_key: String, public_key: String) -> Secret {
    let (_, name) = mpi_names(job);
    Secret {
        metadata: child_meta(job, name, "mpi-ssh"),
        type_: Some("kubernetes.io/ssh-auth".into()),
        string_data: Some(BTreeMap::from([
            ("ssh-privatekey".to_string(), private_key),
            ("ssh-publickey".to_string(), public_key),
        ])),
        ..Secret::default()
    }
}
