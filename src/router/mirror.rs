//! Mirror copies: fire-and-forget, off the live path.
//!
//! The live request only does a `try_send` into a bounded queue; a full queue drops the copy
//! and counts it. Each serving thread has its own queue and dispatcher on its own runtime (no
//! cross-thread wake-ups on the live path). The dispatcher drains the queue and runs each copy as
//! a task, at most `workers` at a time, so a slow or dead mirror deployment fills the queue and then costs
//! nothing but drop counts. Copies take a free slot on a mirror instance or are dropped (they
//! never wait), are never retried, and their answers are discarded.

use std::{cell::RefCell, sync::Arc};

use tokio::sync::{Semaphore, mpsc};

use super::{
    metrics::MirrorDrop,
    pick::instance_order,
    proxy::{Outgoing, send},
    routes::Deployment,
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

async fn dispatch(mut jobs: mpsc::Receiver<MirrorJob>, workers: Arc<Semaphore>) {
    while let Some(job) = jobs.recv().await {
        let Ok(permit) = workers.clone().acquire_owned().await else {
            return;
        };
        tokio::spawn(async move {
            deliver(job).await;
            drop(permit);
        });
    }
}

async fn deliver(job: MirrorJob) {
    let MirrorJob {
        deployment,
        outgoing,
    } = job;
    let metrics = &deployment.metrics;
    if deployment.instances.is_empty() {
        metrics.mirror_dropped(MirrorDrop::NoInstance);
        return;
    }
    let order = instance_order(&deployment.instances, &deployment.cursor);
    let Some((instance, _slot)) = order.iter().find_map(|&i| {
        let instance = &deployment.instances[i];
        instance.limit.try_acquire().map(|slot| (instance, slot))
    }) else {
        metrics.mirror_dropped(MirrorDrop::Busy);
        return;
    };
    let head = outgoing.head(&deployment, instance, Some((MIRROR_HEADER, "1")));
    match tokio::time::timeout(deployment.timeout, send(instance, &head, &outgoing)).await {
        Ok(Ok(_discarded)) => metrics.mirror_sent(),
        Ok(Err(_)) | Err(_) => metrics.mirror_dropped(MirrorDrop::Failed),
    }
}
