//! How many instances a deployment should have (pure): Azure ML's rule for Kubernetes online
//! endpoints, plus scale to zero.
//!
//! - Demand, in instances: requests in flight and queued at the routers (averaged over the
//!   polling interval, or the count right now if higher, so a burst that starts late in the
//!   interval is not missed) over `maxConcurrentRequestsPerInstance`. With Azure ML's default of
//!   one request per instance this is Azure ML's `busy replicas + requests queued`.
//! - Utilisation: demand over current instances; the recommendation is the fewest instances at
//!   which utilisation is at most `targetUtilizationPercentage`: `ceil(demand / target)`, within
//!   `minInstances`..`maxInstances`.
//! - Up at once. Down only to the highest recommendation of the last 20 polling intervals, and
//!   only once samples cover that whole window (a restarted operator watches a whole window
//!   before it scales anything down), and only on a complete sample (every router read, each
//!   with an earlier reading); a partial view may raise the window, never lower it.
//! - Scale to zero (`minInstances: 0`): to zero once no request has arrived, run or waited for
//!   `scaleToZeroAfterSeconds`; from zero at the first queued request.
//! - Nothing known about the load (no router, none readable): the count stays, only brought
//!   within the bounds.

use std::{collections::VecDeque, fmt, time::Duration};

use tokio::time::Instant;

use super::sample::Sample;

/// Scale-down looks back this many polling intervals (Azure ML: about 20× the scale-up interval).
pub const DOWN_WINDOW_INTERVALS: u32 = 20;

/// A deployment's scale settings, as the decision needs them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    pub min: i32,
    pub max: i32,
    /// Target utilisation, 1..=100.
    pub target_percent: i32,
    /// Requests one instance serves at once.
    pub per_instance: u32,
    pub interval: Duration,
    pub scale_to_zero_after: Duration,
}

impl Policy {
    /// The scale-down window.
    pub fn down_window(&self) -> Duration {
        self.interval * DOWN_WINDOW_INTERVALS
    }
}

/// What one deployment's autoscaler remembers between evaluations (in memory only: a restarted
/// operator starts afresh, which only ever delays a scale-down).
#[derive(Clone, Debug)]
pub struct Memory {
    /// When a request was last seen (or `since`).
    last_active: Instant,
    /// Recommendations within the scale-down window, oldest first.
    recommendations: VecDeque<(Instant, i32)>,
}

impl Memory {
    /// A fresh memory at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            last_active: now,
            recommendations: VecDeque::new(),
        }
    }
}

/// Why the decision is what it is (`status.scale.reason`, Event reasons).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    ScaledUp,
    ScaledFromZero,
    ScaledDown,
    ScaledToZero,
    Steady,
    StabilizingDown,
    Idle,
    BelowMinimum,
    AboveMaximum,
    RoutersUnreadable,
    NoRouters,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScaledUp => "ScaledUp",
            Self::ScaledFromZero => "ScaledFromZero",
            Self::ScaledDown => "ScaledDown",
            Self::ScaledToZero => "ScaledToZero",
            Self::Steady => "Steady",
            Self::StabilizingDown => "StabilizingDown",
            Self::Idle => "Idle",
            Self::BelowMinimum => "BelowMinimum",
            Self::AboveMaximum => "AboveMaximum",
            Self::RoutersUnreadable => "RoutersUnreadable",
            Self::NoRouters => "NoRouters",
        }
    }

    /// A bounded direction label for metrics, for decisions that change the count.
    pub fn direction(self) -> &'static str {
        match self {
            Self::ScaledUp | Self::BelowMinimum => "up",
            Self::ScaledFromZero => "from_zero",
            Self::ScaledDown | Self::AboveMaximum => "down",
            Self::ScaledToZero => "to_zero",
            _ => "none",
        }
    }

    /// Whether the status shows a problem (a Warning Event when it starts).
    pub fn is_warning(self) -> bool {
        matches!(self, Self::RoutersUnreadable | Self::NoRouters)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub desired: i32,
    pub reason: Reason,
    /// Demand over current capacity, in percent (None when the load is unknown or no instance runs).
    pub utilization_percent: Option<f64>,
    pub message: String,
}

