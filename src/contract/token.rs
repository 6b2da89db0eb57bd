//! Endpoint tokens (Azure ML's `aml_token` auth mode): short-lived, signed, checked without state.
//! Writer: `mlcompute endpoint get-credentials` ([`mint`]); reader: the router ([`verify`]).
//!
//! A token is `mlc1.<expiry>.<signature>`: `expiry` in Unix seconds, `signature` the hex
//! HMAC-SHA256 of `mlc1|<endpoint>|<expiry>` under the endpoint's signing key (`tokenSigningKey`
//! in its keys Secret). Whoever may read that Secret may mint tokens (`mlcompute endpoint
//! get-credentials`), as whoever may read it may read the keys; the router only checks the
//! signature, the endpoint and the expiry, so nothing is stored per token. Rotating the signing
//! key (`mlcompute endpoint regenerate-keys --key token-signing`) revokes every token at once.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

const VERSION: &str = "mlc1";

/// A token for `endpoint` valid until `expires` (Unix seconds).
pub fn mint(signing_key: &[u8], endpoint: &str, expires: u64) -> String {
    let signature = sign(signing_key, endpoint, expires);
    let mut hex = String::with_capacity(64);
    for byte in signature {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    format!("{VERSION}.{expires}.{hex}")
}

/// Whether `token` was signed with `signing_key` for `endpoint` and is unexpired at `now`. The
/// signature is compared in constant time.
pub fn verify(signing_key: &[u8], endpoint: &str, token: &[u8], now: u64) -> bool {
    let Some((expires, signature)) = parse(token) else {
        return false;
    };
    let expected = sign(signing_key, endpoint, expires);
    bool::from(expected.as_slice().ct_eq(&signature)) & (now < expires)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn sign(signing_key: &[u8], endpoint: &str, expires: u64) -> [u8; 32] {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(signing_key) else {
        return [0; 32];
    };
    mac.update(VERSION.as_bytes());
    mac.update(b"|");
    mac.update(endpoint.as_bytes());
    mac.update(b"|");
    mac.update(expires.to_string().as_bytes());
    mac.finalize().into_bytes().into()
}

/// `mlc1.<expiry>.<64 hex digits>` → (expiry, signature bytes).
fn parse(token: &[u8]) -> Option<(u64, [u8; 32])> {
    let text = std::str::from_utf8(token).ok()?;
    let mut parts = text.split('.');
    if parts.next()? != VERSION {
        return None;
    }
    // Only the canonical form `mint` writes: one token has one spelling (no sign, no leading
    // zeros, lowercase hex).
    let expiry_text = parts.next()?;
    let expires = expiry_text.parse::<u64>().ok()?;
    let hex = parts.next()?.as_bytes();
    if parts.next().is_some()
        || hex.len() != 64
        || expires.to_string() != expiry_text
        || !hex.iter().all(|c| HEX.contains(c))
    {
        return None;
    }
    let mut signature = [0u8; 32];
    for (byte, pair) in signature.iter_mut().zip(hex.chunks(2)) {
        let digit = |c: u8| char::from(c).to_digit(16);
        *byte = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some((expires, signature))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_minted_token_verifies_until_it_expires() {
        let token = mint(KEY, "fraud", 1_000);
        assert!(token.starts_with("mlc1.1000."), "{token}");
        assert!(verify(KEY, "fraud", token.as_bytes(), 999));
        assert!(!verify(KEY, "fraud", token.as_bytes(), 1_000));
    }

    #[test]
    fn another_key_endpoint_expiry_or_shape_is_refused() {
        let token = mint(KEY, "fraud", 1_000);
        assert!(!verify(b"another key", "fraud", token.as_bytes(), 1));
        assert!(!verify(KEY, "iris", token.as_bytes(), 1));
        // Extending the expiry breaks the signature.
        let stretched = token.replacen("1000", "9999", 1);
        assert!(!verify(KEY, "fraud", stretched.as_bytes(), 1));
        for bad in [
            "",
            "mlc1",
            "mlc1.1000",
            "mlc2.1000.00",
            "mlc1.x.00",
            &format!("{token}.x"),
        ] {
            assert!(!verify(KEY, "fraud", bad.as_bytes(), 1), "{bad}");
        }
        let mut flipped = token.into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        assert!(!verify(KEY, "fraud", &flipped, 1));
    }
}
