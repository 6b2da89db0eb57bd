//! Progress through the driver's own Pod: an annotation the BatchJob controller sums into status.
//!
//! The progress files live on the output volume, which the operator cannot read, and scraping pod logs
//! would be heavy. So a driver started with `MLCOMPUTE_PROGRESS_ANNOTATE=1` patches annotation
//! [`ANNOTATION`] of its own Pod (named by `POD_NAME` / `POD_NAMESPACE` from the downward API) with a
//! small JSON [`PodProgress`], at most once per [`MIN_INTERVAL`], using the Pod's service account. The
//! BatchJob controller watches its Job's Pods and adds the counters up per instance.
//!
//! [`PodAnnotationSink::report`] never blocks the driver: it hands the latest snapshot to a
//! background task, which patches it; [`Flusher::finish`] waits for the last one before the process
//! exits.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::progress::{Counts, Phase, Progress, ProgressError, ProgressSink};

/// The Pod annotation holding an instance's progress.
pub const ANNOTATION: &str = "mlcompute.io/progress";
/// Fewest time between two patches of the annotation.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Longest reason kept in the annotation.
const MAX_REASON: usize = 1000;

/// What one instance reports through its Pod: counters of its shard, and why it stopped.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodProgress {
    pub instance: u32,
    pub instance_count: u32,
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub mini_batches: Counts,
    pub items: Counts,
    pub updated_unix_ms: u64,
}

impl PodProgress {
    /// The annotation's subset of a driver snapshot.
    pub fn from_progress(p: &Progress) -> Self {
        Self {
            instance: p.instance,
            instance_count: p.instance_count,
            phase: p.phase,
            reason: p
                .reason
                .as_ref()
                .map(|r| r.chars().take(MAX_REASON).collect()),
            mini_batches: p.mini_batches,
            items: p.items,
            updated_unix_ms: p.updated_unix_ms,
        }
    }

    /// The annotation value.
    pub fn to_annotation(&self) -> Result<String, ProgressError> {
        serde_json::to_string(self).map_err(ProgressError::Encode)
    }

    /// Reads an annotation value; `None` when it is not one.
    pub fn parse(value: &str) -> Option<Self> {
        serde_json::from_str(value).ok()
    }
}

/// The merge patch that sets the annotation.
pub fn annotation_patch(value: &str) -> serde_json::Value {
    serde_json::json!({ "metadata": { "annotations": { ANNOTATION: value } } })
}

/// Hands snapshots to the patching task.
pub struct PodAnnotationSink {
    latest: watch::Sender<Option<String>>,
}

