//! Whether a controller's caches hold their first full list, shared by every reconcile of the
//! controller and reported to `/readyz`.

use kube::{Resource, runtime::reflector::Store};

/// How long a reconcile waits for the caches' first list before giving up (and requeueing).
pub const CACHE_SYNC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether a controller's caches hold their first full list. A reconcile must not act on an
/// empty cache after a restart: it would see no deployments and route nothing.
///
/// One task awaits every store (a store's own `wait_until_ready` wakes only its latest waiter,
/// so concurrent reconciles must not each wait on it); reconciles wait on this flag instead.
#[derive(Clone)]
pub struct Synced(tokio::sync::watch::Receiver<bool>);

impl Synced {
    /// Starts the task awaiting `all` (the controller keeps polling the watch streams), which
    /// also tells `health` once they are synced.
    pub fn spawn(
        health: crate::runtime::health::ControllerHealth,
        all: impl std::future::Future<Output = bool> + Send + 'static,
    ) -> Self {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            if all.await {
                let _ = tx.send(true);
                health.set_synced();
            }
        });
        Synced(rx)
    }

    /// Waits (at most [`CACHE_SYNC_TIMEOUT`]) until the caches are synced.
    pub async fn wait(&self) -> bool {
        let mut rx = self.0.clone();
        tokio::time::timeout(CACHE_SYNC_TIMEOUT, rx.wait_for(|v| *v))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// Waits for `store`'s first list; false when its writer is gone.
pub async fn ready<K>(store: Store<K>) -> bool
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store.wait_until_ready().await.is_ok()
}
