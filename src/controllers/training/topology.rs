//! Which Pods a TrainingJob runs and what each one is: a pure function of the spec.
//!
//! Names are deterministic (`<job>-<role>-<index>`), so a restarted operator finds the Pods it
//! made instead of making more, and each Pod's hostname resolves through the job's headless
//! Service as `<pod>.<job>`.

use crate::api::training_job::{Distribution, DistributionType, MpiLauncher, TrainingJob};
use kube::ResourceExt;

/// Port torch.distributed rendezvous uses on the rank-0 instance (torchrun's default).
pub const PYTORCH_PORT: i32 = 29500;
/// Port of each TensorFlow server (Kubeflow's default).
pub const TENSORFLOW_PORT: i32 = 2222;
/// Port of sshd in MPI workers.
pub const SSH_PORT: i32 = 22;

/// What an instance does in its job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Runs the command (all instances of a plain or PyTorch job; TensorFlow workers).
    Worker,
    /// A TensorFlow parameter server.
    ParameterServer,
    /// Runs `mpirun` for an MPI job (a separate Pod, or worker 0 when the launcher is `worker`).
    Launcher,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::ParameterServer => "ps",
            Role::Launcher => "launcher",
        }
    }
}

/// One Pod of a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub role: Role,
    /// Index within the role (the TF task index; the node rank for workers).
    pub index: i32,
    pub pod_name: String,
    /// Whether this Pod's exit decides the job's success (all workers; the MPI launcher alone).
    pub decides_success: bool,
    /// MPI only: worker 0 doubles as the launcher.
    pub also_launcher: bool,
}

/// All the Pods of a job, in a fixed order.
pub fn instances(job: &TrainingJob) -> Vec<Instance> {
    let name = job.name_any();
    let count = job.spec.resources.instance_count.max(1);
    let pod = |role: Role, index: i32| format!("{name}-{}-{index}", role.as_str());
    let worker = |index: i32, decides_success: bool, also_launcher: bool| Instance {
        role: Role::Worker,
        index,
        pod_name: pod(Role::Worker, index),
        decides_success,
        also_launcher,
    };
    match job.spec.distribution.as_ref() {
        Some(Distribution {
            type_: DistributionType::Tensorflow,
            parameter_server_count,
            ..
        }) => {
            let ps = parameter_server_count.unwrap_or(0).clamp(0, count - 1);
            let workers = count - ps;
            let mut out: Vec<Instance> = (0..workers).map(|i| worker(i, true, false)).collect();
            out.extend((0..ps).map(|i| Instance {
                role: Role::ParameterServer,
                index: i,
                pod_name: pod(Role::ParameterServer, i),
                decides_success: false,
                also_launcher: false,
            }));
            out
        }
        Some(
            d @ Distribution {
                type_: DistributionType::Mpi,
                ..
            },
        ) => {
            if d.launcher == Some(MpiLauncher::Separate) {
                let mut out = vec![Instance {
                    role: Role::Launcher,
                    index: 0,
                    pod_name: pod(Role::Launcher, 0),
                    decides_success: true,
                    also_launcher: false,
                }];
                out.extend((0..count).map(|i| worker(i, false, false)));
                out
            } else {
                (0..count)
                    .map(|i| worker(i, false, i == 0))
                    .map(|mut w| {
                        w.decides_success = w.also_launcher;
                        w
                    })
                    .collect()
            }
        }
        _ => (0..count).map(|i| worker(i, true, false)).collect(),
    }
}

/// Whether the job needs a headless Service: any multi-instance or distributed job does.
pub fn needs_service(job: &TrainingJob) -> bool {
    job.spec.resources.instance_count > 1 || job.spec.distribution.is_some()
}

/// DNS name of a job's Pod inside the cluster: `<pod>.<service>` (resolved via the pod's subdomain).
pub fn host(job: &TrainingJob, pod_name: &str) -> String {
    format!("{pod_name}.{}", job.name_any())
}
