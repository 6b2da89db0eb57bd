//! `mlcompute logs trainingjob/NAME [-f] [--instance N]`: every instance's log, interleaved with a
//! prefix, following new attempts, ending with the job's outcome (like `az ml job stream`).

use anyhow::{Context as _, anyhow, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, ResourceExt};

use super::{job::Target, pod_logs};
use crate::{
    api::{common::JobPhase as TrainingJobPhase, training_job::TrainingJob},
    controllers::training::children::{INDEX_LABEL, ROLE_LABEL},
    runtime::children::{LABEL_MANAGED_BY, MANAGER},
};

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// What to show: `trainingjob/NAME` (or `tj/NAME`), `batchjob/NAME` (or `bj/NAME`).
    pub target: String,
    /// Keep streaming until the job finishes, including the Pods of later attempts.
    #[arg(short, long)]
    pub follow: bool,
    /// Only this instance index.
    #[arg(long)]
    pub instance: Option<i32>,
    #[command(flatten)]
    pub cluster: Target,
}

pub async fn run(args: LogsArgs) -> anyhow::Result<()> {
    let (kind, name) = args
        .target
        .split_once('/')
        .ok_or_else(|| anyhow!("expected KIND/NAME, e.g. trainingjob/{}", args.target))?;
    match kind {
        "trainingjob" | "trainingjobs" | "tj" => training_job(&args, name).await,
        "batchjob" | "batchjobs" | "bj" => super::batch_logs::run(&args, name).await,
        other => {
            bail!("logs of {other:?} are not supported; use trainingjob/NAME or batchjob/NAME")
        }
    }
}

fn prefix(pod: &Pod) -> String {
    let role = pod
        .labels()
        .get(ROLE_LABEL)
        .cloned()
        .unwrap_or_else(|| "pod".into());
    let index = pod.labels().get(INDEX_LABEL).cloned().unwrap_or_default();
    format!("[{role}-{index}]")
}

async fn training_job(args: &LogsArgs, name: &str) -> anyhow::Result<()> {
    let (client, ns) = args.cluster.client().await?;
    let jobs: Api<TrainingJob> = Api::namespaced(client.clone(), &ns);
    let job = jobs
        .get(name)
        .await
        .with_context(|| format!("getting TrainingJob {ns}/{name}"))?;
    let mut selector = format!("{LABEL_MANAGED_BY}={MANAGER},mlcompute.io/trainingjob={name}");
    if let Some(i) = args.instance {
        selector.push_str(&format!(",{INDEX_LABEL}={i}"));
    }
    let source = pod_logs::Source {
        pods: Api::namespaced(client, &ns),
        selector,
        container: "main".into(),
        prefix,
        owners: jobs,
        name: name.to_string(),
        finished: is_finished,
    };
    outcome(&pod_logs::stream(source, job, args.follow).await?)
}

fn is_finished(job: &TrainingJob) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(|p| p.is_terminal())
}

/// Exit like `az ml job stream`: success only for a completed job.
fn outcome(job: &TrainingJob) -> anyhow::Result<()> {
    let status = job.status.clone().unwrap_or_default();
    match status.phase {
        Some(TrainingJobPhase::Failed | TrainingJobPhase::Canceled) => bail!(
            "trainingjob/{} {:?}: {}",
            job.name_any(),
            status.phase.unwrap_or(TrainingJobPhase::Failed),
            status.message.unwrap_or_default()
        ),
        Some(TrainingJobPhase::Completed) => {
            eprintln!("trainingjob/{} Completed", job.name_any());
            Ok(())
        }
        _ => Ok(()),
    }
}
