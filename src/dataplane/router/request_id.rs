//! Request ids as Azure ML's inference server (`azmlinfsrv`) handles them, so a client sees the
//! same headers whether the router or the instance answered, and the router's logs and the
//! instance's logs share the id.
//!
//! - `x-request-id`: the client's, or a new UUID (v4) when it sent none; forwarded to the
//!   instance, so `azmlinfsrv` behind the router uses the same one.
//! - `x-ms-client-request-id`: the client's; if absent, a legacy `x-ms-request-id` stands in.
//! - `x-ms-request-id` (legacy): the client's; if absent, the client request id, else the request id.
//! - Every answer carries the non-empty ones. An id longer than 100 bytes is refused with 431 and
//!   `azmlinfsrv`'s message; an oversize `x-request-id` is not echoed.
//! - `TraceId` (Office services' tracing field) is echoed when sent.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::pick::random_u64;

/// The request id header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The legacy id header (once both request and client request id).
pub const MS_REQUEST_ID: HeaderName = HeaderName::from_static("x-ms-request-id");
/// The client's own id.
pub const MS_CLIENT_REQUEST_ID: HeaderName = HeaderName::from_static("x-ms-client-request-id");
/// Echoed as sent.
const TRACE_ID: HeaderName = HeaderName::from_static("traceid");

/// The longest id accepted, in bytes (`azmlinfsrv`'s `HEADER_LIMIT`, in characters of a
/// Latin-1-decoded header: one per byte).
pub const MAX_ID_LEN: usize = 100;

/// The ids of one request, as they go out on every answer.
#[derive(Clone, Debug)]
pub struct RequestIds {
    /// `x-request-id`.
    pub request_id: HeaderValue,
    /// Whether the router made `request_id` up (then it is added to the forwarded request).
    pub generated: bool,
    legacy: HeaderValue,
    client: Option<HeaderValue>,
    trace: Option<HeaderValue>,
}

/// An id over [`MAX_ID_LEN`]: answered 431, as `azmlinfsrv` does.
#[derive(Debug)]
pub struct TooLong {
    message: &'static str,
    /// The request id, when that one was valid (it still goes out, as with `azmlinfsrv`).
    request_id: Option<HeaderValue>,
}

impl TooLong {
    /// The 431 answer.
    pub fn response(&self) -> Response<Full<Bytes>> {
        // Byte for byte azmlinfsrv's answer (Python's JSON spacing, its run-function header):
        // the router answers here in the inference server's place.
        let mut response = Response::new(Full::new(Bytes::from(format!(
            "{{\"message\": \"{}\"}}",
            self.message
        ))));
        *response.status_mut() = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            HeaderName::from_static("x-ms-run-function-failed"),
            HeaderValue::from_static("False"),
        );
        if let Some(id) = &self.request_id {
            response.headers_mut().insert(REQUEST_ID, id.clone());
        }
        response
    }
}

impl RequestIds {
    /// Reads (or makes up) the ids of a request with these headers.
    pub fn read(headers: &HeaderMap) -> Result<Self, TooLong> {
        let present = |name: &HeaderName| headers.get(name).filter(|v| !v.is_empty()).cloned();
        let (request_id, generated) = match present(&REQUEST_ID) {
            Some(id) if id.len() > MAX_ID_LEN => {
                return Err(TooLong {
                    message: "x-request-id must not exceed 100 characters",
                    request_id: None,
                });
            }
            Some(id) => (id, false),
            None => (new_uuid(), true),
        };
        let legacy = present(&MS_REQUEST_ID);
        let client = present(&MS_CLIENT_REQUEST_ID).or_else(|| legacy.clone());
        let legacy = legacy
            .or_else(|| client.clone())
            .unwrap_or_else(|| request_id.clone());
        if legacy.len() > MAX_ID_LEN || client.as_ref().is_some_and(|c| c.len() > MAX_ID_LEN) {
            return Err(TooLong {
                message: "x-ms-request-id and x-ms-client-request-id must not exceed 100 characters",
                request_id: Some(request_id),
            });
        }
        Ok(Self {
            request_id,
            generated,
            legacy,
            client,
            trace: headers.get(TRACE_ID).cloned(),
        })
    }

    /// Adds the made-up request id to a request going to an instance.
    pub fn forward(&self, headers: &mut HeaderMap) {
        if self.generated {
            headers.insert(REQUEST_ID, self.request_id.clone());
        }
    }

    /// Sets the id headers on an answer (the instance's, which may have set its own, or the
    /// router's), so they are the same whoever answered.
    pub fn stamp(&self, headers: &mut HeaderMap) {
        headers.insert(REQUEST_ID, self.request_id.clone());
        headers.insert(MS_REQUEST_ID, self.legacy.clone());
        if let Some(client) = &self.client {
            headers.insert(MS_CLIENT_REQUEST_ID, client.clone());
        }
        if let Some(trace) = &self.trace
            && !headers.contains_key(TRACE_ID)
        {
            headers.insert(TRACE_ID, trace.clone());
        }
    }
}

