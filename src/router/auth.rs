//! Key and token authentication of scoring requests.
//!
//! Secrets are compared in constant time (`subtle`), every configured secret is compared on
//! every request (no early exit), and an unknown endpoint runs the same comparison against a
//! dummy secret, so neither the answer nor its timing tells a caller which endpoints exist.

use http::{HeaderMap, header::AUTHORIZATION};
use subtle::ConstantTimeEq;

use super::table::Auth;

/// Checks `Authorization: Bearer <secret>` for one endpoint.
#[derive(Clone, Debug)]
pub struct Authenticator {
    /// `None` when the endpoint is open.
    secrets: Option<Vec<Vec<u8>>>,
}

impl Authenticator {
    /// Builds the check for an endpoint's auth mode.
    pub fn new(auth: &Auth) -> Self {
        let secrets = match auth {
            Auth::None => None,
            Auth::Key {
                primary_key,
                secondary_key,
            } => Some(
                [primary_key, secondary_key]
                    .into_iter()
                    .filter(|key| !key.is_empty())
                    .map(|key| key.as_bytes().to_vec())
                    .collect(),
            ),
            Auth::Token { tokens } => Some(
                tokens
                    .iter()
                    .filter(|token| !token.is_empty())
                    .map(|token| token.as_bytes().to_vec())
                    .collect(),
            ),
        };
        Self { secrets }
    }

    /// Stands in for an endpoint that does not exist: never accepts, costs the same.
    pub fn unknown_endpoint() -> Self {
        Self {
            secrets: Some(Vec::new()),
        }
    }

    /// Whether the request's headers carry an accepted secret.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(secrets) = &self.secrets else {
            return true;
        };
        let presented = bearer(headers).unwrap_or_default();
        // Compare against a fixed dummy too, so the work does not depend on the secret count.
        let mut accepted = presented.ct_eq(DUMMY) & 0u8.ct_eq(&1);
        for secret in secrets {
            accepted |= presented.ct_eq(secret.as_slice());
        }
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
        Authenticator::new(&Auth::Key {
            primary_key: "primary".into(),
            secondary_key: "secondary".into(),
        })
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
        let auth = Authenticator::new(&Auth::Key {
            primary_key: String::new(),
            secondary_key: "s".into(),
        });
        assert!(!auth.allows(&headers("Bearer ")));
        assert!(auth.allows(&headers("Bearer s")));
    }

    #[test]
    fn tokens_open_endpoints_and_unknown_endpoints() {
        let tokens = Authenticator::new(&Auth::Token {
            tokens: vec!["t1".into(), "t2".into()],
        });
        assert!(tokens.allows(&headers("Bearer t2")));
        assert!(!tokens.allows(&headers("Bearer t3")));
        assert!(Authenticator::new(&Auth::None).allows(&HeaderMap::new()));
        let unknown = Authenticator::unknown_endpoint();
        assert!(!unknown.allows(&headers(&format!(
            "Bearer {}",
            String::from_utf8_lossy(DUMMY)
        ))));
    }
}
