//! The autoscaler: Azure ML's `target_utilization` scaling for OnlineDeployments, driven by the
//! routers' own measure of demand instead of a HorizontalPodAutoscaler (Azure ML says never to put
//! one on these deployments).
//!
//! One loop for every watched namespace (the routers are shared): every second it finds the
//! `target_utilization` deployments whose `pollingInterval` has come round, reads every router
//! replica's load report once ([`routers`]), sums it per deployment ([`sample`]), decides
//! ([`decide`], pure) and, when the count changes, writes it through the scale subresource of the
//! deployment's `apps/v1` Deployment (field manager `mlcompute-autoscaler`; the OnlineDeployment
//! controller leaves `replicas` out of what it applies for these deployments). `status.scale`
//! says what it decided and why (written on changes only, under its own field manager, so the
//! OnlineDeployment controller's status writes never touch it), with an Event per scaling and a
//! Warning when the load cannot be read.
//!
//! Files: `routers` (where the routers are, reading them), `sample` (reports → demand), `decide`
//! (demand → instance count), `metrics`.

pub mod decide;
pub mod metrics;
pub mod routers;
pub mod sample;

use std::{collections::HashMap, sync::Arc, time::Duration};

use k8s_openapi::{
    api::{apps::v1::Deployment, discovery::v1::EndpointSlice},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::reflector::Store,
};
use serde_json::json;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{info, warn};

use self::{
    decide::{Decision, Memory, Policy, decide},
    metrics::ScaleMetrics,
    routers::{AutoscalerSettings, Routers},
    sample::{Previous, RouterRead, sample},
};
use crate::{
    api::online_deployment::{OnlineDeployment, ScaleStatus, ScaleType},
    runtime::{caches::MANAGED_SELECTOR, events::Events, handles::Runtime, synced::Synced},
};

/// The field manager of the autoscaler's writes (replicas, `status.scale`).
pub const MANAGER: &str = "mlcompute-autoscaler";

/// How often the loop looks for deployments due an evaluation.
const TICK: Duration = Duration::from_secs(1);

/// What goes wrong writing a decision.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("scaling Deployment {namespace}/{name} to {replicas}: {source}")]
    Scale {
        namespace: String,
        name: String,
        replicas: i32,
        #[source]
        source: kube::Error,
    },
    #[error("writing status.scale of {namespace}/{name}: {source}")]
    Status {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    fn category(&self) -> &'static str {
        match self {
            Self::Scale { .. } => "scale",
            Self::Status { .. } => "status",
        }
    }
}

/// One deployment's state between evaluations.
struct Tracked {
    memory: Memory,
    previous: Previous,
    next_due: Instant,
}

struct Autoscaler {
    client: Client,
    events: Events,
    metrics: ScaleMetrics,
    synced: Synced,
    routers: Routers,
    read_timeout: Duration,
    ods: Vec<Store<OnlineDeployment>>,
    deployments: Vec<Store<Deployment>>,
    tracked: HashMap<(String, String), Tracked>,
}

/// Asks for the autoscaler's caches now (the OnlineDeployments and Deployments of `namespaces`,
/// the router Service's EndpointSlices) and returns its loop, which runs until `shutdown`.
pub fn controller(
    rt: Runtime,
    namespaces: &[Option<String>],
    settings: &AutoscalerSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    let ods = namespaces
        .iter()
        .map(|ns| {
            rt.caches
                .namespaced::<OnlineDeployment>(ns.as_deref(), None)
                .store()
        })
        .collect();
    let deployments = namespaces
        .iter()
        .map(|ns| {
            rt.caches
                .namespaced::<Deployment>(ns.as_deref(), Some(MANAGED_SELECTOR))
                .store()
        })
        .collect();
    let routers = match settings.service() {
        Some((namespace, service)) if settings.urls().is_empty() => {
            let selector = format!("kubernetes.io/service-name={service}");
            Routers::Slices(
                rt.caches
                    .namespaced::<EndpointSlice>(Some(&namespace), Some(&selector))
                    .store(),
            )
        }
        _ => Routers::Urls(settings.urls()),
    };
    let metrics = ScaleMetrics::register(&rt.metrics.registry);
    let mut scaler = Autoscaler {
        client: rt.client.clone(),
        events: rt.events.clone(),
        metrics,
        synced: rt.synced.clone(),
        routers,
        read_timeout: Duration::from_millis(settings.autoscaler_read_timeout_ms.max(1)),
        ods,
        deployments,
        tracked: HashMap::new(),
    };
    async move {
        info!("starting the autoscaler (target_utilization deployments)");
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = &mut shutdown => break,
            }
            if !scaler.synced.wait().await {
                continue;
            }
            scaler.round(Instant::now()).await;
        }
    }
}