/// Decides the instance count of a deployment with `current` instances.
pub fn decide(
    policy: &Policy,
    current: i32,
    sample: &Sample,
    memory: &mut Memory,
    now: Instant,
) -> Decision {
    let (min, max) = (policy.min.max(0), policy.max.max(policy.min.max(0)));
    if sample.blind() {
        let (reason, why) = if sample.routers == 0 {
            (
                Reason::NoRouters,
                "no router to read the load from (configure the router Service or router URLs in the operator)".to_string(),
            )
        } else {
            (
                Reason::RoutersUnreadable,
                format!(
                    "no router could be read ({}): load unknown",
                    sample.unreadable.join("; ")
                ),
            )
        };
        let desired = current.clamp(min, max);
        return Decision {
            desired,
            reason,
            utilization_percent: None,
            message: format!("{why}; keeping {desired} instances within {min}..{max}"),
        };
    }

    // A router that could not be read may have seen requests: idleness must be seen everywhere.
    if sample.active || !sample.unreadable.is_empty() {
        memory.last_active = now;
    }
    let per_instance = f64::from(policy.per_instance.max(1));
    let demand = (sample.in_flight + sample.queued).max(sample.now as f64) / per_instance;
    let target = f64::from(policy.target_percent.clamp(1, 100)) / 100.0;
    let utilization = (current > 0).then(|| demand / f64::from(current) * 100.0);
    // The epsilon keeps float noise (2.0000001 instances) from adding an instance.
    let raw = (demand / target - 1e-9)
        .ceil()
        .max(0.0)
        .min(f64::from(i32::MAX)) as i32;
    let idle_for = now.saturating_duration_since(memory.last_active);
    let idle_long_enough = min == 0 && idle_for >= policy.scale_to_zero_after && demand == 0.0;
    let floor = if min > 0 {
        min
    } else if idle_long_enough || (current == 0 && demand == 0.0) {
        0
    } else {
        1
    };
    let recommended = raw.max(floor).min(max);
    // A partial view underestimates the demand: it may raise the window, never lower it, so a
    // scale-down always rests on a whole window of complete samples.
    let recorded = if sample.complete() {
        recommended
    } else {
        recommended.max(current)
    };
    memory.recommendations.push_back((now, recorded));
    let window = policy.down_window();
    while memory
        .recommendations
        .front()
        .is_some_and(|(at, _)| now.saturating_duration_since(*at) > window)
    {
        memory.recommendations.pop_front();
    }
    let figures = format!(
        "{:.2} in flight + {:.2} queued (now {}) over {current} instances × {} at {} router(s): utilisation {}, target {}%",
        sample.in_flight,
        sample.queued,
        sample.now,
        policy.per_instance,
        sample.routers - sample.unreadable.len(),
        utilization.map_or("n/a (no instance)".to_string(), |u| format!("{u:.0}%")),
        policy.target_percent
    );
    let decision = |desired: i32, reason: Reason, why: String| Decision {
        desired,
        reason,
        utilization_percent: utilization,
        message: format!("{why}: {figures}"),
    };

    if current > max {
        return decision(
            max,
            Reason::AboveMaximum,
            format!("{current} → {max} (maxInstances)"),
        );
    }
    if recommended > current {
        let reason = if current == 0 {
            Reason::ScaledFromZero
        } else if current < min {
            Reason::BelowMinimum
        } else {
            Reason::ScaledUp
        };
        return decision(recommended, reason, format!("{current} → {recommended}"));
    }
    if recommended == current {
        let reason = if current == 0 {
            Reason::Idle
        } else {
            Reason::Steady
        };
        return decision(current, reason, format!("{current} instances"));
    }
    // Lower load: down only on a complete sample.
    if !sample.complete() {
        let why = if sample.unreadable.is_empty() {
            "a router without an earlier reading (new, restarted, or this operator restarted)"
                .to_string()
        } else {
            format!("routers unreadable ({})", sample.unreadable.join("; "))
        };
        return decision(
            current,
            Reason::StabilizingDown,
            format!("{current} instances kept: not scaling down on a partial view: {why}"),
        );
    }
    if idle_long_enough {
        return decision(
            0,
            Reason::ScaledToZero,
            format!(
                "{current} → 0: no request for {}s (scaleToZeroAfterSeconds {})",
                idle_for.as_secs(),
                policy.scale_to_zero_after.as_secs()
            ),
        );
    }
    // The window must be covered by samples: a restarted operator (fresh memory), or one that
    // could not evaluate for a while, first watches a whole window itself.
    let covered = memory
        .recommendations
        .front()
        .is_some_and(|(at, _)| now.saturating_duration_since(*at) + policy.interval > window);
    let stable = memory
        .recommendations
        .iter()
        .map(|(_, r)| *r)
        .max()
        .unwrap_or(recommended);
    if !covered || stable >= current {
        return decision(
            current,
            Reason::StabilizingDown,
            format!(
                "{current} instances kept: {recommended} would do, scale-down waits for {}s of lower load (highest recommendation in the window: {stable})",
                window.as_secs()
            ),
        );
    }
    decision(stable, Reason::ScaledDown, format!("{current} → {stable}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn policy(min: i32, max: i32) -> Policy {
        Policy {
            min,
            max,
            target_percent: 70,
            per_instance: 1,
            interval: SECOND,
            scale_to_zero_after: Duration::from_secs(300),
        }
    }

    fn load(in_flight: f64, queued: f64) -> Sample {
        Sample {
            routers: 1,
            averaged: true,
            in_flight,
            queued,
            now: 0,
            active: in_flight + queued > 0.0,
            unreadable: vec![],
        }
    }

    /// Runs `decide` once a second for `seconds` with the same sample and current count,
    /// starting `memory` (or a fresh one) at `start`; returns the last decision.
    fn hold(
        p: &Policy,
        current: i32,
        s: &Sample,
        memory: &mut Memory,
        start: Instant,
        seconds: u64,
    ) -> Decision {
        let mut last = None;
        for t in 0..=seconds {
            last = Some(decide(p, current, s, memory, start + SECOND * t as u32));
        }
        last.unwrap()
    }

    #[test]
    fn the_formula_table() {
        // (min, max, target, per instance, current, in flight, queued) → (desired, reason)
        // (min, max, target %, per instance, current, in flight, queued)
        type Row = (i32, i32, i32, u32, i32, f64, f64);
        let rows: &[(Row, (i32, Reason))] = &[
            // Azure ML's example: 2 busy + 1 queued over 2 replicas = 150% > 70%: ceil(3/0.7) = 5.
            ((1, 10, 70, 1, 2, 2.0, 1.0), (5, Reason::ScaledUp)),
            // Exactly at target stays.
            ((1, 10, 70, 1, 10, 7.0, 0.0), (10, Reason::Steady)),
            // Bounded by max.
            ((1, 3, 70, 1, 1, 9.0, 4.0), (3, Reason::ScaledUp)),
            // Four requests per instance: 8 in flight is 2 instances' worth, ceil(2/0.5) = 4.
            ((1, 10, 50, 4, 2, 8.0, 0.0), (4, Reason::ScaledUp)),
            // Below the minimum (e.g. created at 1 with min 3): up at once.
            ((3, 5, 70, 1, 1, 0.0, 0.0), (3, Reason::BelowMinimum)),
            // Above the maximum (max lowered): down at once, no window.
            ((1, 2, 70, 1, 4, 4.0, 0.0), (2, Reason::AboveMaximum)),
            // From zero: one queued request.
            ((0, 5, 70, 1, 0, 0.0, 1.0), (2, Reason::ScaledFromZero)),
            ((0, 5, 100, 1, 0, 0.0, 1.0), (1, Reason::ScaledFromZero)),
            // At zero with nothing to do.
            ((0, 5, 70, 1, 0, 0.0, 0.0), (0, Reason::Idle)),
            // Lower load: held back by the window on a first evaluation.
            ((1, 10, 70, 1, 5, 0.0, 0.0), (5, Reason::StabilizingDown)),
        ];
        for &((min, max, target, per, current, busy, queued), (desired, reason)) in rows {
            let p = Policy {
                target_percent: target,
                per_instance: per,
                ..policy(min, max)
            };
            let now = Instant::now();
            let d = decide(&p, current, &load(busy, queued), &mut Memory::new(now), now);
            assert_eq!(
                (d.desired, d.reason),
                (desired, reason),
                "row {min}..{max} {target}% ×{per} at {current} with {busy}+{queued}: {}",
                d.message
            );
        }
    }

    #[test]
    fn the_count_right_now_counts_when_higher_than_the_average() {
        let now = Instant::now();
        let burst = Sample {
            now: 6,
            ..load(0.5, 0.0)
        };
        let d = decide(&policy(1, 10), 1, &burst, &mut Memory::new(now), now);
        assert_eq!(d.desired, 9);
    }

    #[test]
    fn down_waits_for_twenty_intervals_of_lower_load_then_takes_the_highest_of_them() {
        let p = policy(1, 10);
        let start = Instant::now();
        let mut memory = Memory::new(start);
        // 5 instances, busy enough for 5 (3.5 / 0.7), for a while.
        assert_eq!(
            hold(&p, 5, &load(3.5, 0.0), &mut memory, start, 30).reason,
            Reason::Steady
        );
        // Load drops to what 2 instances carry: held for the window…
        let quiet = start + SECOND * 31;
        let d = hold(&p, 5, &load(1.0, 0.0), &mut memory, quiet, 19);
        assert_eq!(
            (d.desired, d.reason),
            (5, Reason::StabilizingDown),
            "{}",
            d.message
        );
        // …then down to 2 once the window holds nothing higher.
        let d = decide(&p, 5, &load(1.0, 0.0), &mut memory, quiet + SECOND * 21);
        assert_eq!(
            (d.desired, d.reason),
            (2, Reason::ScaledDown),
            "{}",
            d.message
        );
    }

    #[test]
    fn a_spike_within_the_window_keeps_the_instances() {
        let p = policy(1, 10);
        let start = Instant::now();
        let mut memory = Memory::new(start);
        hold(&p, 4, &load(0.5, 0.0), &mut memory, start, 25);
        decide(&p, 4, &load(2.8, 0.0), &mut memory, start + SECOND * 26);
        let d = hold(&p, 4, &load(0.5, 0.0), &mut memory, start + SECOND * 27, 10);
        assert_eq!((d.desired, d.reason), (4, Reason::StabilizingDown));
    }

    #[test]
    fn a_restarted_operator_scales_nothing_down_for_a_window() {
        let p = policy(1, 10);
        let start = Instant::now();
        // A fresh memory (the process just started) at low load: no scale-down for 20 s.
        let mut memory = Memory::new(start);
        let d = hold(&p, 6, &load(0.0, 0.0), &mut memory, start, 19);
        assert_eq!((d.desired, d.reason), (6, Reason::StabilizingDown));
        let d = decide(&p, 6, &load(0.0, 0.0), &mut memory, start + SECOND * 21);
        assert_eq!((d.desired, d.reason), (1, Reason::ScaledDown));
    }

    #[test]
    fn an_unreadable_router_is_never_a_scale_down() {
        let p = policy(2, 10);
        let start = Instant::now();
        let mut memory = Memory::new(start);
        let down = Sample {
            routers: 2,
            unreadable: vec!["http://b: timed out".into()],
            ..load(0.0, 0.0)
        };
        let d = hold(&p, 6, &down, &mut memory, start, 60);
        assert_eq!((d.desired, d.reason), (6, Reason::StabilizingDown));
        assert!(d.message.contains("http://b: timed out"), "{}", d.message);
        // Readable again and idle: the partial view left no low recommendations behind, so the
        // scale-down still waits a whole window of complete samples.
        let idle = load(0.0, 0.0);
        let d = hold(&p, 6, &idle, &mut memory, start + SECOND * 70, 18);
        assert_eq!(
            (d.desired, d.reason),
            (6, Reason::StabilizingDown),
            "{}",
            d.message
        );
        assert_eq!(
            decide(&p, 6, &idle, &mut memory, start + SECOND * 91).desired,
            2
        );
        // What the readable router sees still scales up (a lower bound on the demand).
        let up = Sample {
            in_flight: 9.0,
            ..down
        };
        assert_eq!(
            decide(&p, 6, &up, &mut memory, start + SECOND * 61).desired,
            10
        );
        // None readable: the count stays, within the bounds.
        let blind = Sample {
            routers: 1,
            unreadable: vec!["http://a: refused".into()],
            ..Sample::default()
        };
        let d = decide(&p, 6, &blind, &mut memory, start + SECOND * 62);
        assert_eq!(
            (d.desired, d.reason, d.utilization_percent),
            (6, Reason::RoutersUnreadable, None)
        );
        assert_eq!(decide(&p, 1, &blind, &mut memory, start).desired, 2);
        let none = Sample::default();
        assert_eq!(
            decide(&p, 12, &none, &mut memory, start).reason,
            Reason::NoRouters
        );
        assert_eq!(decide(&p, 12, &none, &mut memory, start).desired, 10);
    }

    #[test]
    fn a_sample_without_history_scales_up_but_not_down() {
        let p = policy(1, 10);
        let start = Instant::now();
        let mut memory = Memory::new(start);
        hold(&p, 3, &load(0.0, 0.0), &mut memory, start, 40);
        let fresh = Sample {
            averaged: false,
            active: true,
            ..load(0.0, 0.0)
        };
        let d = decide(&p, 3, &fresh, &mut memory, start + SECOND * 41);
        assert_eq!((d.desired, d.reason), (3, Reason::StabilizingDown));
        let fresh_busy = Sample { now: 5, ..fresh };
        assert_eq!(
            decide(&p, 3, &fresh_busy, &mut memory, start + SECOND * 42).desired,
            8
        );
    }

    #[test]
    fn scale_to_zero_after_the_idle_window_and_back_at_the_first_request() {
        let p = Policy {
            scale_to_zero_after: Duration::from_secs(60),
            ..policy(0, 3)
        };
        let start = Instant::now();
        let mut memory = Memory::new(start);
        decide(&p, 1, &load(1.0, 0.0), &mut memory, start);
        // Idle: 1 instance kept (not 0) until 60 s without a request.
        let idle = load(0.0, 0.0);
        let d = hold(&p, 1, &idle, &mut memory, start + SECOND, 58);
        assert_eq!((d.desired, d.reason), (1, Reason::Steady), "{}", d.message);
        let d = decide(&p, 1, &idle, &mut memory, start + SECOND * 60);
        assert_eq!(
            (d.desired, d.reason),
            (0, Reason::ScaledToZero),
            "{}",
            d.message
        );
        // At zero, idle.
        assert_eq!(
            decide(&p, 0, &idle, &mut memory, start + SECOND * 61).reason,
            Reason::Idle
        );
        // A request held at the router: from zero at once.
        let held = Sample {
            now: 1,
            active: true,
            ..load(0.0, 0.4)
        };
        let d = decide(&p, 0, &held, &mut memory, start + SECOND * 62);
        assert_eq!((d.desired, d.reason), (2, Reason::ScaledFromZero));
        // A brief request (no integral, but it arrived) restarts the idle clock.
        let brief = Sample {
            active: true,
            ..load(0.0, 0.0)
        };
        decide(&p, 1, &brief, &mut memory, start + SECOND * 100);
        assert_eq!(
            decide(&p, 1, &idle, &mut memory, start + SECOND * 159).desired,
            1
        );
        assert_eq!(
            decide(&p, 1, &idle, &mut memory, start + SECOND * 160).desired,
            0
        );
    }

    #[test]
    fn scale_to_zero_needs_a_complete_sample() {
        let p = Policy {
            scale_to_zero_after: Duration::from_secs(10),
            ..policy(0, 3)
        };
        let start = Instant::now();
        let mut memory = Memory::new(start);
        let partial = Sample {
            routers: 2,
            unreadable: vec!["http://b: refused".into()],
            ..load(0.0, 0.0)
        };
        let d = hold(&p, 1, &partial, &mut memory, start, 30);
        assert_eq!((d.desired, d.reason), (1, Reason::Steady));
    }
}
