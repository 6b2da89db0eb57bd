//! Environment variables each framework expects, per instance. Where Azure ML and Kubeflow name
//! a variable differently, both are set, so a script written for either runs unchanged.

use serde_json::json;

use super::topology::{self, Instance, PYTORCH_PORT, Role, TENSORFLOW_PORT};
use crate::api::training_job::{DistributionType, TrainingJob};

/// Where the MPI hostfile is mounted.
pub const MPI_HOSTFILE: &str = "/etc/mpi/hostfile";

/// `(name, value)` pairs for `inst`, in a stable order.
pub fn env(job: &TrainingJob, all: &[Instance], inst: &Instance) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: String| vars.push((k.to_string(), v));
    let workers: Vec<&Instance> = all.iter().filter(|i| i.role == Role::Worker).collect();
    set("AZUREML_RUN_ID", kube::ResourceExt::name_any(job));
    set("MLCOMPUTE_INSTANCE_INDEX", inst.index.to_string());
    set("MLCOMPUTE_INSTANCE_COUNT", all.len().to_string());
    let Some(dist) = job.spec.distribution.as_ref() else {
        return vars;
    };
    match dist.type_ {
        DistributionType::Pytorch => {
            let nodes = workers.len() as i32;
            let procs = dist.process_count_per_instance.unwrap_or(1).max(1);
            let master = topology::host(
                job,
                &workers
                    .first()
                    .map(|w| w.pod_name.clone())
                    .unwrap_or_default(),
            );
            // Azure ML: WORLD_SIZE counts processes, RANK is the process rank (the first local
            // process's, for a launcher that spawns the others). Kubeflow's plain env is the same
            // when there is one process per instance; with more, torchrun reads the PET_* values.
            set("MASTER_ADDR", master.clone());
            set("MASTER_PORT", PYTORCH_PORT.to_string());
            set("WORLD_SIZE", (nodes * procs).to_string());
            set("NODE_RANK", inst.index.to_string());
            set("RANK", (inst.index * procs).to_string());
            set("LOCAL_RANK", "0".to_string());
            set("LOCAL_WORLD_SIZE", procs.to_string());
            set("GROUP_RANK", inst.index.to_string());
            if procs > 1 {
                set("PET_NNODES", nodes.to_string());
                set("PET_NPROC_PER_NODE", procs.to_string());
                set("PET_NODE_RANK", inst.index.to_string());
                set("PET_MASTER_ADDR", master);
                set("PET_MASTER_PORT", PYTORCH_PORT.to_string());
            }
        }
        DistributionType::Tensorflow => {
            set("TF_CONFIG", tf_config(job, all, inst));
        }
        DistributionType::Mpi => {
            let procs = dist.process_count_per_instance.unwrap_or(1).max(1);
            let slots = workers.len() as i32 * procs;
            set("OMPI_MCA_orte_default_hostfile", MPI_HOSTFILE.to_string());
            set(
                "OMPI_MCA_plm_rsh_args",
                "-o ConnectionAttempts=10 -o StrictHostKeyChecking=no".to_string(),
            );
            set("OMPI_MCA_orte_keep_fqdn_hostnames", "true".to_string());
            set("I_MPI_HYDRA_HOST_FILE", MPI_HOSTFILE.to_string());
            set("I_MPI_HYDRA_BOOTSTRAP", "ssh".to_string());
            set("MLCOMPUTE_MPI_NP", slots.to_string());
            set("OMPI_COMM_WORLD_SIZE_EXPECTED", slots.to_string());
        }
    }
    vars
}

/// `TF_CONFIG` for `inst`: the cluster's worker and ps addresses and this task's type and index.
pub fn tf_config(job: &TrainingJob, all: &[Instance], inst: &Instance) -> String {
    let addrs = |role: Role| -> Vec<String> {
        all.iter()
            .filter(|i| i.role == role)
            .map(|i| format!("{}:{TENSORFLOW_PORT}", topology::host(job, &i.pod_name)))
            .collect()
    };
    let mut cluster = serde_json::Map::new();
    cluster.insert("worker".into(), json!(addrs(Role::Worker)));
    let ps = addrs(Role::ParameterServer);
    if !ps.is_empty() {
        cluster.insert("ps".into(), json!(ps));
    }
    json!({
        "cluster": cluster,
        "task": { "type": inst.role.as_str(), "index": inst.index },
        "environment": "cloud",
    })
    .to_string()
}

/// The MPI hostfile: one line per worker with its slots (processes per instance).
pub fn mpi_hostfile(job: &TrainingJob, all: &[Instance]) -> String {
    let procs = job
        .spec
        .distribution
        .as_ref()
        .and_then(|d| d.process_count_per_instance)
        .unwrap_or(1);
    all.iter()
        .filter(|i| i.role == Role::Worker)
        .map(|i| format!("{} slots={procs}\n", topology::host(job, &i.pod_name)))
        .collect()
}