/// Waits for the last snapshot to reach the Pod.
pub struct Flusher {
    latest: watch::Sender<Option<String>>,
    done: watch::Receiver<Option<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl PodAnnotationSink {
    /// Starts the patching task for Pod `namespace/pod`. Needs a Tokio runtime.
    pub fn start(client: Client, namespace: &str, pod: &str) -> (Self, Flusher) {
        let (latest, mut rx) = watch::channel::<Option<String>>(None);
        let (done_tx, done) = watch::channel::<Option<String>>(None);
        let api: Api<Pod> = Api::namespaced(client, namespace);
        let pod = pod.to_string();
        let task = tokio::spawn(async move {
            loop {
                let value = rx.borrow_and_update().clone();
                if let Some(value) = value {
                    match api
                        .patch(
                            &pod,
                            &PatchParams::default(),
                            &Patch::Merge(annotation_patch(&value)),
                        )
                        .await
                    {
                        Ok(_) => {
                            let _ = done_tx.send(Some(value));
                        }
                        Err(err) => tracing::warn!(%err, pod, "progress annotation not written"),
                    }
                    tokio::time::sleep(MIN_INTERVAL).await;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
        (
            Self {
                latest: latest.clone(),
            },
            Flusher { latest, done, task },
        )
    }
}

impl ProgressSink for PodAnnotationSink {
    fn report(&mut self, progress: &Progress) -> Result<(), ProgressError> {
        let value = PodProgress::from_progress(progress).to_annotation()?;
        self.latest.send_replace(Some(value));
        Ok(())
    }
}

impl Flusher {
    /// Waits (at most `timeout`) until the last reported snapshot is on the Pod, then stops the task.
    pub async fn finish(mut self, timeout: Duration) {
        let want = self.latest.borrow().clone();
        if want.is_some() {
            let reached = tokio::time::timeout(timeout, self.done.wait_for(|d| *d == want)).await;
            if reached.is_err() {
                tracing::warn!("the final progress did not reach the pod annotation in time");
            }
        }
        self.task.abort();
    }
}

/// Sums the instances' reports into the job's counters. One report per instance counts (the newest,
/// so a retried Pod of the same index replaces its predecessor's); reports of another instance count
/// (a different plan) are ignored.
pub fn sum<'a>(reports: impl IntoIterator<Item = &'a PodProgress>, instance_count: u32) -> Totals {
    let mut newest: std::collections::BTreeMap<u32, &PodProgress> = Default::default();
    for r in reports {
        if r.instance_count != instance_count || r.instance >= instance_count {
            continue;
        }
        let slot = newest.entry(r.instance).or_insert(r);
        if r.updated_unix_ms > slot.updated_unix_ms {
            *slot = r;
        }
    }
    let mut t = Totals {
        instances_reporting: newest.len() as u32,
        ..Totals::default()
    };
    for r in newest.values() {
        t.mini_batches.total += r.mini_batches.total;
        t.mini_batches.succeeded += r.mini_batches.succeeded;
        t.mini_batches.failed += r.mini_batches.failed;
        t.items.total += r.items.total;
        t.items.succeeded += r.items.succeeded;
        t.items.failed += r.items.failed;
        if r.phase == Phase::Failed && t.reason.is_none() {
            t.reason = r.reason.clone();
        }
    }
    t
}

/// The job's counters, summed over instances.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub instances_reporting: u32,
    pub mini_batches: Counts,
    pub items: Counts,
    /// The reason of the first failed instance.
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(instance: u32, done: u64, failed_items: u64, at: u64) -> Progress {
        Progress {
            instance,
            instance_count: 2,
            plan: "abc".into(),
            mini_batches: Counts {
                total: 10,
                succeeded: done,
                failed: 0,
            },
            items: Counts {
                total: 100,
                succeeded: done * 10 - failed_items,
                failed: failed_items,
            },
            updated_unix_ms: at,
            ..Progress::default()
        }
    }

    #[test]
    fn the_annotation_is_small_camel_case_json() {
        let mut p = progress(1, 4, 2, 1234);
        p.phase = Phase::Failed;
        p.reason = Some("x".repeat(5000));
        let value = PodProgress::from_progress(&p).to_annotation().unwrap();
        let json: serde_json::Value = serde_json::from_str(&value).unwrap();
        assert_eq!(json["instance"], 1);
        assert_eq!(json["instanceCount"], 2);
        assert_eq!(json["phase"], "Failed");
        assert_eq!(json["miniBatches"]["succeeded"], 4);
        assert_eq!(json["items"]["failed"], 2);
        assert_eq!(json["updatedUnixMs"], 1234);
        assert_eq!(json["reason"].as_str().unwrap().len(), MAX_REASON);
        assert!(json.get("plan").is_none() && json.get("timing").is_none());
        assert!(value.len() < 1400, "{}", value.len());
        assert_eq!(
            annotation_patch(&value)["metadata"]["annotations"][ANNOTATION],
            value.as_str()
        );
    }

    #[test]
    fn sums_the_newest_report_of_each_instance() {
        let from = |p: Progress| PodProgress::from_progress(&p);
        let reports = vec![
            from(progress(0, 3, 1, 10)),
            from(progress(0, 5, 1, 20)), // a newer report of instance 0 (or of its retried pod)
            from(progress(1, 2, 0, 15)),
            PodProgress {
                instance_count: 3, // another plan
                ..from(progress(1, 9, 9, 99))
            },
        ];
        let t = sum(&reports, 2);
        assert_eq!(t.instances_reporting, 2);
        assert_eq!(t.mini_batches.total, 20);
        assert_eq!(t.mini_batches.succeeded, 7);
        assert_eq!(t.items.failed, 1);
        assert_eq!(PodProgress::parse("not json"), None);
    }
}
