//! `mlcompute logs trainingjob/NAME [-f] [--instance N]`: every instance's log, interleaved with a
//! prefix, following new attempts, ending with the job's outcome (like `az ml job stream`).

use std::{collections::HashSet, io::Write, time::Duration};

use anyhow::{Context as _, anyhow, bail};
use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, ResourceExt,
    api::{ListParams, LogParams},
    runtime::{WatchStreamExt, watcher},
};
use tokio::sync::mpsc;

use super::job::Target;
use crate::{
    api::{common::JobPhase as TrainingJobPhase, training_job::TrainingJob},
    operator::children::{LABEL_MANAGED_BY, MANAGER},
    training::children::{INDEX_LABEL, ROLE_LABEL},
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

fn has_logs(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Running" | "Succeeded" | "Failed")
    )
}

async fn training_job(args: &LogsArgs, name: &str) -> anyhow::Result<()> {
    let (client, ns) = args.cluster.client().await?;
    let jobs: Api<TrainingJob> = Api::namespaced(client.clone(), &ns);
    let job = jobs
        .get(name)
        .await
        .with_context(|| format!("getting TrainingJob {ns}/{name}"))?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let mut selector = format!("{LABEL_MANAGED_BY}={MANAGER},mlcompute.io/trainingjob={name}");
    if let Some(i) = args.instance {
        selector.push_str(&format!(",{INDEX_LABEL}={i}"));
    }
    let (tx, mut rx) = mpsc::channel::<String>(1024);
    let mut streaming: HashSet<String> = HashSet::new();
    let start = |pod: &Pod, streaming: &mut HashSet<String>| {
        let key = pod.uid().unwrap_or_default();
        if !has_logs(pod) || !streaming.insert(key) {
            return;
        }
        let (pods, tx, pod_name, prefix, follow) = (
            pods.clone(),
            tx.clone(),
            pod.name_any(),
            prefix(pod),
            args.follow,
        );
        tokio::spawn(async move {
            let params = LogParams {
                follow,
                container: Some("main".into()),
                ..LogParams::default()
            };
            match pods.log_stream(&pod_name, &params).await {
                Ok(stream) => {
                    let mut lines = stream.lines();
                    while let Ok(Some(line)) = lines.try_next().await {
                        if tx.send(format!("{prefix} {line}")).await.is_err() {
                            break;
                        }
                    }
                }
                Err(err) => {
                    let _ = tx.send(format!("{prefix} (logs unavailable: {err})")).await;
                }
            }
        });
    };

    if !args.follow {
        let list = pods.list(&ListParams::default().labels(&selector)).await?;
        let mut items = list.items;
        items.sort_by_key(|p| p.name_any());
        for p in &items {
            start(p, &mut streaming);
        }
        drop(tx);
        print_all(&mut rx).await;
        return outcome(&job);
    }

    let mut pod_events = watcher(pods.clone(), watcher::Config::default().labels(&selector))
        .applied_objects()
        .boxed();
    let mut job_events = watcher(
        jobs.clone(),
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .applied_objects()
    .boxed();
    let mut finished: Option<TrainingJob> = is_finished(&job).then_some(job);
    let mut drain_deadline = finished
        .as_ref()
        .map(|_| tokio::time::Instant::now() + Duration::from_secs(3));
    let stdout = std::io::stdout();
    loop {
        let deadline = drain_deadline
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            Some(line) = rx.recv() => { let _ = writeln!(stdout.lock(), "{line}"); }
            Some(Ok(pod)) = pod_events.next() => start(&pod, &mut streaming),
            Some(Ok(j)) = job_events.next() => {
                if is_finished(&j) && finished.is_none() {
                    // Give the streams a moment to deliver the last lines, then stop.
                    drain_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(2));
                    finished = Some(j);
                }
            }
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    while let Ok(line) = rx.try_recv() {
        let _ = writeln!(stdout.lock(), "{line}");
    }
    match finished {
        Some(j) => outcome(&j),
        None => Ok(()),
    }
}

async fn print_all(rx: &mut mpsc::Receiver<String>) {
    let stdout = std::io::stdout();
    while let Some(line) = rx.recv().await {
        let _ = writeln!(stdout.lock(), "{line}");
    }
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
