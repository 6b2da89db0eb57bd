//! Which endpoint a request addresses, and for what: by path
//! (`/api/v1/endpoint/<endpoint>/score`, the shape of Azure ML's Kubernetes router) or by host
//! (`POST /score` to `<endpoint>.<domain>`, as a managed endpoint's `scoring_uri` is called), for
//! the domains the router is configured with.

use std::borrow::Cow;

use http::{Request, header};

use crate::contract::router_http::{
    HOST_SCORE_PATH, HOST_SWAGGER_PATH, scoring_endpoint, swagger_endpoint,
};

/// What a request to an endpoint asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// Scoring: forwarded to the deployment's scoring path, any method.
    Score,
    /// The OpenAPI description: forwarded to the deployment's `/swagger.json`.
    Swagger,
}

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Addressed<'a> {
    /// To this endpoint.
    Endpoint {
        /// The endpoint's name (lowercased when it came from the host).
        name: Cow<'a, str>,
        /// What for.
        call: Call,
    },
    /// The host form's path, but the host names no endpoint under a configured domain.
    UnknownHost(Cow<'a, str>),
    /// Not an endpoint's URI (the router's own routes, or nothing).
    Elsewhere,
}

/// The domains under which `<endpoint>.<domain>` names an endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostDomains {
    /// Lowercase, without leading or trailing dots.
    domains: Vec<String>,
}

/// A domain that cannot be one.
#[derive(Debug, thiserror::Error)]
#[error("host domain {0:?}: expected DNS labels (letters, digits, '-') separated by dots")]
pub struct BadDomain(pub String);

impl HostDomains {
    /// Validates and normalises `domains` (`inference.example.com`; a leading dot is allowed).
    pub fn new<S: AsRef<str>>(domains: &[S]) -> Result<Self, BadDomain> {
        let domains = domains
            .iter()
            .map(|d| parse_domain(d.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { domains })
    }

    /// Whether any domain is configured (the host form is served only then).
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    /// The configured domains, for messages.
    pub fn list(&self) -> String {
        self.domains.join(", ")
    }

    /// The endpoint that `host` (a Host header or URI authority, port allowed) names:
    /// the single label before a configured domain.
    pub fn endpoint_of<'h>(&self, host: &'h str) -> Option<Cow<'h, str>> {
        let host = strip_port(host).trim_end_matches('.');
        self.domains.iter().find_map(|domain| {
            let cut = host.len().checked_sub(domain.len() + 1)?;
            let (label, rest) = host.split_at_checked(cut)?;
            let suffix = rest.strip_prefix('.')?;
            (suffix.eq_ignore_ascii_case(domain) && is_label(label)).then(|| {
                if label.bytes().any(|b| b.is_ascii_uppercase()) {
                    Cow::Owned(label.to_ascii_lowercase())
                } else {
                    Cow::Borrowed(label)
                }
            })
        })
    }
}

fn parse_domain(raw: &str) -> Result<String, BadDomain> {
    let domain = raw.trim().trim_matches('.').to_ascii_lowercase();
    if domain.is_empty() || !domain.split('.').all(is_label) {
        return Err(BadDomain(raw.to_owned()));
    }
    Ok(domain)
}

