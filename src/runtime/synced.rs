//! Whether the process's caches hold their first full list: one signal, shared by every
//! reconcile of every controller (see [`super::caches::Caches::seal`]).

/// How long a reconcile waits for the caches' first list before giving up (and requeueing).
pub const CACHE_SYNC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether the caches hold their first full list. A reconcile must not act on an empty cache
/// after a restart: it would see no deployments and route nothing, or re-plan a running job.
///
/// One task awaits every store (a store's own `wait_until_ready` wakes only its latest waiter,
/// so concurrent reconciles must not each wait on it); reconciles wait on this flag instead.
#[derive(Clone)]
pub struct Synced(tokio::sync::watch::Receiver<bool>);

impl Synced {
    /// A flag some other task turns true.
    pub fn from(rx: tokio::sync::watch::Receiver<bool>) -> Self {
        Synced(rx)
    }

    /// Already synced: for unit tests of reconciles.
    #[cfg(test)]
    pub fn ready() -> Self {
        let (_tx, rx) = tokio::sync::watch::channel(true);
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
