//! The machinery every controller shares, once: client, caches, status writes, child apply,
//! backoff, conditions, Events and metrics. It never imports a controller or the data plane.

pub mod apply;
pub mod backoff;
pub mod caches;
pub mod children;
pub mod client;
pub mod conditions;
pub mod drive;
pub mod events;
pub mod handles;
pub mod health;
pub mod metrics;
pub mod names;
pub mod pod_data;
pub mod pod_problems;
pub mod pod_security;
pub mod ratelimit;
pub mod reconcile;
pub mod refusal;
pub mod resolve;
pub mod status;
pub mod synced;

/// A bounded category for an API error: for metrics labels and Event reasons.
pub fn error_category(err: &kube::Error) -> &'static str {
    match err {
        kube::Error::Api(s) if s.code == 429 => "throttled",
        kube::Error::Api(s) if s.code == 409 => "conflict",
        kube::Error::Api(s) if s.code == 404 => "not_found",
        kube::Error::Api(s) if s.code == 403 || s.code == 401 => "forbidden",
        kube::Error::Api(s) if s.code == 422 || s.code == 400 => "invalid",
        kube::Error::Api(s) if s.code >= 500 => "server_error",
        kube::Error::Api(_) => "api_error",
        _ => "transport",
    }
}

/// Whether an API error says the object already exists (a create that raced our cache).
pub fn is_already_exists(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 409)
}

/// Whether an API error says the object is gone.
pub fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 404)
}
