//! Demand per deployment for the operator's autoscaler ([`crate::contract::load`]): requests in
//! flight and queued, and the time integral of each since the router started.
//!
//! The integrals are kept without a lock. For a gauge that requests enter at `s_i` and leave at
//! `e_i`, the integral up to `t` is `Σ e_i − Σ s_i + n·t` over the requests seen so far, `n` being
//! the ones still inside. So entering adds the clock to one counter, leaving adds it to another,
//! and a report reads both and the gauge: three relaxed atomics per transition. The sums wrap;
//! their difference does not (it is at most the integral, in microseconds).
//!
//! Entries outlive table loads (like instances, see `routes`): a reload keeps the integrals of a
//! deployment that is still listed, and forgets one that no table lists any more.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
};

use rand_core::{OsRng, RngCore};
// Tokio's clock (the system's outside tests), so tests with a paused clock see the integrals move.
use tokio::time::Instant;

use crate::contract::load::{DeploymentLoad, LoadReport};

/// Every deployment's demand, shared by all serving threads.
#[derive(Debug)]
pub struct LoadBook {
    epoch: Instant,
    router_id: String,
    entries: Mutex<HashMap<(String, String), Weak<Demand>>>,
}

/// Demand on one deployment.
#[derive(Debug)]
pub struct Demand {
    epoch: Instant,
    busy: Gauge,
    queued: Gauge,
    requests: AtomicU64,
}

/// A count with its time integral (see the module comment).
#[derive(Debug, Default)]
pub struct Gauge {
    inside: AtomicU64,
    entered_us: AtomicU64,
    left_us: AtomicU64,
}

/// One request counted in a [`Gauge`] until dropped.
#[derive(Debug)]
pub struct Inside<'a> {
    gauge: &'a Gauge,
    epoch: Instant,
}

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        let now = micros(self.epoch);
        self.gauge.left_us.fetch_add(now, Ordering::Relaxed);
        self.gauge.inside.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Gauge {
    fn enter(&self, epoch: Instant) -> Inside<'_> {
        let now = micros(epoch);
        self.entered_us.fetch_add(now, Ordering::Relaxed);
        self.inside.fetch_add(1, Ordering::Relaxed);
        Inside { gauge: self, epoch }
    }

    /// (count now, integral in request-seconds up to `now_us`).
    fn read(&self, now_us: u64) -> (u64, f64) {
        // Read the gauge last: a request entering meanwhile adds its start to `entered` first,
        // so at worst the integral misses that request's few microseconds.
        let left = self.left_us.load(Ordering::Relaxed);
        let entered = self.entered_us.load(Ordering::Relaxed);
        let inside = self.inside.load(Ordering::Relaxed);
        let integral = inside
            .wrapping_mul(now_us)
            .wrapping_add(left)
            .wrapping_sub(entered);
        // A torn read can come out a hair below zero (wrapped): count it as zero.
        let integral = if integral > u64::MAX / 2 { 0 } else { integral };
        (inside, integral as f64 / 1e6)
    }
}

impl Demand {
    /// Counts a request in flight (holding a slot) until the guard is dropped.
    pub fn busy(&self) -> Inside<'_> {
        self.busy.enter(self.epoch)
    }

    /// Counts a request waiting (for a slot or a first instance) until the guard is dropped.
    pub fn queued(&self) -> Inside<'_> {
        self.queued.enter(self.epoch)
    }

    /// Counts a request that arrived for this deployment.
    pub fn arrived(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
}

impl Default for LoadBook {
    fn default() -> Self {
        Self::new()
    }
}

impl LoadBook {
    /// An empty book whose clock starts now, with a fresh router id.
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            router_id: format!("{}-{:016x}", std::process::id(), OsRng.next_u64()),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The demand record of one deployment: the existing one while any table lists it.
    pub fn load(&self, endpoint: &str, deployment: &str) -> Arc<Demand> {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = (endpoint.to_owned(), deployment.to_owned());
        if let Some(load) = entries.get(&key).and_then(Weak::upgrade) {
            return load;
        }
        entries.retain(|_, weak| weak.strong_count() > 0);
        let load = Arc::new(Demand {
            epoch: self.epoch,
            busy: Gauge::default(),
            queued: Gauge::default(),
            requests: AtomicU64::new(0),
        });
        entries.insert(key, Arc::downgrade(&load));
        load
    }

    /// The report for `GET /load`, sorted by endpoint and deployment.
    pub fn report(&self) -> LoadReport {
        let now_us = micros(self.epoch);
        let live: Vec<((String, String), Arc<Demand>)> = {
            let entries = self
                .entries
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            entries
                .iter()
                .filter_map(|(key, weak)| Some((key.clone(), weak.upgrade()?)))
                .collect()
        };
        let mut deployments: Vec<DeploymentLoad> = live
            .into_iter()
            .map(|((endpoint, deployment), load)| {
                let (in_flight, busy_seconds) = load.busy.read(now_us);
                let (queued, queued_seconds) = load.queued.read(now_us);
                DeploymentLoad {
                    endpoint,
                    deployment,
                    in_flight,
                    queued,
                    busy_seconds,
                    queued_seconds,
                    requests: load.requests.load(Ordering::Relaxed),
                }
            })
            .collect();
        deployments.sort_by(|a, b| (&a.endpoint, &a.deployment).cmp(&(&b.endpoint, &b.deployment)));
        LoadReport {
            router_id: self.router_id.clone(),
            uptime_seconds: now_us as f64 / 1e6,
            deployments,
        }
    }
}

fn micros(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integrals_add_up_the_time_requests_spend_inside() {
        let gauge = Gauge::default();
        let epoch = Instant::now();
        // Enter at 1 s and 2 s, leave one at 4 s: read at 5 s.
        gauge
            .entered_us
            .fetch_add(1_000_000 + 2_000_000, Ordering::Relaxed);
        gauge.inside.fetch_add(2, Ordering::Relaxed);
        gauge.left_us.fetch_add(4_000_000, Ordering::Relaxed);
        gauge.inside.fetch_sub(1, Ordering::Relaxed);
        let (inside, seconds) = gauge.read(5_000_000);
        // (4 − 1) + (5 − 2) = 6 request-seconds, one still inside.
        assert_eq!((inside, seconds), (1, 6.0));
        let guard = gauge.enter(epoch);
        assert_eq!(gauge.read(micros(epoch)).0, 2);
        drop(guard);
        assert_eq!(gauge.read(micros(epoch)).0, 1);
    }

    #[test]
    fn a_torn_read_never_reports_negative_load() {
        let gauge = Gauge::default();
        // Entered counted, gauge not yet: the formula would be slightly negative.
        gauge.entered_us.fetch_add(10, Ordering::Relaxed);
        assert_eq!(gauge.read(10), (0, 0.0));
    }

    #[test]
    fn records_outlive_reloads_while_listed_and_are_reported() {
        let book = LoadBook::new();
        let blue = book.load("e", "blue");
        assert!(Arc::ptr_eq(&blue, &book.load("e", "blue")));
        blue.arrived();
        let _queued = blue.queued();
        let _busy = blue.busy();
        let _other = book.load("e", "green");
        let report = book.report();
        assert_eq!(report.deployments.len(), 2);
        let b = report.deployment("e", "blue").unwrap();
        assert_eq!((b.in_flight, b.queued, b.requests), (1, 1, 1));
        drop(_other);
        assert!(book.report().deployment("e", "green").is_none());
        assert_ne!(report.router_id, LoadBook::new().router_id);
    }
}