impl Autoscaler {
    /// One pass: evaluate every deployment that is due.
    #[tracing::instrument(name = "autoscaler", skip_all)]
    async fn round(&mut self, now: Instant) {
        let all: Vec<Arc<OnlineDeployment>> = self.ods.iter().flat_map(Store::state).collect();
        let mut due = Vec::new();
        let mut seen = Vec::new();
        for od in all {
            let (Some(ns), name) = (od.namespace(), od.name_any()) else {
                continue;
            };
            if od.spec.scale_settings.type_ != ScaleType::TargetUtilization
                || od.meta().deletion_timestamp.is_some()
            {
                if od.status.as_ref().is_some_and(|s| s.scale.is_some()) {
                    // Manual scaling now: take back what this autoscaler said.
                    if let Err(error) = self.clear_status(&od, &ns).await {
                        self.failed(&error);
                    }
                }
                continue;
            }
            let key = (ns, name);
            let interval =
                Duration::from_secs(od.spec.scale_settings.polling_interval.max(1) as u64);
            let tracked = self.tracked.entry(key.clone()).or_insert_with(|| Tracked {
                memory: Memory::new(now),
                previous: Previous::new(),
                next_due: now,
            });
            seen.push(key);
            // A tick a little early still counts: the interval is whole seconds.
            if tracked.next_due <= now + TICK / 4 {
                tracked.next_due = now + interval;
                due.push(od);
            }
        }
        self.tracked.retain(|key, _| seen.contains(key));
        if due.is_empty() {
            return;
        }
        let urls = self.routers.urls();
        let reads = routers::read_all(&urls, self.read_timeout).await;
        for read in &reads {
            self.metrics.read(read.report.is_ok());
        }
        for od in due {
            if let Err(error) = self.evaluate(&od, &reads, now).await {
                self.failed(&error);
            }
        }
    }

    fn failed(&self, error: &Error) {
        self.metrics.error(error.category());
        warn!(%error, "autoscaler write failed; retried next interval");
    }

