//! Per-instance concurrency limits with a bounded queue wait (Azure ML's
//! `max_concurrent_requests_per_instance` and `max_queue_wait_ms`).
//!
//! Each instance has a semaphore with one permit per concurrent request. A request first takes
//! a free permit from the least-loaded instance; when every instance is busy it waits for the
//! first permit to free up on any of them, for at most the queue wait, and then gives up (503, as Azure ML).

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::future::select_all;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How many requests one instance serves at once, and how many it serves now.
#[derive(Debug)]
pub struct InstanceLimit {
    permits: Arc<Semaphore>,
    in_flight: Arc<AtomicUsize>,
}

/// A held slot on an instance; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    in_flight: Arc<AtomicUsize>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every instance was busy for the whole queue wait.
#[derive(Debug, thiserror::Error)]
#[error("all {instances} instances stayed busy for the queue wait of {waited_ms} ms")]
pub struct Busy {
    /// Instances that were tried.
    pub instances: usize,
    /// The queue wait that expired.
    pub waited_ms: u128,
}

impl Busy {
    /// A bounded name for metrics and logs.
    pub fn category(&self) -> &'static str {
        "busy"
    }
}

impl InstanceLimit {
    /// A limit of `max_concurrent` requests at once (0 is read as 1).
    pub fn new(max_concurrent: u32) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_concurrent.max(1) as usize)),
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Requests being served now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Takes a slot if one is free now.
    pub fn try_acquire(&self) -> Option<Slot> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        Some(self.slot(permit))
    }

    fn slot(&self, permit: OwnedSemaphorePermit) -> Slot {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Slot {
            _permit: permit,
            in_flight: self.in_flight.clone(),
        }
    }
}

/// Takes a slot on one of `candidates` (in preference order): a free one at once, or else the
/// first to free up within `wait`. Returns the candidate's position and its slot. `waiting` is
/// called when the request has to wait, and what it returns is held for as long as it waits
/// (the deployment's queued count, see `load`).
pub async fn acquire_any<G>(
    candidates: &[&InstanceLimit],
    wait: Duration,
    waiting: impl FnOnce() -> G,
) -> Result<(usize, Slot), Busy> {
    for (position, limit) in candidates.iter().enumerate() {
        if let Some(slot) = limit.try_acquire() {
            return Ok((position, slot));
        }
    }
    let busy = Busy {
        instances: candidates.len(),
        waited_ms: wait.as_millis(),
    };
    if candidates.is_empty() || wait.is_zero() {
        return Err(busy);
    }
    let _waiting = waiting();
    let waits = candidates
        .iter()
        .map(|limit| Box::pin(limit.permits.clone().acquire_owned()));
    match tokio::time::timeout(wait, select_all(waits)).await {
        Ok((Ok(permit), position, _)) => Ok((position, candidates[position].slot(permit))),
        // A closed semaphore never happens (we never close them); treat it as busy.
        Ok((Err(_), _, _)) | Err(_) => Err(busy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn free_slots_are_taken_in_preference_order() {
        let a = InstanceLimit::new(1);
        let b = InstanceLimit::new(1);
        let (first, _slot_a) = acquire_any(&[&a, &b], Duration::ZERO, || ()).await.unwrap();
        assert_eq!(first, 0);
        let (second, _slot_b) = acquire_any(&[&a, &b], Duration::ZERO, || ()).await.unwrap();
        assert_eq!(second, 1);
        assert_eq!(a.in_flight() + b.in_flight(), 2);
        let busy = acquire_any(&[&a, &b], Duration::ZERO, || ())
            .await
            .unwrap_err();
        assert_eq!(busy.instances, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_request_gets_the_first_slot_freed() {
        let a = Arc::new(InstanceLimit::new(1));
        let b = Arc::new(InstanceLimit::new(1));
        let _held_a = a.try_acquire().unwrap();
        let held_b = b.try_acquire().unwrap();
        let (a2, b2) = (a.clone(), b.clone());
        let waiter = tokio::spawn(async move {
            acquire_any(&[&a2, &b2], Duration::from_millis(500), || ())
                .await
                .map(|(position, _)| position)
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(held_b);
        assert_eq!(waiter.await.unwrap().unwrap(), 1);
        assert_eq!(
            b.in_flight(),
            0,
            "the waiter's slot was released when it dropped"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_wait_is_bounded() {
        let a = InstanceLimit::new(2);
        let _one = a.try_acquire().unwrap();
        let _two = a.try_acquire().unwrap();
        let busy = acquire_any(&[&a], Duration::from_millis(500), || ())
            .await
            .unwrap_err();
        assert_eq!(busy.waited_ms, 500);
        assert_eq!(a.in_flight(), 2);
    }
}
