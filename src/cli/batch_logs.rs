//! `mlcompute logs batchjob/NAME [-f] [--instance N]`: the driver Pods' logs, each line prefixed with
//! its instance, following retried Pods, ending with the BatchJob's outcome (non-zero unless it
//! completed).

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, ResourceExt};

use super::{logs::LogsArgs, pod_logs};
use crate::{
    api::{batch_job::BatchJob, common::JobPhase},
    controllers::batch::job::build::DRIVER_CONTAINER,
    runtime::children::{LABEL_MANAGED_BY, MANAGER},
};

/// The Job controller's label holding an Indexed Job Pod's index.
const INDEX_LABEL: &str = "batch.kubernetes.io/job-completion-index";

fn prefix(pod: &Pod) -> String {
    format!(
        "[instance-{}]",
        pod.labels().get(INDEX_LABEL).cloned().unwrap_or_default()
    )
}

fn is_finished(job: &BatchJob) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(JobPhase::is_terminal)
}

/// Streams the logs of BatchJob `name`.
pub async fn run(args: &LogsArgs, name: &str) -> anyhow::Result<()> {
    let (client, ns) = args.cluster.client().await?;
    let jobs: Api<BatchJob> = Api::namespaced(client.clone(), &ns);
    let job = jobs
        .get(name)
        .await
        .with_context(|| format!("getting BatchJob {ns}/{name}"))?;
    let mut selector = format!("{LABEL_MANAGED_BY}={MANAGER},mlcompute.io/batchjob={name}");
    if let Some(i) = args.instance {
        selector.push_str(&format!(",{INDEX_LABEL}={i}"));
    }
    let source = pod_logs::Source {
        pods: Api::namespaced(client, &ns),
        selector,
        container: DRIVER_CONTAINER.into(),
        prefix,
        owners: jobs,
        name: name.to_string(),
        finished: is_finished,
    };
    outcome(&pod_logs::stream(source, job, args.follow).await?)
}

/// Exit like `az ml job stream`: success only for a completed job.
fn outcome(job: &BatchJob) -> anyhow::Result<()> {
    let s = job.status.clone().unwrap_or_default();
    match s.phase {
        Some(p @ (JobPhase::Failed | JobPhase::Canceled)) => bail!(
            "batchjob/{} {p:?} ({}): {}",
            job.name_any(),
            s.reason.unwrap_or_default(),
            s.message.unwrap_or_default()
        ),
        Some(JobPhase::Completed) => {
            eprintln!(
                "batchjob/{} Completed; output in {}",
                job.name_any(),
                s.output_location.unwrap_or_default()
            );
            Ok(())
        }
        _ => Ok(()),
    }
}
