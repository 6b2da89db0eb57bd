//! The endpoint's keys Secret: two random keys and a token signing key, created once and never
//! rewritten by the controller (it only adds a signing key an older Secret lacks);
//! `mlcompute endpoint regenerate-keys` replaces one at a time, so callers can rotate without
//! downtime (the router accepts either key).

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret};
use rand_core::{OsRng, RngCore};

use super::routing::keys_secret_name;
use crate::{
    api::online_endpoint::OnlineEndpoint,
    dataplane::router::cluster_table::{PRIMARY_KEY, SECONDARY_KEY, TOKEN_SIGNING_KEY},
    runtime::children::child_meta,
};

/// The Secret's component label (the router selects keys Secrets by it).
pub const COMPONENT: &str = "keys";

/// A new key: 32 bytes from the OS's random source, as 64 hex digits.
pub fn new_key() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The keys Secret with two fresh keys.
pub fn secret(endpoint: &OnlineEndpoint) -> Secret {
    let name = keys_secret_name(endpoint.metadata.name.as_deref().unwrap_or_default());
    Secret {
        metadata: child_meta(endpoint, name, COMPONENT),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            (PRIMARY_KEY.to_string(), ByteString(new_key().into_bytes())),
            (
                SECONDARY_KEY.to_string(),
                ByteString(new_key().into_bytes()),
            ),
            (
                TOKEN_SIGNING_KEY.to_string(),
                ByteString(new_key().into_bytes()),
            ),
        ])),
        ..Secret::default()
    }
}

/// Whether `secret` holds a non-empty token signing key.
pub fn has_signing_key(secret: &Secret) -> bool {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(TOKEN_SIGNING_KEY))
        .is_some_and(|v| !v.0.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_long() {
        let (a, b) = (new_key(), new_key());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