/// One DNS label: 1–63 letters, digits or '-', not starting or ending with '-'.
fn is_label(label: &str) -> bool {
    (1..=63).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Where `request` goes, given the host domains.
pub fn classify<'r, B>(request: &'r Request<B>, domains: &HostDomains) -> Addressed<'r> {
    let path = request.uri().path();
    if let Some(name) = scoring_endpoint(path) {
        return Addressed::Endpoint {
            name: Cow::Borrowed(name),
            call: Call::Score,
        };
    }
    if let Some(name) = swagger_endpoint(path) {
        return Addressed::Endpoint {
            name: Cow::Borrowed(name),
            call: Call::Swagger,
        };
    }
    let call = match path {
        HOST_SCORE_PATH => Call::Score,
        HOST_SWAGGER_PATH => Call::Swagger,
        _ => return Addressed::Elsewhere,
    };
    if domains.is_empty() {
        return Addressed::Elsewhere;
    }
    // An absolute-form target's authority wins over Host (RFC 9112 §3.2.2).
    let host = request.uri().host().or_else(|| {
        request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
    });
    let Some(host) = host else {
        return Addressed::UnknownHost(Cow::Borrowed(""));
    };
    match domains.endpoint_of(host) {
        Some(name) => Addressed::Endpoint { name, call },
        None => Addressed::UnknownHost(Cow::Borrowed(host)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domains() -> HostDomains {
        HostDomains::new(&["inference.example.com", ".ml.local."]).unwrap()
    }

    fn request(uri: &str, host: Option<&str>) -> Request<()> {
        let mut builder = Request::post(uri);
        if let Some(host) = host {
            builder = builder.header("host", host);
        }
        builder.body(()).unwrap()
    }

    fn endpoint(name: &str, call: Call) -> Addressed<'_> {
        Addressed::Endpoint {
            name: Cow::Borrowed(name),
            call,
        }
    }

    #[test]
    fn domains_are_validated_and_normalised() {
        assert_eq!(
            HostDomains::new(&["Inference.Example.COM"]).unwrap().list(),
            "inference.example.com"
        );
        for bad in ["", ".", "a..b", "under_score.com", "-a.com", "a b.com"] {
            assert!(HostDomains::new(&[bad]).is_err(), "{bad:?}");
        }
        assert!(HostDomains::new::<&str>(&[]).unwrap().is_empty());
    }

    #[test]
    fn the_label_before_a_configured_domain_names_the_endpoint() {
        let d = domains();
        assert_eq!(
            d.endpoint_of("iris.inference.example.com").as_deref(),
            Some("iris")
        );
        assert_eq!(
            d.endpoint_of("iris.inference.example.com:8443").as_deref(),
            Some("iris")
        );
        assert_eq!(
            d.endpoint_of("IRIS.Inference.Example.com.").as_deref(),
            Some("iris")
        );
        assert_eq!(
            d.endpoint_of("fraud-v2.ml.local").as_deref(),
            Some("fraud-v2")
        );
        for none in [
            "inference.example.com",
            ".inference.example.com",
            "a.b.inference.example.com",
            "iris.example.com",
            "irisinference.example.com",
            "iris.inference.example.com.evil.net",
            "127.0.0.1:8080",
            "[::1]:8080",
            "",
        ] {
            assert_eq!(d.endpoint_of(none), None, "{none:?}");
        }
    }

    #[test]
    fn requests_are_addressed_by_path_or_by_host() {
        let d = domains();
        let by_path = request("/api/v1/endpoint/iris/score?x=1", Some("anything"));
        assert_eq!(classify(&by_path, &d), endpoint("iris", Call::Score));
        let swagger = request("/api/v1/endpoint/iris/swagger.json?version=3", None);
        assert_eq!(classify(&swagger, &d), endpoint("iris", Call::Swagger));
        let by_host = request("/score?x=1", Some("iris.inference.example.com:80"));
        assert_eq!(classify(&by_host, &d), endpoint("iris", Call::Score));
        let host_swagger = request("/swagger.json", Some("iris.ml.local"));
        assert_eq!(classify(&host_swagger, &d), endpoint("iris", Call::Swagger));
        let absolute = request("http://fraud.ml.local/score", Some("iris.ml.local"));
        assert_eq!(classify(&absolute, &d), endpoint("fraud", Call::Score));
        let stranger = request("/score", Some("iris.elsewhere.net"));
        assert_eq!(
            classify(&stranger, &d),
            Addressed::UnknownHost(Cow::Borrowed("iris.elsewhere.net"))
        );
        assert_eq!(
            classify(&request("/score", None), &d),
            Addressed::UnknownHost(Cow::Borrowed(""))
        );
        // Without domains the host form is not served at all.
        assert_eq!(
            classify(&by_host, &HostDomains::default()),
            Addressed::Elsewhere
        );
        for other in ["/healthz", "/score/", "/api/v1/endpoint/iris"] {
            assert_eq!(
                classify(&request(other, None), &d),
                Addressed::Elsewhere,
                "{other}"
            );
        }
    }
}
