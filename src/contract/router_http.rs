//! The router's HTTP surface as others spell it: the paths it serves and the pinning header.
//!
//! Writers: the OnlineEndpoint controller (`status.scoringUri`, `status.openapiUri`, the
//! HTTPRoute's path match and header rules), the BatchEndpoint controller (`status.invokeUri`),
//! `mlcompute endpoint invoke`. Reader: the router, which serves exactly these paths.

/// The header that sends a request to one deployment whatever the split (Azure ML's).
pub const PINNING_HEADER: &str = "azureml-model-deployment";

const SCORE_PREFIX: &str = "/api/v1/endpoint/";
const SCORE_SUFFIX: &str = "/score";
const SWAGGER_SUFFIX: &str = "/swagger.json";
const INVOKE_PREFIX: &str = "/api/v1/batch/";
const INVOKE_SUFFIX: &str = "/invoke";

/// The scoring path of online endpoint `endpoint`.
pub fn scoring_path(endpoint: &str) -> String {
    format!("{SCORE_PREFIX}{endpoint}{SCORE_SUFFIX}")
}

/// The online endpoint a scoring path names.
pub fn scoring_endpoint(path: &str) -> Option<&str> {
    name_between(path, SCORE_PREFIX, SCORE_SUFFIX)
}

/// The OpenAPI (swagger) path of online endpoint `endpoint`, beside its scoring path (as on
/// Azure ML's Kubernetes router).
pub fn swagger_path(endpoint: &str) -> String {
    format!("{SCORE_PREFIX}{endpoint}{SWAGGER_SUFFIX}")
}

/// The online endpoint a swagger path names.
pub fn swagger_endpoint(path: &str) -> Option<&str> {
    name_between(path, SCORE_PREFIX, SWAGGER_SUFFIX)
}

/// The scoring path when the endpoint is named by the host (`<endpoint>.<domain>`), as a
/// managed endpoint's `scoring_uri` is called.
pub const HOST_SCORE_PATH: &str = SCORE_SUFFIX;

/// The swagger path when the endpoint is named by the host.
pub const HOST_SWAGGER_PATH: &str = SWAGGER_SUFFIX;

/// The invoke path of batch endpoint `endpoint`.
pub fn invoke_path(endpoint: &str) -> String {
    format!("{INVOKE_PREFIX}{endpoint}{INVOKE_SUFFIX}")
}

/// The batch endpoint an invoke path names.
pub fn invoke_endpoint(path: &str) -> Option<&str> {
    name_between(path, INVOKE_PREFIX, INVOKE_SUFFIX)
}

fn name_between<'a>(path: &'a str, prefix: &str, suffix: &str) -> Option<&'a str> {
    path.strip_prefix(prefix)?
        .strip_suffix(suffix)
        .filter(|name| !name.is_empty() && !name.contains('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip() {
        assert_eq!(scoring_path("iris"), "/api/v1/endpoint/iris/score");
        assert_eq!(scoring_endpoint(&scoring_path("iris")), Some("iris"));
        assert_eq!(scoring_endpoint("/api/v1/endpoint//score"), None);
        assert_eq!(scoring_endpoint("/api/v1/endpoint/a/b/score"), None);
        assert_eq!(swagger_path("iris"), "/api/v1/endpoint/iris/swagger.json");
        assert_eq!(swagger_endpoint(&swagger_path("iris")), Some("iris"));
        assert_eq!(swagger_endpoint(&scoring_path("iris")), None);
        assert_eq!(scoring_endpoint(&swagger_path("iris")), None);
        assert_eq!(invoke_path("mnist"), "/api/v1/batch/mnist/invoke");
        assert_eq!(invoke_endpoint(&invoke_path("mnist")), Some("mnist"));
        assert_eq!(invoke_endpoint("/api/v1/batch/mnist"), None);
        assert_eq!(invoke_endpoint("/api/v1/batch//invoke"), None);
        assert_eq!(invoke_endpoint("/api/v1/batch/a/b/invoke"), None);
    }
}
