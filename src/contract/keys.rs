//! The keys Secret of an OnlineEndpoint (`<endpoint>-keys`).
//!
//! Writers: the OnlineEndpoint controller creates it with [`PRIMARY_KEY`], [`SECONDARY_KEY`] and
//! [`TOKEN_SIGNING_KEY`] (and adds a signing key an older Secret lacks); `mlcompute endpoint
//! regenerate-keys` replaces one key at a time. Readers: the router (key auth accepts either key;
//! `aml_token` auth checks tokens signed with the signing key), `mlcompute endpoint
//! get-credentials`. The router finds these Secrets by [`secret_selector`]; the route names the
//! Secret of its endpoint.
//!
//! A key is 64 lower-case hex digits ([`new_key`]); readers take any non-empty value.

use rand_core::{OsRng, RngCore};

use super::labels;
use crate::api::OnlineEndpoint;

/// Key of the primary key in the Secret's data.
pub const PRIMARY_KEY: &str = "primaryKey";
/// Key of the secondary key.
pub const SECONDARY_KEY: &str = "secondaryKey";
/// Key of the key tokens are signed with (`aml_token` mode).
pub const TOKEN_SIGNING_KEY: &str = "tokenSigningKey";
/// The Secret's `app.kubernetes.io/component`.
pub const COMPONENT: &str = "keys";

/// Name of the keys Secret of `endpoint`.
pub fn secret_name(endpoint: &str) -> String {
    format!("{endpoint}-keys")
}

/// Label selector of every keys Secret (what the router watches).
pub fn secret_selector() -> String {
    labels::component_selector::<OnlineEndpoint>(COMPONENT)
}

/// A new key: 32 bytes from the OS's random source, as 64 hex digits.
pub fn new_key() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_long() {
        let (a, b) = (new_key(), new_key());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(secret_name("fraud"), "fraud-keys");
    }
}
