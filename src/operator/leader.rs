//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several operator replicas
//! exactly one runs the controllers.
//!
//! Acquiring and renewing is [`kube_lease_manager`]'s (server-side apply, conflict detection,
//! take-over of an expired lease, release on drop of the channel). Its watch loop logs a failed
//! renewal and retries, but does not report the lease as lost; so this module adds a fence: while
//! leading, it reads the Lease every retry period and steps down once the last renewal it can see
//! is older than `lease duration - retry period`, before any other replica may take the lease
//! over. Stepping down means the caller exits: a restarted process starts again as a candidate,
//! with nothing left over from its time as leader.
//!
//! Timings follow client-go: lease duration 15 s, renew deadline 10 s, retry period 2 s.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::{sync::watch, task::JoinHandle};
use tracing::{info, warn};

/// Leader-election settings (part of `mlcompute operator`'s flags).
#[derive(Clone, Debug, clap::Args)]
pub struct LeaderSettings {
    /// Run the controllers only while holding the Lease; for more than one replica.
    #[arg(
        long,
        env = "MLCOMPUTE_LEADER_ELECT",
        default_value_t = false,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub leader_elect: bool,
    /// Name of the Lease.
    #[arg(
        long,
        env = "MLCOMPUTE_LEASE_NAME",
        default_value = "mlcompute-operator"
    )]
    pub lease_name: String,
    /// Namespace of the Lease (in a cluster: the operator's own, from POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Seconds a Lease stays valid after its last renewal; a standby replica takes over after it.
    #[arg(long, env = "MLCOMPUTE_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Seconds after a renewal at which the leader renews again.
    #[arg(
        long,
        env = "MLCOMPUTE_LEASE_RENEW_DEADLINE_SECONDS",
        default_value_t = 10
    )]
    pub lease_renew_deadline_seconds: u64,
    /// Seconds between the leader's checks that it still holds the Lease; also its safety margin.
    #[arg(
        long,
        env = "MLCOMPUTE_LEASE_RETRY_PERIOD_SECONDS",
        default_value_t = 2
    )]
    pub lease_retry_period_seconds: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error(
        "leader election needs a namespace for its Lease: set --lease-namespace or POD_NAMESPACE"
    )]
    NoNamespace,
    #[error(
        "lease timings must satisfy 0 < retry period ({retry}s) < renew deadline ({renew}s) < duration ({duration}s)"
    )]
    Timings {
        duration: u64,
        renew: u64,
        retry: u64,
    },
    #[error("setting up the Lease {namespace}/{name}: {source}")]
    Setup {
        namespace: String,
        name: String,
        source: LeaseManagerError,
    },
    #[error("the lease manager stopped before this replica became leader")]
    Stopped,
}

/// Why the leader stepped down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lost {
    /// The lease manager saw another holder.
    Replaced,
    /// No renewal was visible in time (API server unreachable, or renewals failing).
    NotRenewed,
    /// The Lease names another holder.
    HeldBy(String),
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Replaced => f.write_str("the lease manager reported the lease lost"),
            Self::NotRenewed => f.write_str("the lease was not renewed in time"),
            Self::HeldBy(h) => write!(f, "the lease is held by {h}"),
        }
    }
}

/// Checked timings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    pub duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaderSettings {
    /// The timings, if they are consistent.
    pub fn timings(&self) -> Result<Timings, LeaderError> {
        let (duration, renew, retry) = (
            self.lease_duration_seconds,
            self.lease_renew_deadline_seconds,
            self.lease_retry_period_seconds,
        );
        if retry == 0 || retry >= renew || renew >= duration {
            return Err(LeaderError::Timings {
                duration,
                renew,
                retry,
            });
        }
        Ok(Timings {
            duration: Duration::from_secs(duration),
            renew_deadline: Duration::from_secs(renew),
            retry_period: Duration::from_secs(retry),
        })
    }
}

