//! Choices made per request: which deployment (weighted, or pinned by header), whether to mirror,
//! and which instance of a deployment.
//!
//! All of it is lock-free: a thread-local xorshift generator for the dice, cumulative weights
//! for the split, and per-instance in-flight counters for least-loaded instance choice.

use std::{
    cell::Cell,
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hasher},
    sync::atomic::{AtomicUsize, Ordering},
};

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    // RandomState is seeded from the OS once per process and varied per instance.
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(0x9e37_79b9_7f4a_7c15);
    hasher.finish() | 1
}

/// A random number from a cheap thread-local generator: xorshift64*, fast and good enough for
/// traffic splitting and request ids (not for secrets).
pub fn random_u64() -> u64 {
    RNG.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// A uniformly random number in `0..100`.
pub fn percent_roll() -> u32 {
    // Multiply-shift maps the high 32 bits onto 0..100 without modulo bias worth mentioning.
    (((random_u64() >> 32) * 100) >> 32) as u32
}

/// A weighted split over the deployments of one endpoint.
#[derive(Clone, Debug, Default)]
pub struct Split {
    /// (cumulative upper bound in percent, index of the deployment), only for traffic > 0.
    cumulative: Vec<(u32, usize)>,
}

impl Split {
    /// Builds the split from each deployment's traffic percent (summing to 0 or 100).
    pub fn new(traffic: impl IntoIterator<Item = u32>) -> Self {
        let mut total = 0;
        let cumulative = traffic
            .into_iter()
            .enumerate()
            .filter(|(_, weight)| *weight > 0)
            .map(|(index, weight)| {
                total += weight;
                (total, index)
            })
            .collect();
        Self { cumulative }
    }

    /// The deployment index for a roll in `0..100`, or `None` when nothing takes traffic.
    pub fn choose(&self, roll: u32) -> Option<usize> {
        match self.cumulative.as_slice() {
            [] => None,
            [(_, only)] => Some(*only),
            many => many
                .iter()
                .find(|(bound, _)| roll < *bound)
                .or(many.last())
                .map(|(_, index)| *index),
        }
    }
}

/// Something with a load figure: an instance's requests in flight.
pub trait Load {
    /// Requests in flight now.
    fn in_flight(&self) -> usize;
}

/// Orders instances for one request: least loaded first, ties broken round-robin so equal
/// instances share the work. Returns indices into `instances`.
pub fn instance_order<T: Load>(instances: &[T], cursor: &AtomicUsize) -> Vec<usize> {
    let n = instances.len();
    let start = if n > 1 {
        cursor.fetch_add(1, Ordering::Relaxed) % n
    } else {
        0
    };
    let mut order: Vec<usize> = (0..n).map(|i| (start + i) % n).collect();
    // A stable sort keeps the rotation among instances with the same load.
    order.sort_by_key(|&i| instances[i].in_flight());
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_follows_cumulative_weights() {
        let split = Split::new([90, 0, 10]);
        assert_eq!(split.choose(0), Some(0));
        assert_eq!(split.choose(89), Some(0));
        assert_eq!(split.choose(90), Some(2));
        assert_eq!(split.choose(99), Some(2));
        assert_eq!(Split::new([0, 0]).choose(5), None);
        assert_eq!(Split::new([0, 100]).choose(99), Some(1));
    }

    #[test]
    fn rolls_are_uniform_enough() {
        let mut counts = [0u32; 100];
        for _ in 0..1_000_000 {
            counts[percent_roll() as usize] += 1;
        }
        // Expected 10 000 each; 5 % is > 10 standard deviations.
        assert!(
            counts.iter().all(|&c| (9_500..10_500).contains(&c)),
            "{counts:?}"
        );
        let split = Split::new([90, 10]);
        let ninety = (0..100_000)
            .filter(|_| split.choose(percent_roll()) == Some(0))
            .count();
        assert!((89_000..91_000).contains(&ninety), "{ninety}");
    }

    struct Fake(usize);
    impl Load for Fake {
        fn in_flight(&self) -> usize {
            self.0
        }
    }

    #[test]
    fn least_loaded_first_then_round_robin() {
        let cursor = AtomicUsize::new(0);
        let instances = [Fake(3), Fake(0), Fake(1)];
        assert_eq!(instance_order(&instances, &cursor), vec![1, 2, 0]);
        let equal = [Fake(0), Fake(0), Fake(0)];
        let firsts: Vec<usize> = (0..3).map(|_| instance_order(&equal, &cursor)[0]).collect();
        let mut sorted = firsts.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2], "{firsts:?}");
    }
}
