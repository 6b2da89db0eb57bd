//! From the routers' load reports to one deployment's demand over the polling interval (pure).
//!
//! Each router reports monotonic integrals ([`crate::contract::load`]); the demand between two
//! evaluations is their difference over the time between the reports. A router seen for the
//! first time (a new replica, a restarted router, a restarted operator) has no earlier reading:
//! its gauges stand in for the average and the sample is marked not averaged, so it can make the
//! deployment scale up but never down.

use std::collections::HashMap;

use crate::contract::load::{DeploymentLoad, LoadReport};

/// One router's answer to `GET /load`.
#[derive(Clone, Debug)]
pub struct RouterRead {
    /// Where it was read (for messages).
    pub url: String,
    /// The report, or why it could not be read.
    pub report: Result<LoadReport, String>,
}

/// One router's counters for one deployment at one reading.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counters {
    uptime_seconds: f64,
    busy_seconds: f64,
    queued_seconds: f64,
    requests: u64,
}

/// What a deployment remembers of its last evaluation: each router's counters, by router id.
pub type Previous = HashMap<String, Counters>;

/// The demand on one deployment, summed over the routers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// Routers configured or discovered.
    pub routers: usize,
    /// Those that could not be read, with why (`url: error`).
    pub unreadable: Vec<String>,
    /// Every readable router had an earlier reading: the figures below are averages.
    pub averaged: bool,
    /// Requests in flight, on average over the interval (summed over routers).
    pub in_flight: f64,
    /// Requests queued, on average over the interval (summed over routers).
    pub queued: f64,
    /// Requests in flight plus queued right now (summed over routers).
    pub now: u64,
    /// Any request arrived, was served or waited during the interval (or a router's history is
    /// unknown, which counts as activity: idleness must be seen, not assumed).
    pub active: bool,
}

impl Sample {
    /// Every router was read, and every one with an earlier reading: safe to scale down on.
    pub fn complete(&self) -> bool {
        self.routers > 0 && self.unreadable.is_empty() && self.averaged
    }

    /// No router could be read (or none exists): nothing is known about the load.
    pub fn blind(&self) -> bool {
        self.unreadable.len() >= self.routers
    }
}

