//! The endpoint's keys Secret (layout: [`crate::contract::keys`]): two random keys and a token
//! signing key, created once and never rewritten by the controller (it only adds a signing key an
//! older Secret lacks); `mlcompute endpoint regenerate-keys` replaces one at a time, so callers
//! can rotate without downtime (the router accepts either key).

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret};

pub use crate::contract::keys::{COMPONENT, new_key};
use crate::{
    api::online_endpoint::OnlineEndpoint,
    contract::keys::{PRIMARY_KEY, SECONDARY_KEY, TOKEN_SIGNING_KEY, secret_name},
    runtime::children::child_meta,
};

/// The keys Secret with two fresh keys.
pub fn secret(endpoint: &OnlineEndpoint) -> Secret {
    let name = secret_name(endpoint.metadata.name.as_deref().unwrap_or_default());
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
    fn the_secret_holds_three_fresh_keys() {
        let ep: OnlineEndpoint = serde_json::from_value(serde_json::json!({
            "apiVersion": "mlcompute.io/v1alpha1", "kind": "OnlineEndpoint",
            "metadata": { "name": "fraud", "namespace": "ns", "uid": "u" }, "spec": {} }))
        .unwrap();
        let s = secret(&ep);
        assert_eq!(s.metadata.name.as_deref(), Some("fraud-keys"));
        let data = s.data.as_ref().unwrap();
        assert_eq!(data[PRIMARY_KEY].0.len(), 64);
        assert_ne!(data[PRIMARY_KEY], data[SECONDARY_KEY]);
        assert!(has_signing_key(&s));
    }
}
