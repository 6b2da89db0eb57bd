//! `mlcompute logs batchjob/NAME [-f] [--instance N]`: the driver Pods' logs, each line prefixed with
//! its instance, following retried Pods, ending with the BatchJob's outcome (non-zero unless it
//! completed).

use std::{collections::HashSet, io::Write, time::Duration};

use anyhow::{Context as _, bail};
use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, ResourceExt,
    api::{ListParams, LogParams},
    runtime::{WatchStreamExt, watcher},
};
use tokio::sync::mpsc;

use super::logs::LogsArgs;
use crate::{
    api::{batch_job::BatchJob, common::JobPhase},
    batch_job::build::DRIVER_CONTAINER,
    operator::children::{LABEL_MANAGED_BY, MANAGER},
};

/// The Job controller's label holding an Indexed Job Pod's index.
const INDEX_LABEL: &str = "batch.kubernetes.io/job-completion-index";

fn prefix(pod: &Pod) -> String {
    format!(
        "[instance-{}]",
        pod.labels().get(INDEX_LABEL).cloned().unwrap_or_default()
    )
}

fn has_logs(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Running" | "Succeeded" | "Failed")
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
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let mut selector = format!("{LABEL_MANAGED_BY}={MANAGER},mlcompute.io/batchjob={name}");
    if let Some(i) = args.instance {
        selector.push_str(&format!(",{INDEX_LABEL}={i}"));
    }
    let (tx, mut rx) = mpsc::channel::<String>(1024);
    let mut streaming: HashSet<String> = HashSet::new();
    let start = |pod: &Pod, streaming: &mut HashSet<String>| {
        if !has_logs(pod) || !streaming.insert(pod.uid().unwrap_or_default()) {
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
                container: Some(DRIVER_CONTAINER.into()),
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
    let stdout = std::io::stdout();

    if !args.follow {
        let mut items = pods
            .list(&ListParams::default().labels(&selector))
            .await?
            .items;
        items.sort_by_key(|p| (prefix(p), p.name_any()));
        for p in &items {
            start(p, &mut streaming);
        }
        drop(tx);
        while let Some(line) = rx.recv().await {
            let _ = writeln!(stdout.lock(), "{line}");
        }
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
    let mut finished: Option<BatchJob> = is_finished(&job).then_some(job);
    let mut drain_deadline = finished
        .as_ref()
        .map(|_| tokio::time::Instant::now() + Duration::from_secs(3));
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
