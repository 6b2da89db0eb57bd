//! Events, published off the reconcile path.
//!
//! A reconcile hands its Event to a bounded queue and goes on. One writer task sends them through
//! a client with a token bucket of its own (a quarter of the controllers' rate), so Events never
//! hold a reconcile and never take the budget that Pod creation and status writes need: in a burst
//! of 1000 jobs the Pods go out first and the Events follow. A full queue drops the Event and counts
//! it (`mlcompute_events_dropped_total`); Events are best-effort in Kubernetes too (client-go drops
//! them when its broadcaster queue is full).

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Client, Resource,
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use prometheus::{IntCounterVec, Opts, Registry};
use tokio::sync::mpsc;

use super::ratelimit::RateLimit;

/// Events that may wait to be written before new ones are dropped.
const QUEUE: usize = 4096;
/// Events written at once.
const IN_FLIGHT: usize = 4;
/// The longest note (the API server's limit is 1 KiB).
const MAX_NOTE_CHARS: usize = 1000;

/// The Events' own rate: a quarter of the controllers' (at least 5 per second, burst 10).
pub fn events_rate(controllers: RateLimit) -> RateLimit {
    RateLimit {
        qps: (controllers.qps / 4.0).max(5.0),
        burst: (controllers.burst / 4).max(10),
    }
}

/// One Event waiting to be written.
struct Pending {
    event: Event,
    regarding: ObjectReference,
}

/// The handle controllers publish through (cheap to clone).
#[derive(Clone)]
pub struct Events {
    queue: mpsc::Sender<Pending>,
    counts: IntCounterVec,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl Events {
    /// Starts the writer on `client` (which should carry [`events_rate`]) and registers
    /// `mlcompute_events_total{result}` in `registry`.
    pub fn start(
        client: Client,
        reporter: Reporter,
        registry: &Registry,
    ) -> prometheus::Result<Self> {
        let counts = IntCounterVec::new(
            Opts::new(
                "events_total",
                "Kubernetes Events, by result (written, failed, dropped when the queue was full)",
            ),
            &["result"],
        )?;
        registry.register(Box::new(counts.clone()))?;
        let (queue, pending) = mpsc::channel(QUEUE);
        tokio::spawn(write(
            Recorder::new(client, reporter),
            pending,
            counts.clone(),
        ));
        Ok(Self { queue, counts })
    }

    /// A handle whose Events go nowhere: for reconcile tests on a mocked client, which assert
    /// the controller's own writes only.
    #[cfg(test)]
    pub fn discard() -> Self {
        let (queue, _) = mpsc::channel(1);
        let counts = IntCounterVec::new(Opts::new("events_total", "discarded"), &["result"])
            .unwrap_or_else(|e| panic!("{e}"));
        Self { queue, counts }
    }

    /// Queues an Event about `obj`; never waits.
    pub fn publish<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        warning: bool,
        reason: &str,
        note: &str,
    ) {
        let pending = Pending {
            event: event(warning, reason, note),
            regarding: obj.object_ref(&()),
        };
        if self.queue.try_send(pending).is_err() {
            self.counts.with_label_values(&["dropped"]).inc();
        }
    }
}

/// The Event for a step (pure).
pub fn event(warning: bool, reason: &str, note: &str) -> Event {
    Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.to_string(),
        note: Some(note.chars().take(MAX_NOTE_CHARS).collect()),
        action: "Reconcile".into(),
        secondary: None,
    }
}

async fn write(recorder: Recorder, pending: mpsc::Receiver<Pending>, counts: IntCounterVec) {
    futures::stream::unfold(
        pending,
        |mut rx| async move { rx.recv().await.map(|p| (p, rx)) },
    )
    .for_each_concurrent(IN_FLIGHT, |p| {
        let (recorder, counts) = (&recorder, &counts);
        async move {
            match recorder.publish(&p.event, &p.regarding).await {
                Ok(()) => counts.with_label_values(&["written"]).inc(),
                Err(err) => {
                    counts.with_label_values(&["failed"]).inc();
                    tracing::warn!(%err, reason = %p.event.reason, "publishing event failed");
                }
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_get_a_quarter_of_the_rate_with_a_floor() {
        assert_eq!(
            events_rate(RateLimit {
                qps: 500.0,
                burst: 1000
            }),
            RateLimit {
                qps: 125.0,
                burst: 250
            }
        );
        assert_eq!(
            events_rate(RateLimit { qps: 5.0, burst: 8 }),
            RateLimit {
                qps: 5.0,
                burst: 10
            }
        );
    }

    #[test]
    fn notes_are_cut_to_the_api_limit_and_warnings_typed() {
        let e = event(true, "Unschedulable", &"x".repeat(5000));
        assert_eq!(e.note.as_ref().map(|n| n.chars().count()), Some(1000));
        assert!(matches!(e.type_, EventType::Warning));
        assert!(matches!(
            event(false, "Running", "ok").type_,
            EventType::Normal
        ));
    }
}
