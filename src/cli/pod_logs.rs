//! Streaming the logs of a job's Pods, each line prefixed with its instance: shared by
//! `mlcompute logs trainingjob/…` and `logs batchjob/…`.

use std::{collections::HashSet, fmt::Debug, io::Write, time::Duration};

use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Resource, ResourceExt,
    api::{ListParams, LogParams},
    runtime::{WatchStreamExt, watcher},
};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

/// Whose logs to stream.
pub struct Source<K> {
    /// The namespace's Pods, and a label selector for the job's.
    pub pods: Api<Pod>,
    pub selector: String,
    /// The container to read.
    pub container: String,
    /// The prefix of a Pod's lines, e.g. `[worker-0]`.
    pub prefix: fn(&Pod) -> String,
    /// The owning job, watched (when following) until `finished` says it is done.
    pub owners: Api<K>,
    pub name: String,
    pub finished: fn(&K) -> bool,
}

fn has_logs(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Running" | "Succeeded" | "Failed")
    )
}

/// Prints the logs of every Pod of `src` to stdout. With `follow`, keeps streaming, also from Pods
/// that appear later (retries), until the owner finishes; returns the owner as last seen.
pub async fn stream<K>(src: Source<K>, owner: K, follow: bool) -> anyhow::Result<K>
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default,
{
    let (tx, mut rx) = mpsc::channel::<String>(1024);
    let mut streaming: HashSet<String> = HashSet::new();
    let start = |pod: &Pod, streaming: &mut HashSet<String>| {
        if !has_logs(pod) || !streaming.insert(pod.uid().unwrap_or_default()) {
            return;
        }
        let (pods, tx, pod_name, prefix) = (
            src.pods.clone(),
            tx.clone(),
            pod.name_any(),
            (src.prefix)(pod),
        );
        let params = LogParams {
            follow,
            container: Some(src.container.clone()),
            ..LogParams::default()
        };
        tokio::spawn(async move {
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

    if !follow {
        let mut items = src
            .pods
            .list(&ListParams::default().labels(&src.selector))
            .await?
            .items;
        items.sort_by_key(|p| ((src.prefix)(p), p.name_any()));
        for p in &items {
            start(p, &mut streaming);
        }
        drop(tx);
        while let Some(line) = rx.recv().await {
            let _ = writeln!(stdout.lock(), "{line}");
        }
        return Ok(owner);
    }

    let mut pod_events = watcher(
        src.pods.clone(),
        watcher::Config::default().labels(&src.selector),
    )
    .applied_objects()
    .boxed();
    let by_name = watcher::Config::default().fields(&format!("metadata.name={}", src.name));
    let mut owner_events = watcher(src.owners.clone(), by_name)
        .applied_objects()
        .boxed();
    let mut last = owner;
    // Once the owner is finished, give the streams a moment to deliver the last lines, then stop.
    let mut drain_deadline =
        (src.finished)(&last).then(|| tokio::time::Instant::now() + Duration::from_secs(3));
    loop {
        let deadline = drain_deadline
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            Some(line) = rx.recv() => { let _ = writeln!(stdout.lock(), "{line}"); }
            Some(Ok(pod)) = pod_events.next() => start(&pod, &mut streaming),
            Some(Ok(o)) = owner_events.next() => {
                if drain_deadline.is_none() {
                    if (src.finished)(&o) {
                        drain_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(2));
                    }
                    last = o;
                }
            }
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    while let Ok(line) = rx.try_recv() {
        let _ = writeln!(stdout.lock(), "{line}");
    }
    Ok(last)
}