/// Sums `reads` for `deployment` of `endpoint`, against (and then replacing) `previous`.
pub fn sample(
    reads: &[RouterRead],
    endpoint: &str,
    deployment: &str,
    previous: &mut Previous,
) -> Sample {
    let mut out = Sample {
        routers: reads.len(),
        averaged: true,
        ..Sample::default()
    };
    let mut next = Previous::new();
    for read in reads {
        let report = match &read.report {
            Ok(report) => report,
            Err(why) => {
                out.unreadable.push(format!("{}: {why}", read.url));
                continue;
            }
        };
        let zero = DeploymentLoad::default();
        let load = report.deployment(endpoint, deployment).unwrap_or(&zero);
        let now = Counters {
            uptime_seconds: report.uptime_seconds,
            busy_seconds: load.busy_seconds,
            queued_seconds: load.queued_seconds,
            requests: load.requests,
        };
        out.now += load.in_flight + load.queued;
        match previous.get(&report.router_id) {
            Some(before) if now.uptime_seconds > before.uptime_seconds => {
                let seconds = now.uptime_seconds - before.uptime_seconds;
                let busy = (now.busy_seconds - before.busy_seconds).max(0.0);
                let queued = (now.queued_seconds - before.queued_seconds).max(0.0);
                out.in_flight += busy / seconds;
                out.queued += queued / seconds;
                out.active |= busy > 0.0
                    || queued > 0.0
                    || now.requests > before.requests
                    || load.in_flight + load.queued > 0;
            }
            _ => {
                out.averaged = false;
                out.active = true;
                out.in_flight += load.in_flight as f64;
                out.queued += load.queued as f64;
            }
        }
        next.insert(report.router_id.clone(), now);
    }
    *previous = next;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str, uptime: f64, load: DeploymentLoad) -> RouterRead {
        RouterRead {
            url: format!("http://{id}"),
            report: Ok(LoadReport {
                router_id: id.into(),
                uptime_seconds: uptime,
                deployments: vec![DeploymentLoad {
                    endpoint: "e".into(),
                    deployment: "d".into(),
                    ..load
                }],
            }),
        }
    }

    fn load(
        in_flight: u64,
        queued: u64,
        busy: f64,
        queued_s: f64,
        requests: u64,
    ) -> DeploymentLoad {
        DeploymentLoad {
            in_flight,
            queued,
            busy_seconds: busy,
            queued_seconds: queued_s,
            requests,
            ..DeploymentLoad::default()
        }
    }

    #[test]
    fn two_routers_are_averaged_over_the_interval_and_summed() {
        let mut previous = Previous::new();
        let first = [
            report("a", 10.0, load(0, 0, 5.0, 0.0, 10)),
            report("b", 100.0, load(1, 0, 50.0, 1.0, 99)),
        ];
        let s = sample(&first, "e", "d", &mut previous);
        // No earlier reading: gauges stand in, not averaged, counted as active.
        assert_eq!(
            (s.averaged, s.in_flight, s.now, s.active),
            (false, 1.0, 1, true)
        );
        assert!(!s.complete());
        // 2 s later: a was busy 3 request-seconds (1.5 on average), b 1 and queued 2 (0.5, 1).
        let second = [
            report("a", 12.0, load(2, 0, 8.0, 0.0, 14)),
            report("b", 102.0, load(0, 1, 51.0, 3.0, 101)),
        ];
        let s = sample(&second, "e", "d", &mut previous);
        assert!(s.complete() && s.active);
        assert_eq!((s.in_flight, s.queued, s.now), (2.0, 1.0, 3));
    }

    #[test]
    fn a_restarted_router_is_a_fresh_start_not_negative_load() {
        let mut previous = Previous::new();
        sample(
            &[report("a", 100.0, load(0, 0, 50.0, 0.0, 9))],
            "e",
            "d",
            &mut previous,
        );
        let s = sample(
            &[report("a2", 1.0, load(0, 0, 0.5, 0.0, 1))],
            "e",
            "d",
            &mut previous,
        );
        assert!(!s.averaged);
        assert_eq!((s.in_flight, s.queued), (0.0, 0.0));
        // The same id going backwards (clock or counters) is not averaged either.
        let s = sample(
            &[report("a2", 0.5, load(0, 0, 0.1, 0.0, 1))],
            "e",
            "d",
            &mut previous,
        );
        assert!(!s.averaged);
    }

    #[test]
    fn idle_means_nothing_arrived_nothing_served_nothing_waited() {
        let mut previous = Previous::new();
        sample(
            &[report("a", 1.0, load(0, 0, 2.0, 0.0, 3))],
            "e",
            "d",
            &mut previous,
        );
        let idle = sample(
            &[report("a", 2.0, load(0, 0, 2.0, 0.0, 3))],
            "e",
            "d",
            &mut previous,
        );
        assert!(idle.complete() && !idle.active);
        // One request of a few microseconds: no integral to speak of, but it arrived.
        let brief = sample(
            &[report("a", 3.0, load(0, 0, 2.0, 0.0, 4))],
            "e",
            "d",
            &mut previous,
        );
        assert!(brief.active);
    }

    #[test]
    fn a_router_that_does_not_know_the_deployment_reports_zero() {
        let mut previous = Previous::new();
        let other = RouterRead {
            url: "http://a".into(),
            report: Ok(LoadReport {
                router_id: "a".into(),
                uptime_seconds: 1.0,
                deployments: vec![],
            }),
        };
        sample(std::slice::from_ref(&other), "e", "d", &mut previous);
        let mut later = other.clone();
        if let Ok(r) = &mut later.report {
            r.uptime_seconds = 2.0;
        }
        let s = sample(&[later], "e", "d", &mut previous);
        assert!(s.complete() && !s.active);
    }

    #[test]
    fn an_unreadable_router_makes_the_sample_incomplete_but_not_blind() {
        let mut previous = Previous::new();
        let reads = [
            report("a", 1.0, load(3, 0, 0.0, 0.0, 3)),
            RouterRead {
                url: "http://b".into(),
                report: Err("connection refused".into()),
            },
        ];
        let s = sample(&reads, "e", "d", &mut previous);
        assert!(!s.complete() && !s.blind());
        assert_eq!(
            s.unreadable,
            vec!["http://b: connection refused".to_string()]
        );
        let none = sample(&[], "e", "d", &mut previous);
        assert!(none.blind() && !none.complete());
    }
}
