//! Responses the router writes itself: JSON bodies that say what happened, shaped as Azure ML's
//! inference server shapes its errors (`{"message": ...}`), plus a bounded `reason` and, when the
//! caller may learn them, the endpoint and deployment.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde::Serialize;

/// The body of every error the router answers itself.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// What happened, for a human (`message`, as in `azmlinfsrv`'s error bodies).
    pub message: &'a str,
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

/// A JSON error response with only a message, exactly as `azmlinfsrv` writes its own.
pub fn message(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(&serde_json::json!({ "message": message }))
        .unwrap_or_else(|_| b"{}".to_vec());
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
    method_not_allowed(message, "POST")
}

/// 405 with the methods the route takes in `Allow`.
pub fn method_not_allowed(message: &str, allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = error(
        StatusCode::METHOD_NOT_ALLOWED,
        &ErrorBody {
            message,
            endpoint: None,
            deployment: None,
            reason: "method_not_allowed",
        },
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
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
    br#"{"message":"unauthorized: send Authorization: Bearer <key or token> of this endpoint","reason":"unauthorized"}"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn body(response: Response<Full<Bytes>>) -> serde_json::Value {
        use http_body_util::BodyExt;
        let bytes = futures::executor::block_on(response.into_body().collect())
            .unwrap()
            .to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn error_bodies_carry_a_message_as_azmlinfsrvs_do() {
        let plain = message(StatusCode::NOT_FOUND, "no \"such\" thing");
        assert_eq!(plain.status(), StatusCode::NOT_FOUND);
        assert_eq!(plain.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            body(plain),
            serde_json::json!({"message": "no \"such\" thing"})
        );
        let detailed = error(
            StatusCode::SERVICE_UNAVAILABLE,
            &ErrorBody {
                message: "busy",
                endpoint: Some("iris"),
                deployment: None,
                reason: "busy",
            },
        );
        assert_eq!(
            body(detailed),
            serde_json::json!({"message": "busy", "endpoint": "iris", "reason": "busy"})
        );
        let denied = unauthorized();
        assert_eq!(denied.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert!(
            body(denied)["message"]
                .as_str()
                .unwrap()
                .starts_with("unauthorized")
        );
        let refused = method_not_allowed("GET only", "GET, HEAD");
        assert_eq!(refused.headers()[header::ALLOW], "GET, HEAD");
    }
}
