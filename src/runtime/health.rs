//! What `/healthz` and `/readyz` answer.
//!
//! Live: every controller task is still running. A controller whose task ended (a panic outside a
//! reconcile, a watch stream that gave up) reconciles nothing for the objects of its kind, while
//! the process and the other controllers look fine; so the end of any task fails `/healthz` (and
//! the process exits non-zero, so that Kubernetes restarts it).
//!
//! Ready: serving its role (a standby waiting for the Lease is ready), and, once controllers are
//! started, every one of them alive with its caches synced.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

#[derive(Debug, Default)]
struct Controller {
    name: String,
    synced: AtomicBool,
    ended: AtomicBool,
}

#[derive(Debug, Default)]
struct Inner {
    serving: AtomicBool,
    controllers: Mutex<Vec<Arc<Controller>>>,
}

/// The operator's health (cheap to clone).
#[derive(Clone, Debug, Default)]
pub struct Health(Arc<Inner>);

/// One controller's handle on [`Health`].
#[derive(Clone, Debug)]
pub struct ControllerHealth(Arc<Controller>);

impl ControllerHealth {
    /// The controller's caches hold their first full list.
    pub fn set_synced(&self) {
        self.0.synced.store(true, Ordering::Relaxed);
    }

    /// The controller's task has ended.
    pub fn set_ended(&self) {
        self.0.ended.store(true, Ordering::Relaxed);
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }
}

impl Health {
    /// Whether the process serves its role (false while starting and after losing the Lease).
    pub fn set_serving(&self, serving: bool) {
        self.0.serving.store(serving, Ordering::Relaxed);
    }

    /// Registers a controller (`trainingjob`, or `trainingjob/<namespace>`).
    pub fn register(&self, name: impl Into<String>) -> ControllerHealth {
        let c = Arc::new(Controller {
            name: name.into(),
            ..Controller::default()
        });
        if let Ok(mut all) = self.0.controllers.lock() {
            all.push(c.clone());
        }
        ControllerHealth(c)
    }

    fn names(&self, pick: impl Fn(&Controller) -> bool) -> Vec<String> {
        self.0
            .controllers
            .lock()
            .map(|all| {
                all.iter()
                    .filter(|c| pick(c))
                    .map(|c| c.name.clone())
                    .collect()
            })
            .unwrap_or_else(|_| vec!["(health registry poisoned)".into()])
    }

    /// `Ok` when no controller task has ended; else the names of those that did.
    pub fn live(&self) -> Result<(), String> {
        let ended = self.names(|c| c.ended.load(Ordering::Relaxed));
        if ended.is_empty() {
            Ok(())
        } else {
            Err(format!("controller ended: {}", ended.join(", ")))
        }
    }

    /// `Ok` when serving, live, and every controller's caches are synced; else why not.
    pub fn ready(&self) -> Result<(), String> {
        self.live()?;
        if !self.0.serving.load(Ordering::Relaxed) {
            return Err("not serving".into());
        }
        let waiting = self.names(|c| !c.synced.load(Ordering::Relaxed));
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(format!("caches not synced: {}", waiting.join(", ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_serving_and_every_cache_synced_and_no_ended_task() {
        let h = Health::default();
        assert!(h.ready().is_err());
        h.set_serving(true);
        assert!(h.ready().is_ok(), "a standby with no controllers is ready");
        let a = h.register("trainingjob");
        let b = h.register("batchjob");
        assert_eq!(
            h.ready().unwrap_err(),
            "caches not synced: trainingjob, batchjob"
        );
        a.set_synced();
        b.set_synced();
        assert!(h.ready().is_ok() && h.live().is_ok());
        b.set_ended();
        assert_eq!(h.live().unwrap_err(), "controller ended: batchjob");
        assert!(h.ready().is_err());
    }
}