/// What the fence concludes from one reading of the Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Ours, renewed recently enough: keep leading until this instant at the latest.
    Valid(SystemTime),
    /// Someone else holds it.
    HeldBy(String),
    /// Ours on record, but not renewed in time.
    Expired,
}

/// Judges a Lease read from the API server. The renew time was written by this process (from
/// its own clock), so comparing it with `now` involves no clock skew; the margin of one retry
/// period makes the leader stop before a standby (which waits the full duration) can start.
pub fn judge(lease: &Lease, identity: &str, now: SystemTime, timings: &Timings) -> Verdict {
    let spec = lease.spec.clone().unwrap_or_default();
    match spec.holder_identity.as_deref() {
        Some(h) if h == identity => {}
        Some(h) => return Verdict::HeldBy(h.to_string()),
        None => return Verdict::HeldBy(String::new()),
    }
    let Some(renewed) = spec.renew_time.map(|t| SystemTime::from(t.0)) else {
        return Verdict::Expired;
    };
    let until = renewed + timings.duration.saturating_sub(timings.retry_period);
    if now < until {
        Verdict::Valid(until)
    } else {
        Verdict::Expired
    }
}

/// A unique identity for this process: the Pod name (or host name) and a random suffix.
pub fn identity() -> String {
    use rand_core::RngCore;
    let base = std::env::var("POD_NAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "mlcompute".into());
    format!("{base}_{:08x}", rand_core::OsRng.next_u32())
}

/// This replica as leader. Dropping it releases the Lease in the background; [`Leadership::release`]
/// waits for that.
pub struct Leadership {
    identity: String,
    leading: watch::Receiver<bool>,
    manager: JoinHandle<Result<LeaseManager, LeaseManagerError>>,
    api: Api<Lease>,
    name: String,
    timings: Timings,
    /// 1 while leading; registered in the operator's metrics.
    gauge: prometheus::IntGauge,
}

/// Campaigns for the Lease and returns once this replica leads. `client` should not share the
/// controllers' rate limit, so that a burst of reconciles never delays a renewal.
pub async fn campaign(
    client: Client,
    settings: &LeaderSettings,
    registry: &prometheus::Registry,
) -> Result<Leadership, LeaderError> {
    let timings = settings.timings()?;
    let namespace = settings
        .lease_namespace
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or(LeaderError::NoNamespace)?;
    let identity = identity();
    let setup_err = |source| LeaderError::Setup {
        namespace: namespace.clone(),
        name: settings.lease_name.clone(),
        source,
    };
    let manager = LeaseManagerBuilder::new(client.clone(), &settings.lease_name)
        .with_namespace(&namespace)
        .with_identity(&identity)
        .with_duration(timings.duration.as_secs())
        .with_grace((timings.duration - timings.renew_deadline).as_secs())
        .build()
        .await
        .map_err(setup_err)?;
    let gauge = prometheus::IntGauge::new("leader", "1 while this replica holds the leader Lease")
        .map_err(|e| setup_err(LeaseManagerError::InconsistentState(e.to_string())))?;
    // A second registration (tests running campaign twice on one registry) keeps the first.
    let _ = registry.register(Box::new(gauge.clone()));
    info!(%identity, lease = %settings.lease_name, %namespace, "waiting to become leader");
    let (mut leading, task) = manager.watch().await;
    if leading.wait_for(|l| *l).await.is_err() {
        return Err(LeaderError::Stopped);
    }
    gauge.set(1);
    info!(%identity, "became leader");
    Ok(Leadership {
        identity,
        leading,
        manager: task,
        api: Api::namespaced(client, &namespace),
        name: settings.lease_name.clone(),
        timings,
        gauge,
    })
}

impl Leadership {
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Resolves when this replica must stop acting as leader.
    pub async fn lost(&mut self) -> Lost {
        let mut valid_until = SystemTime::now() + self.timings.renew_deadline;
        let mut tick = tokio::time::interval(self.timings.retry_period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let lost = loop {
            tokio::select! {
                changed = self.leading.changed() => {
                    if changed.is_err() || !*self.leading.borrow() {
                        break Lost::Replaced;
                    }
                }
                _ = tick.tick() => {
                    match self.api.get_opt(&self.name).await {
                        Ok(Some(lease)) => {
                            match judge(&lease, &self.identity, SystemTime::now(), &self.timings) {
                                Verdict::Valid(until) => valid_until = until,
                                Verdict::HeldBy(h) => break Lost::HeldBy(h),
                                Verdict::Expired => break Lost::NotRenewed,
                            }
                        }
                        Ok(None) => break Lost::HeldBy(String::new()),
                        Err(err) => warn!(%err, "reading the leader Lease failed"),
                    }
                    if SystemTime::now() >= valid_until {
                        break Lost::NotRenewed;
                    }
                }
            }
        };
        self.gauge.set(0);
        lost
    }

    /// Gives the Lease up (on shutdown), so a standby takes over at once rather than after the
    /// lease duration. Waits at most one retry period.
    pub async fn release(self) {
        let Self {
            leading,
            manager,
            gauge,
            timings,
            ..
        } = self;
        gauge.set(0);
        drop(leading);
        match tokio::time::timeout(timings.retry_period, manager).await {
            Ok(Ok(Ok(_))) => info!("released the leader Lease"),
            Ok(Ok(Err(err))) => warn!(%err, "releasing the leader Lease failed"),
            Ok(Err(err)) => warn!(%err, "the lease manager task failed"),
            Err(_) => warn!("releasing the leader Lease timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::{
        api::coordination::v1::LeaseSpec, apimachinery::pkg::apis::meta::v1::MicroTime,
        jiff::Timestamp,
    };

    fn timings() -> Timings {
        Timings {
            duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    fn lease(holder: Option<&str>, renewed: Option<SystemTime>) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(String::from),
                renew_time: renewed.map(|t| MicroTime(Timestamp::try_from(t).unwrap())),
                lease_duration_seconds: Some(15),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    #[test]
    fn own_fresh_lease_is_valid_until_duration_less_one_retry_period() {
        let now = SystemTime::now();
        let renewed = now - Duration::from_secs(3);
        let v = judge(&lease(Some("me"), Some(renewed)), "me", now, &timings());
        assert_eq!(v, Verdict::Valid(renewed + Duration::from_secs(13)));
    }

    #[test]
    fn own_lease_not_renewed_for_duration_less_margin_is_expired() {
        let now = SystemTime::now();
        let l = lease(Some("me"), Some(now - Duration::from_secs(13)));
        assert_eq!(judge(&l, "me", now, &timings()), Verdict::Expired);
        let l = lease(Some("me"), None);
        assert_eq!(judge(&l, "me", now, &timings()), Verdict::Expired);
    }

    #[test]
    fn lease_of_another_or_of_nobody_is_not_ours() {
        let now = SystemTime::now();
        let l = lease(Some("other"), Some(now));
        assert_eq!(
            judge(&l, "me", now, &timings()),
            Verdict::HeldBy("other".into())
        );
        let l = lease(None, None);
        assert_eq!(judge(&l, "me", now, &timings()), Verdict::HeldBy("".into()));
    }

    fn settings(duration: u64, renew: u64, retry: u64) -> LeaderSettings {
        LeaderSettings {
            leader_elect: true,
            lease_name: "l".into(),
            lease_namespace: Some("ns".into()),
            lease_duration_seconds: duration,
            lease_renew_deadline_seconds: renew,
            lease_retry_period_seconds: retry,
        }
    }

    #[test]
    fn timings_must_be_ordered() {
        assert!(settings(15, 10, 2).timings().is_ok());
        assert!(settings(15, 15, 2).timings().is_err());
        assert!(settings(15, 10, 10).timings().is_err());
        assert!(settings(15, 10, 0).timings().is_err());
        assert!(settings(10, 15, 2).timings().is_err());
    }

    #[test]
    fn identities_are_unique_per_process_start() {
        assert_ne!(identity(), identity());
    }
}
