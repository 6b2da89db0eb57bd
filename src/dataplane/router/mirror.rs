//! Mirror copies: fire-and-forget, off the live path.
//!
//! The live request only does a `try_send` into a bounded queue; a full queue drops the copy
//! and counts it. Each serving thread has its own queue and dispatcher on its own runtime (no
//! cross-thread wake-ups on the live path). The dispatcher drains the queue and runs each copy as
//! a task, at most `workers` at a time, so a slow or dead mirror deployment fills the queue and then costs
//! nothing but drop counts. Copies take a free slot on a mirror instance or are dropped (they
//! never wait), are never retried, and their answers are discarded. When copies pile up in the
//! queue, those for one instance go out pipelined on one connection (see [`MAX_PIPELINE`]).

use std::{cell::RefCell, sync::Arc};

use tokio::sync::{Semaphore, mpsc};

use super::{
    metrics::MirrorDrop,
    pick::instance_order,
    proxy::{Outgoing, send, send_pipelined},
    routes::{Deployment, Instance},
};

/// The header that tells a mirror instance it is receiving a copy.
pub const MIRROR_HEADER: &str = "x-mlcompute-mirror";

/// One copy to deliver.
#[derive(Debug)]
pub struct MirrorJob {
    /// Where to.
    pub deployment: Arc<Deployment>,
    /// What (shared with the live request).
    pub outgoing: Arc<Outgoing>,
}

thread_local! {
    static LOCAL: RefCell<Option<Mirror>> = const { RefCell::new(None) };
}

/// Starts this thread's mirror queue and dispatcher on the current runtime.
pub fn start_local(capacity: usize, workers: usize) {
    let mirror = Mirror::start(capacity, workers);
    LOCAL.with_borrow_mut(|local| *local = Some(mirror));
}

/// Offers a copy to this thread's queue (see [`Mirror::offer`]). A thread without a queue drops
/// the copy and counts it as a full queue.
pub fn offer_local(job: MirrorJob) {
    LOCAL.with_borrow(|local| match local {
        Some(mirror) => mirror.offer(job),
        None => job.deployment.metrics.mirror_dropped(MirrorDrop::QueueFull),
    });
}

/// The sending side of the mirror queue.
#[derive(Clone, Debug)]
pub struct Mirror {
    queue: mpsc::Sender<MirrorJob>,
}

impl Mirror {
    /// Starts the dispatcher with a queue of `capacity` copies and `workers` copies in flight.
    pub fn start(capacity: usize, workers: usize) -> Self {
        let (queue, jobs) = mpsc::channel(capacity.max(1));
        tokio::spawn(dispatch(jobs, Arc::new(Semaphore::new(workers.max(1)))));
        Self { queue }
    }

    /// Offers a copy; never waits. A full queue drops it and counts the drop.
    pub fn offer(&self, job: MirrorJob) {
        if let Err(refused) = self.queue.try_send(job) {
            let job = match refused {
                mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job) => {
                    job
                }
            };
            job.deployment.metrics.mirror_dropped(MirrorDrop::QueueFull);
        }
    }
}

/// Copies sent back to back on one connection when the queue holds several for one deployment
/// (HTTP/1.1 pipelining): one write, and usually one read, for the lot. Under light load the
/// queue holds one copy at a time and each goes out alone.
const MAX_PIPELINE: usize = 16;

async fn dispatch(mut jobs: mpsc::Receiver<MirrorJob>, workers: Arc<Semaphore>) {
    let mut received = Vec::with_capacity(MAX_PIPELINE);
    while jobs.recv_many(&mut received, MAX_PIPELINE).await > 0 {
        for batch in by_deployment(&mut received) {
            let Ok(permit) = workers.clone().acquire_owned().await else {
                return;
            };
            tokio::spawn(async move {
                deliver(batch).await;
                drop(permit);
            });
        }
    }
}

/// Splits `received` (emptied) into runs for the same deployment, in arrival order.
fn by_deployment(received: &mut Vec<MirrorJob>) -> Vec<Vec<MirrorJob>> {
    let mut batches: Vec<Vec<MirrorJob>> = Vec::new();
    for job in received.drain(..) {
        match batches
            .iter_mut()
            .find(|b| Arc::ptr_eq(&b[0].deployment, &job.deployment))
        {
            Some(batch) => batch.push(job),
            None => batches.push(vec![job]),
        }
    }
    batches
}

/// Delivers copies for one deployment: each takes a free slot on an instance (least loaded
/// first) or is dropped; the copies that got slots on the same instance go out together.
async fn deliver(batch: Vec<MirrorJob>) {
    let deployment = batch[0].deployment.clone();
    let metrics = &deployment.metrics;
    if deployment.instances.is_empty() {
        for _ in &batch {
            metrics.mirror_dropped(MirrorDrop::NoInstance);
        }
        return;
    }
    let mut pending = batch.as_slice();
    for i in instance_order(&deployment.instances, &deployment.cursor) {
        if pending.is_empty() {
            break;
        }
        let instance = &deployment.instances[i];
        let slots: Vec<_> = std::iter::from_fn(|| instance.limit.try_acquire())
            .take(pending.len())
            .collect();
        if slots.is_empty() {
            continue;
        }
        let (these, rest) = pending.split_at(slots.len());
        pending = rest;
        let delivered = send_copies(&deployment, instance, these).await;
        for _ in 0..delivered {
            metrics.mirror_sent();
        }
        for _ in delivered..these.len() {
            metrics.mirror_dropped(MirrorDrop::Failed);
        }
        drop(slots);
    }
    for _ in pending {
        metrics.mirror_dropped(MirrorDrop::Busy);
    }
}

/// Sends `copies` to `instance`; returns how many were answered.
async fn send_copies(deployment: &Deployment, instance: &Instance, copies: &[MirrorJob]) -> usize {
    let head = |job: &MirrorJob| {
        job.outgoing
            .head(deployment, instance, Some((MIRROR_HEADER, "1")))
    };
    if let [only] = copies {
        let sent = tokio::time::timeout(
            deployment.timeout,
            send(instance, &head(only), &only.outgoing),
        )
        .await;
        return usize::from(matches!(sent, Ok(Ok(_))));
    }
    // Pipelined answers are read with one framing: HEAD (no body) or not. Scoring traffic is all
    // POST; a run that mixes HEAD with other methods goes out one copy at a time.
    let head_request = copies.iter().all(|job| job.outgoing.is_head());
    if !head_request && copies.iter().any(|job| job.outgoing.is_head()) {
        let mut delivered = 0;
        for job in copies {
            let sent = tokio::time::timeout(
                deployment.timeout,
                send(instance, &head(job), &job.outgoing),
            )
            .await;
            delivered += usize::from(matches!(sent, Ok(Ok(_))));
        }
        return delivered;
    }
    let mut message = Vec::new();
    for job in copies {
        message.extend_from_slice(&head(job));
        message.extend_from_slice(&job.outgoing.body);
    }
    send_pipelined(
        instance,
        &message,
        copies.len(),
        head_request,
        deployment.timeout,
    )
    .await
}