    async fn evaluate(
        &mut self,
        od: &OnlineDeployment,
        reads: &[RouterRead],
        now: Instant,
    ) -> Result<(), Error> {
        let (ns, name) = (od.namespace().unwrap_or_default(), od.name_any());
        // The instances' Deployment carries the OnlineDeployment's name.
        let Some(deployment) = self
            .deployments
            .iter()
            .find_map(|s| s.get(&kube::runtime::reflector::ObjectRef::new(&name).within(&ns)))
        else {
            return Ok(()); // not created yet: the OnlineDeployment controller is on it
        };
        let current = deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1);
        let Some(tracked) = self.tracked.get_mut(&(ns.clone(), name.clone())) else {
            return Ok(());
        };
        let s = &od.spec.scale_settings;
        let policy = Policy {
            min: s.min_instances,
            max: s.max_instances,
            target_percent: s.target_utilization_percentage,
            per_instance: od
                .spec
                .request_settings
                .max_concurrent_requests_per_instance
                .max(1) as u32,
            interval: Duration::from_secs(s.polling_interval.max(1) as u64),
            scale_to_zero_after: Duration::from_secs(s.scale_to_zero_after_seconds.max(1) as u64),
        };
        let load = sample(reads, &od.spec.endpoint_name, &name, &mut tracked.previous);
        let decision = decide(&policy, current, &load, &mut tracked.memory, now);
        self.metrics.evaluated(decision.reason);
        let scaled = decision.desired != current;
        if scaled {
            self.scale(&ns, &name, decision.desired).await?;
            self.metrics.scaled(decision.reason);
            info!(namespace = %ns, name = %name, from = current, to = decision.desired, reason = %decision.reason, "{}", decision.message);
            self.events
                .publish(od, false, decision.reason.as_str(), &decision.message);
        }
        let old = od.status.as_ref().and_then(|s| s.scale.as_ref());
        if decision.reason.is_warning() && old.is_none_or(|o| o.reason != decision.reason.as_str())
        {
            self.events
                .publish(od, true, decision.reason.as_str(), &decision.message);
        }
        let new = scale_status(&decision, current, scaled, old);
        if old.is_none_or(|o| !same_decision(o, &new)) {
            self.write_status(od, &ns, &new).await?;
        }
        Ok(())
    }

    async fn scale(&self, ns: &str, name: &str, replicas: i32) -> Result<(), Error> {
        Api::<Deployment>::namespaced(self.client.clone(), ns)
            .patch_scale(
                name,
                &PatchParams {
                    field_manager: Some(MANAGER.into()),
                    ..PatchParams::default()
                },
                &Patch::Merge(json!({ "spec": { "replicas": replicas } })),
            )
            .await
            .map(|_| ())
            .map_err(|source| Error::Scale {
                namespace: ns.into(),
                name: name.into(),
                replicas,
                source,
            })
    }

    async fn write_status(
        &self,
        od: &OnlineDeployment,
        ns: &str,
        scale: &ScaleStatus,
    ) -> Result<(), Error> {
        self.apply_status(od, ns, json!({ "scale": scale })).await
    }

    async fn clear_status(&self, od: &OnlineDeployment, ns: &str) -> Result<(), Error> {
        // Applying nothing under this manager removes the fields only it owned.
        self.apply_status(od, ns, json!({})).await
    }

    async fn apply_status(
        &self,
        od: &OnlineDeployment,
        ns: &str,
        status: serde_json::Value,
    ) -> Result<(), Error> {
        let patch = json!({
            "apiVersion": OnlineDeployment::api_version(&()),
            "kind": OnlineDeployment::kind(&()),
            "status": status,
        });
        Api::<OnlineDeployment>::namespaced(self.client.clone(), ns)
            .patch_status(
                &od.name_any(),
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map(|_| ())
            .map_err(|source| Error::Status {
                namespace: ns.into(),
                name: od.name_any(),
                source,
            })
    }
}

/// `status.scale` for a decision (pure). `lastScaleTime` moves only when the count changed.
fn scale_status(
    decision: &Decision,
    current: i32,
    scaled: bool,
    old: Option<&ScaleStatus>,
) -> ScaleStatus {
    ScaleStatus {
        desired_instances: decision.desired,
        current_instances: current,
        utilization_percentage: decision
            .utilization_percent
            .map(|u| u.round().min(f64::from(i32::MAX)) as i32),
        reason: decision.reason.as_str().into(),
        message: decision.message.clone(),
        last_scale_time: if scaled {
            Some(Time(Timestamp::now()))
        } else {
            old.and_then(|o| o.last_scale_time.clone())
        },
    }
}

/// Whether two statuses say the same thing (the figures in the message move every interval;
/// writing them each time would be one API write per deployment per second).
fn same_decision(a: &ScaleStatus, b: &ScaleStatus) -> bool {
    (a.desired_instances, a.current_instances, &a.reason)
        == (b.desired_instances, b.current_instances, &b.reason)
}

#[cfg(test)]
mod tests {
    use super::{decide::Reason, *};

    fn decision(desired: i32, reason: Reason) -> Decision {
        Decision {
            desired,
            reason,
            utilization_percent: Some(142.86),
            message: "2 → 5: figures".into(),
        }
    }

    #[test]
    fn status_says_the_decision_and_keeps_the_last_scale_time_until_the_next_scaling() {
        let up = scale_status(&decision(5, Reason::ScaledUp), 2, true, None);
        assert_eq!(
            (
                up.desired_instances,
                up.current_instances,
                up.utilization_percentage,
                up.reason.as_str()
            ),
            (5, 2, Some(143), "ScaledUp")
        );
        assert!(up.last_scale_time.is_some());
        let steady = scale_status(&decision(5, Reason::Steady), 5, false, Some(&up));
        assert_eq!(steady.last_scale_time, up.last_scale_time);
        assert!(!same_decision(&up, &steady));
        let mut later = steady.clone();
        later.message = "other figures".into();
        later.utilization_percentage = Some(60);
        assert!(
            same_decision(&steady, &later),
            "figures alone are not worth a write"
        );
    }
}
