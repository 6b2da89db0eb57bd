//! Key and token authentication of scoring requests.
//!
//! Secrets are compared in constant time (`subtle`), every configured secret is compared on
//! every request (no early exit), and an unknown endpoint runs the same comparison against a
//! dummy secret, so neither the answer nor its timing tells a caller which endpoints exist.

use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, header::AUTHORIZATION};
use subtle::{Choice, ConstantTimeEq};

use super::table::Auth;
use crate::contract::token;

/// Checks `Authorization: Bearer <key or token>` for one endpoint.
#[derive(Clone, Debug)]
pub struct Authenticator {
    check: Check,
}

#[derive(Clone, Debug)]
enum Check {
    Open,
    Keys(Vec<Vec<u8>>),
    Signed { key: Vec<u8>, endpoint: String },
}

impl Authenticator {
    /// Builds the check for endpoint `endpoint`'s auth mode.
    pub fn new(endpoint: &str, auth: &Auth) -> Self {
        let check = match auth {
            Auth::None => Check::Open,
            Auth::Key {
                primary_key,
                secondary_key,
            } => Check::Keys(
                [primary_key, secondary_key]
                    .into_iter()
                    .filter(|key| !key.is_empty())
                    .map(|key| key.as_bytes().to_vec())
                    .collect(),
            ),
            // An empty signing key would still sign; refuse everything instead.
            Auth::Token { signing_key } if signing_key.is_empty() => Check::Keys(Vec::new()),
            Auth::Token { signing_key } => Check::Signed {
                key: signing_key.as_bytes().to_vec(),
                endpoint: endpoint.to_owned(),
            },
        };
        Self { check }
    }

    /// Stands in for an endpoint that does not exist: never accepts, costs the same.
    pub fn unknown_endpoint() -> Self {
        Self {
            check: Check::Keys(Vec::new()),
        }
    }

    /// Whether the request's headers carry an accepted key or token.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.allows_at(headers, now)
    }

    /// [`Self::allows`] at Unix time `now`. Every mode does the same work for a given
    /// credential (a dummy key compare and one token check), so timing does not tell which
    /// endpoints exist or how they authenticate.
    pub fn allows_at(&self, headers: &HeaderMap, now: u64) -> bool {
        let (keys, signing, endpoint): (&[Vec<u8>], &[u8], &str) = match &self.check {
            Check::Open => return true,
            Check::Keys(keys) => (keys, DUMMY, ""),
            Check::Signed { key, endpoint } => (&[], key, endpoint),
        };
        let presented = bearer(headers).unwrap_or_default();
        let mut accepted = presented.ct_eq(DUMMY) & 0u8.ct_eq(&1);
        for key in keys {
            accepted |= presented.ct_eq(key.as_slice());
        }
        let signed = token::verify(signing, endpoint, presented, now);
        let is_signed = matches!(self.check, Check::Signed { .. });
        accepted |= Choice::from(u8::from(signed && is_signed));
        bool::from(accepted)
    }
}

const DUMMY: &[u8] = b"mlcompute-router-no-such-secret-0000000000";

/// The credential of `Authorization: Bearer <credential>` (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
        .filter(|credential| !credential.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value.parse().unwrap());
        headers
    }

    fn key_auth() -> Authenticator {
        Authenticator::new(
            "iris",
            &Auth::Key {
                primary_key: "primary".into(),
                secondary_key: "secondary".into(),
            },
        )
    }

    #[test]
    fn either_key_is_accepted() {
        let auth = key_auth();
        assert!(auth.allows(&headers("Bearer primary")));
        assert!(auth.allows(&headers("bearer secondary")));
        assert!(auth.allows(&headers("Bearer  primary ")));
    }

    #[test]
    fn wrong_missing_or_malformed_credentials_are_refused() {
        let auth = key_auth();
        for value in [
            "Bearer primar",
            "Bearer primaryx",
            "Bearer ",
            "primary",
            "Basic primary",
            "Bearer",
        ] {
            assert!(!auth.allows(&headers(value)), "{value}");
        }
        assert!(!auth.allows(&HeaderMap::new()));
    }

    #[test]
    fn empty_keys_never_match() {
        let auth = Authenticator::new(
            "iris",
            &Auth::Key {
                primary_key: String::new(),
                secondary_key: "s".into(),
            },
        );
        assert!(!auth.allows(&headers("Bearer ")));
        assert!(auth.allows(&headers("Bearer s")));
    }

    #[test]
    fn signed_tokens_open_endpoints_and_unknown_endpoints() {
        let key = "k".repeat(64);
        let tokens = Authenticator::new(
            "iris",
            &Auth::Token {
                signing_key: key.clone(),
            },
        );
        let good = token::mint(key.as_bytes(), "iris", 2_000);
        assert!(tokens.allows_at(&headers(&format!("Bearer {good}")), 1_000));
        assert!(
            !tokens.allows_at(&headers(&format!("Bearer {good}")), 2_000),
            "expired"
        );
        let elsewhere = token::mint(key.as_bytes(), "fraud", 2_000);
        assert!(!tokens.allows_at(&headers(&format!("Bearer {elsewhere}")), 1_000));
        // The signing key itself is not a credential.
        assert!(!tokens.allows_at(&headers(&format!("Bearer {key}")), 1_000));
        let empty = Authenticator::new(
            "iris",
            &Auth::Token {
                signing_key: String::new(),
            },
        );
        let unsigned = token::mint(b"", "iris", 2_000);
        assert!(!empty.allows_at(&headers(&format!("Bearer {unsigned}")), 1_000));
        assert!(Authenticator::new("iris", &Auth::None).allows(&HeaderMap::new()));
        let unknown = Authenticator::unknown_endpoint();
        assert!(!unknown.allows(&headers(&format!(
            "Bearer {}",
            String::from_utf8_lossy(DUMMY)
        ))));
        assert!(!unknown.allows_at(&headers(&format!("Bearer {unsigned}")), 1_000));
    }
}