/// A random (version 4, RFC 9562) UUID in its 36-character text form.
pub fn new_uuid() -> HeaderValue {
    let bits = (u128::from(random_u64()) << 64) | u128::from(random_u64());
    // Version 4 in bits 48..52, variant 0b10 in bits 64..66 (counting from the most significant).
    let bits = (bits & !(0xf << 76) & !(0b11 << 62)) | (0x4 << 76) | (0b10 << 62);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 36];
    let mut nibble = 0;
    for (i, slot) in text.iter_mut().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            *slot = b'-';
            continue;
        }
        *slot = HEX[((bits >> (124 - 4 * nibble)) & 0xf) as usize];
        nibble += 1;
    }
    HeaderValue::from_maybe_shared(Bytes::copy_from_slice(&text)).unwrap_or(
        HeaderValue::from_static("00000000-0000-4000-8000-000000000000"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| {
                (
                    HeaderName::from_static(n),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    /// The answer's id headers for a request with `pairs`.
    fn answered(pairs: &[(&'static str, &str)]) -> Vec<(String, String)> {
        let ids = RequestIds::read(&headers(pairs)).unwrap();
        let mut out = HeaderMap::new();
        ids.stamp(&mut out);
        let mut seen: Vec<_> = out
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        seen.sort();
        seen
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<_> = expected
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn uuids_are_version_4_and_differ() {
        let a = new_uuid();
        let b = new_uuid();
        assert_ne!(a, b);
        let text = a.to_str().unwrap();
        assert_eq!(text.len(), 36);
        let groups: Vec<&str> = text.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(groups[2].starts_with('4'), "{text}");
        assert!(
            matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'),
            "{text}"
        );
        assert!(text.bytes().all(|c| c == b'-' || c.is_ascii_hexdigit()));
    }

    #[test]
    fn a_request_without_ids_gets_one_and_it_is_forwarded() {
        let ids = RequestIds::read(&HeaderMap::new()).unwrap();
        assert!(ids.generated);
        let mut forwarded = HeaderMap::new();
        ids.forward(&mut forwarded);
        assert_eq!(forwarded[REQUEST_ID], ids.request_id);
        let mut answer = HeaderMap::new();
        ids.stamp(&mut answer);
        assert_eq!(answer[REQUEST_ID], ids.request_id);
        // The legacy header falls back to the request id; no client id was sent.
        assert_eq!(answer[MS_REQUEST_ID], ids.request_id);
        assert!(!answer.contains_key(MS_CLIENT_REQUEST_ID));
    }

    #[test]
    fn azmlinfsrv_rules_for_the_three_headers() {
        // Only x-request-id.
        assert_eq!(
            answered(&[("x-request-id", "r1")]),
            pairs(&[("x-request-id", "r1"), ("x-ms-request-id", "r1")])
        );
        // A client request id: it is also the legacy one.
        assert_eq!(
            answered(&[("x-request-id", "r1"), ("x-ms-client-request-id", "c1")]),
            pairs(&[
                ("x-request-id", "r1"),
                ("x-ms-request-id", "c1"),
                ("x-ms-client-request-id", "c1")
            ])
        );
        // Only the legacy header: it stands in for the client request id.
        assert_eq!(
            answered(&[("x-request-id", "r1"), ("x-ms-request-id", "l1")]),
            pairs(&[
                ("x-request-id", "r1"),
                ("x-ms-request-id", "l1"),
                ("x-ms-client-request-id", "l1")
            ])
        );
        // Both: each kept.
        assert_eq!(
            answered(&[
                ("x-request-id", "r1"),
                ("x-ms-request-id", "l1"),
                ("x-ms-client-request-id", "c1")
            ]),
            pairs(&[
                ("x-request-id", "r1"),
                ("x-ms-request-id", "l1"),
                ("x-ms-client-request-id", "c1")
            ])
        );
        // A client id sent and a request id made up: the client id is not taken for the request id.
        let ids = RequestIds::read(&headers(&[("x-ms-client-request-id", "c1")])).unwrap();
        assert!(ids.generated);
        assert_ne!(ids.request_id, "c1");
        // TraceId is echoed.
        let traced = answered(&[("x-request-id", "r1"), ("traceid", "t-9")]);
        assert!(
            traced.contains(&("traceid".into(), "t-9".into())),
            "{traced:?}"
        );
    }

    #[test]
    fn ids_over_100_bytes_get_431_with_azmlinfsrvs_messages() {
        let at_limit = "a".repeat(100);
        let over = "a".repeat(101);
        assert!(RequestIds::read(&headers(&[("x-request-id", &at_limit)])).is_ok());
        let too_long = RequestIds::read(&headers(&[("x-request-id", &over)])).unwrap_err();
        let response = too_long.response();
        assert_eq!(
            response.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        assert!(!response.headers().contains_key(REQUEST_ID));
        assert_eq!(
            too_long.message,
            "x-request-id must not exceed 100 characters"
        );
        for name in ["x-ms-request-id", "x-ms-client-request-id"] {
            let too_long =
                RequestIds::read(&headers(&[("x-request-id", "r1"), (name, &over)])).unwrap_err();
            assert_eq!(
                too_long.message,
                "x-ms-request-id and x-ms-client-request-id must not exceed 100 characters"
            );
            // The valid request id still goes out, as azmlinfsrv's after-request hook sets it;
            // the refused ones do not.
            let response = too_long.response();
            assert_eq!(response.headers()[REQUEST_ID], "r1");
            assert!(!response.headers().contains_key(MS_REQUEST_ID));
            assert!(!response.headers().contains_key(MS_CLIENT_REQUEST_ID));
        }
    }
}
