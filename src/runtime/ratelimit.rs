//! A client-side token bucket in front of every API request, so a burst of work (1000 jobs created
//! at once) is smoothed to a steady rate the API server can take, as client-go's QPS/burst do.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

/// Requests per second and how many may go at once after a quiet spell.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub qps: f64,
    pub burst: u32,
}

impl<S> Layer<S> for RateLimit {
    type Service = TokenBucket<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TokenBucket::new(inner, *self)
    }
}

/// The bucket state. kube's `Client` puts the stack behind a `Buffer`, whose single worker calls
/// `poll_ready` before each request, so waiting in `poll_ready` holds every caller back in order.
pub struct TokenBucket<S> {
    inner: S,
    limit: RateLimit,
    tokens: f64,
    refilled: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
    /// Whether a token has been taken for the request about to be called.
    reserved: bool,
}

impl<S> TokenBucket<S> {
    pub fn new(inner: S, limit: RateLimit) -> Self {
        let limit = RateLimit {
            qps: limit.qps.max(0.001),
            burst: limit.burst.max(1),
        };
        Self {
            inner,
            limit,
            tokens: f64::from(limit.burst),
            refilled: Instant::now(),
            sleep: None,
            reserved: false,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.limit.qps).min(f64::from(self.limit.burst));
        self.refilled = now;
    }

    /// Takes a token if one is there; otherwise returns how long until one is.
    fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.limit.qps,
            ))
        }
    }
}

impl<S, R> Service<R> for TokenBucket<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        while !self.reserved {
            if let Some(sleep) = self.sleep.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.sleep = None;
            }
            match self.try_take(Instant::now()) {
                Ok(()) => self.reserved = true,
                Err(wait) => self.sleep = Some(Box::pin(tokio::time::sleep(wait))),
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        self.reserved = false;
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(qps: f64, burst: u32) -> TokenBucket<()> {
        TokenBucket::new((), RateLimit { qps, burst })
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_bucket_allows_a_burst_then_paces_at_qps() {
        let mut b = bucket(10.0, 3);
        let now = Instant::now();
        for _ in 0..3 {
            assert_eq!(b.try_take(now), Ok(()));
        }
        let wait = b.try_take(now).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        assert_eq!(b.try_take(now + Duration::from_millis(100)), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_never_exceed_the_burst() {
        let mut b = bucket(100.0, 2);
        let later = Instant::now() + Duration::from_secs(60);
        assert_eq!(b.try_take(later), Ok(()));
        assert_eq!(b.try_take(later), Ok(()));
        assert!(b.try_take(later).is_err());
    }
}
