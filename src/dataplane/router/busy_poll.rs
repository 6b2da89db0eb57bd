//! Busy polling (opt-in, `--busy-poll-us`): while scoring requests keep coming, a serving
//! thread asks the kernel for new I/O without sleeping instead of blocking in `epoll_wait`.
//!
//! Why: on virtual machines an idle vCPU halts, and waking it takes tens of microseconds — twice
//! per proxied request (the client's request, then the instance's answer). That wake-up, not the
//! router's work, is most of the latency a router adds at moderate load. Polling keeps the CPU
//! awake at the price of one busy core per serving thread while traffic lasts. HAProxy offers
//! the same trade as `busy-polling`, always on; here a thread goes back to sleeping once no
//! request arrived for the window, so an idle router costs nothing.
//!
//! How: a task on each serving thread's runtime yields in a loop; Tokio then polls its I/O
//! driver with a zero timeout between rounds instead of parking.

use std::{
    cell::{Cell, OnceCell},
    sync::Arc,
    time::{Duration, Instant},
};

use prometheus::IntGauge;
use tokio::sync::Notify;

/// Per serving thread: requests seen, and how to wake its poller when it sleeps.
struct Local {
    requests: Cell<u64>,
    parked: Cell<bool>,
    wake: OnceCell<Arc<Notify>>,
}

thread_local! {
    static LOCAL: Local = const {
        Local {
            requests: Cell::new(0),
            parked: Cell::new(false),
            wake: OnceCell::new(),
        }
    };
}

/// Notes a scoring request on this thread; wakes the thread's poller if it sleeps. Costs a
/// thread-local increment when busy polling is off.
pub fn request_arrived() {
    LOCAL.with(|local| {
        local.requests.set(local.requests.get().wrapping_add(1));
        if local.parked.replace(false)
            && let Some(wake) = local.wake.get()
        {
            wake.notify_one();
        }
    });
}

fn requests_seen() -> u64 {
    LOCAL.with(|local| local.requests.get())
}

/// Runs on a serving thread's runtime (spawn it there): sleeps until a request arrives, then
/// keeps the runtime polling until `window` passes without a new request. `spinning` counts the
/// threads polling right now.
pub async fn poll_while_busy(window: Duration, spinning: IntGauge) {
    let wake = Arc::new(Notify::new());
    if LOCAL.with(|local| local.wake.set(wake.clone())).is_err() {
        return; // one poller per thread
    }
    loop {
        LOCAL.with(|local| local.parked.set(true));
        wake.notified().await;
        spinning.inc();
        let mut seen = requests_seen();
        let mut last = Instant::now();
        loop {
            tokio::task::yield_now().await;
            let now = requests_seen();
            if now != seen {
                seen = now;
                last = Instant::now();
            } else if last.elapsed() >= window {
                break;
            }
        }
        spinning.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn the_poller_spins_after_a_request_and_sleeps_once_requests_stop() {
        let spinning = IntGauge::new("spinning", "test").unwrap();
        let poller = tokio::spawn(poll_while_busy(Duration::from_millis(20), spinning.clone()));
        tokio::task::yield_now().await;
        assert_eq!(spinning.get(), 0, "asleep before any request");

        request_arrived();
        while spinning.get() == 0 {
            tokio::task::yield_now().await;
        }
        // Sleeping again once the window passes without requests.
        while spinning.get() == 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(spinning.get(), 0);

        // And woken again by the next request.
        request_arrived();
        while spinning.get() == 0 {
            tokio::task::yield_now().await;
        }
        poller.abort();
    }
}
