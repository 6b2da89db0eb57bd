//! Responses the router writes itself: JSON bodies that say what happened.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde::Serialize;

/// The body of every error the router answers itself.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// What happened, for a human.
    pub error: &'a str,
    /// The endpoint, when the caller was allowed to learn it exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<&'a str>,
    /// The deployment the request was routed to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<&'a str>,
    /// A bounded reason code.
    pub reason: &'a str,
}

/// A JSON error response.
pub fn error(status: StatusCode, body: &ErrorBody<'_>) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    json(status, Bytes::from(bytes))
}

/// A JSON response.
pub fn json(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// 405 for a route that only takes POST, with `Allow: POST`.
pub fn post_only(message: &str) -> Response<Full<Bytes>> {
    let mut response = error(
        StatusCode::METHOD_NOT_ALLOWED,
        &ErrorBody {
            error: message,
            endpoint: None,
            deployment: None,
            reason: "method_not_allowed",
        },
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    response
}

/// The one 401 answer, for a wrong key and for an endpoint that does not exist alike.
pub fn unauthorized() -> Response<Full<Bytes>> {
    let mut response = json(StatusCode::UNAUTHORIZED, Bytes::from_static(UNAUTHORIZED));
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

const UNAUTHORIZED: &[u8] =
    br#"{"error":"unauthorized: send Authorization: Bearer <key or token> of this endpoint","reason":"unauthorized"}"#;
