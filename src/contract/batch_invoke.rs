//! The invocation of a batch endpoint: the body of the router's `POST
//! /api/v1/batch/{endpoint}/invoke`, and the BatchJob an invocation creates.
//!
//! Writers: a user (the HTTP body), `mlcompute batch invoke` and the router (the BatchJob, through
//! [`submit`]; the router annotates it [`INVOKED_BY`]). Readers: the router (the body), the
//! BatchJob controller (the job). Both writers make the same checks first ([`check`]), so a job
//! that cannot run is refused with a reason instead of being created and failing later.
//!
//! The body is user input, not a machine's: it is parsed strictly, and an unknown field anywhere
//! in it (a typo such as `overrides.miniBatchsize`) is refused with its path rather than ignored.

use kube::{Api, Client, ResourceExt, api::PostParams};
use serde::{Deserialize, Serialize};

use super::labels::MANAGER;
use crate::api::{
    batch_deployment::BatchDeployment,
    batch_endpoint::BatchEndpoint,
    batch_job::{BatchInput, BatchJob, BatchJobSpec, BatchOverrides},
};

/// The body of `POST /api/v1/batch/{endpoint}/invoke`: a BatchJob spec without the endpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InvokeRequest {
    pub input: BatchInput,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<BatchOverrides>,
}

/// An invoke body that is not an [`InvokeRequest`]; the message says which field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid request body: {0}")]
pub struct BodyError(pub String);

impl InvokeRequest {
    /// Parses a body (JSON), refusing unknown fields at every level.
    pub fn from_body(body: &[u8]) -> Result<Self, BodyError> {
        let given: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| BodyError(e.to_string()))?;
        let request: Self =
            serde_json::from_value(given.clone()).map_err(|e| BodyError(e.to_string()))?;
        // The nested API types accept unknown fields (the API server prunes them); a user's
        // typo must not be dropped silently, so every field given must be one that was read.
        let read = serde_json::to_value(&request).map_err(|e| BodyError(e.to_string()))?;
        match unread(&given, &read, "") {
            Some(path) => Err(BodyError(format!("unknown field `{path}`"))),
            None => Ok(request),
        }
    }
}

/// The first field of `given` (a path `a.b`) that `read` lacks; fields given as `null` are absent.
fn unread(given: &serde_json::Value, read: &serde_json::Value, at: &str) -> Option<String> {
    let (serde_json::Value::Object(given), serde_json::Value::Object(read)) = (given, read) else {
        return None;
    };
    given
        .iter()
        .filter(|(_, v)| !v.is_null())
        .find_map(|(k, v)| {
            let path = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            match read.get(k) {
                None => Some(path),
                Some(r) => unread(v, r, &path),
            }
        })
}

/// A generated job name: `<endpoint>-<5 random lowercase letters and digits>`.
pub fn generated_name(endpoint: &str) -> String {
    use rand_core::{OsRng, RngCore};
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bytes = [0u8; 5];
    OsRng.fill_bytes(&mut bytes);
    let suffix: String = bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    format!("{endpoint}-{suffix}")
}

/// The BatchJob an invocation creates (name generated; namespace left to the caller's API).
pub fn batch_job(endpoint: &str, name: &str, request: InvokeRequest) -> BatchJob {
    BatchJob::new(
        name,
        BatchJobSpec {
            endpoint_name: endpoint.into(),
            deployment_name: request.deployment_name,
            input: request.input,
            output_path: request.output_path,
            overrides: request.overrides,
            cancel: false,
        },
    )
}

/// Annotation on a job created over HTTP: the Kubernetes user that invoked the endpoint.
pub const INVOKED_BY: &str = "mlcompute.io/invoked-by";

/// Why an invocation was not submitted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("getting BatchEndpoint {namespace}/{name}")]
    GetEndpoint {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("BatchEndpoint {namespace}/{name} does not exist")]
    EndpointNotFound { namespace: String, name: String },
    #[error(
        "BatchEndpoint {namespace}/{endpoint} has no default deployment (defaults.deploymentName); name a deployment"
    )]
    NoDefaultDeployment { namespace: String, endpoint: String },
    #[error("getting BatchDeployment {namespace}/{name}")]
    GetDeployment {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("BatchDeployment {namespace}/{name} does not exist")]
    DeploymentNotFound { namespace: String, name: String },
    #[error("BatchDeployment {namespace}/{name} belongs to endpoint {owner:?}, not {endpoint:?}")]
    DeploymentOfAnotherEndpoint {
        namespace: String,
        name: String,
        owner: String,
        endpoint: String,
    },
    #[error(
        "BatchEndpoint {namespace}/{endpoint} has no defaults.outputPath; give an output path pvc://<claim>/<path>"
    )]
    NoOutputPath { namespace: String, endpoint: String },
    /// The API server refused the job (validation: the message says which field).
    #[error("the API server refused the BatchJob: {0}")]
    Refused(String),
    #[error("creating the BatchJob")]
    Create(#[source] kube::Error),
}

impl SubmitError {
    /// A bounded label for metrics and HTTP error reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::GetEndpoint { .. } | Self::GetDeployment { .. } | Self::Create(_) => "kube",
            Self::EndpointNotFound { .. } => "endpoint_not_found",
            Self::NoDefaultDeployment { .. } => "no_default_deployment",
            Self::DeploymentNotFound { .. } => "deployment_not_found",
            Self::DeploymentOfAnotherEndpoint { .. } => "deployment_of_another_endpoint",
            Self::NoOutputPath { .. } => "no_output_path",
            Self::Refused(_) => "invalid",
        }
    }

    /// Whether the caller can fix it by changing the request or the endpoint (as opposed to the
    /// cluster failing).
    pub fn is_caller_error(&self) -> bool {
        !matches!(
            self,
            Self::GetEndpoint { .. } | Self::GetDeployment { .. } | Self::Create(_)
        )
    }
}

/// The deployment a request runs on: the one it names, else the endpoint's default.
pub fn deployment_name<'a>(
    endpoint: &'a BatchEndpoint,
    request: &'a InvokeRequest,
) -> Option<&'a str> {
    request
        .deployment_name
        .as_deref()
        .or(endpoint.spec.defaults.deployment_name.as_deref())
}

/// The first reason `request` cannot run on `endpoint`, given the deployment it resolves to (pure).
pub fn check(
    endpoint: &BatchEndpoint,
    deployment: Option<&BatchDeployment>,
    request: &InvokeRequest,
) -> Result<(), SubmitError> {
    let namespace = endpoint.namespace().unwrap_or_default();
    let name = endpoint.name_any();
    let Some(wanted) = deployment_name(endpoint, request) else {
        return Err(SubmitError::NoDefaultDeployment {
            namespace,
            endpoint: name,
        });
    };
    match deployment {
        None => {
            return Err(SubmitError::DeploymentNotFound {
                namespace,
                name: wanted.into(),
            });
        }
        Some(d) if d.spec.endpoint_name != name => {
            return Err(SubmitError::DeploymentOfAnotherEndpoint {
                namespace,
                name: wanted.into(),
                owner: d.spec.endpoint_name.clone(),
                endpoint: name,
            });
        }
        Some(_) => {}
    }
    if request.output_path.is_none() && endpoint.spec.defaults.output_path.is_none() {
        return Err(SubmitError::NoOutputPath {
            namespace,
            endpoint: name,
        });
    }
    Ok(())
}

/// Checks `request` against endpoint `endpoint` in `namespace` and creates its BatchJob, annotated
/// with `invoked_by` when given. Returns the created job.
pub async fn submit(
    client: &Client,
    namespace: &str,
    endpoint: &str,
    request: InvokeRequest,
    invoked_by: Option<&str>,
) -> Result<BatchJob, SubmitError> {
    let endpoints: Api<BatchEndpoint> = Api::namespaced(client.clone(), namespace);
    let found = endpoints
        .get_opt(endpoint)
        .await
        .map_err(|source| SubmitError::GetEndpoint {
            namespace: namespace.into(),
            name: endpoint.into(),
            source,
        })?
        .ok_or_else(|| SubmitError::EndpointNotFound {
            namespace: namespace.into(),
            name: endpoint.into(),
        })?;
    submit_to(client, &found, request, invoked_by).await
}

/// [`submit`] to an endpoint already read (in its namespace).
pub async fn submit_to(
    client: &Client,
    found: &BatchEndpoint,
    request: InvokeRequest,
    invoked_by: Option<&str>,
) -> Result<BatchJob, SubmitError> {
    let namespace = found.namespace().unwrap_or_default();
    let namespace = namespace.as_str();
    let endpoint = found.name_any();
    let endpoint = endpoint.as_str();
    let deployment = match deployment_name(found, &request) {
        Some(name) => {
            let deployments: Api<BatchDeployment> = Api::namespaced(client.clone(), namespace);
            deployments
                .get_opt(name)
                .await
                .map_err(|source| SubmitError::GetDeployment {
                    namespace: namespace.into(),
                    name: name.into(),
                    source,
                })?
        }
        None => None,
    };
    check(found, deployment.as_ref(), &request)?;
    let mut job = batch_job(endpoint, &generated_name(endpoint), request);
    if let Some(user) = invoked_by {
        job.annotations_mut().insert(INVOKED_BY.into(), user.into());
    }
    let jobs: Api<BatchJob> = Api::namespaced(client.clone(), namespace);
    let pp = PostParams {
        field_manager: Some(MANAGER.into()),
        ..PostParams::default()
    };
    jobs.create(&pp, &job).await.map_err(|e| match e {
        kube::Error::Api(s) if s.code == 422 || s.code == 400 => SubmitError::Refused(s.message),
        other => SubmitError::Create(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::batch_job::BatchInputType;

    #[test]
    fn the_router_body_becomes_a_batch_job() {
        let body = br#"{"input":{"path":"pvc://data/images"},"deploymentName":"blue","overrides":{"miniBatchSize":4}}"#;
        let request = InvokeRequest::from_body(body).unwrap();
        let job = batch_job("scorer", &generated_name("scorer"), request);
        let name = job.metadata.name.clone().unwrap();
        assert!(name.starts_with("scorer-") && name.len() == "scorer-".len() + 5);
        assert_eq!(job.spec.endpoint_name, "scorer");
        assert_eq!(job.spec.deployment_name.as_deref(), Some("blue"));
        assert_eq!(job.spec.input.type_, BatchInputType::UriFolder);
        assert_eq!(job.spec.overrides.unwrap().mini_batch_size, Some(4));
    }

    #[test]
    fn the_body_is_strict_at_every_level_and_says_where() {
        let err = |body: &str| {
            InvokeRequest::from_body(body.as_bytes())
                .unwrap_err()
                .to_string()
        };
        assert!(err(r#"{"inputs":{}}"#).contains("unknown field `inputs`"));
        assert!(err(r#"{"input":{"path":"pvc://d/i","typ":"uri_file"}}"#).contains("`input.typ`"));
        let typo = err(r#"{"input":{"path":"pvc://d/i"},"overrides":{"miniBatchsize":4}}"#);
        assert_eq!(
            typo,
            "invalid request body: unknown field `overrides.miniBatchsize`"
        );
        assert!(
            err(r#"{"input":{"path":"pvc://d/i"},"overrides":{"timeout":30}}"#)
                .contains("invalid type")
        );
        assert!(err("not json").starts_with("invalid request body: "));
        // Explicit nulls and every known field are fine.
        InvokeRequest::from_body(
            br#"{"input":{"type":"uri_file","path":"pvc://d/f.csv"},"deploymentName":null,"outputPath":"pvc://o/x","overrides":{"miniBatchSize":1,"instanceCount":2,"maxRetries":0,"timeout":"30s","errorThreshold":-1,"outputFileName":"o.csv"}}"#,
        )
        .unwrap();
    }

    fn endpoint(yaml: &str) -> BatchEndpoint {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn deployment(endpoint: &str) -> BatchDeployment {
        serde_yaml::from_str(&format!(
            "apiVersion: mlcompute.io/v1alpha1\nkind: BatchDeployment\nmetadata: {{name: blue, namespace: ns}}\nspec:\n  endpointName: {endpoint}\n  model: pvc://models/m\n  codeConfiguration: {{code: configmap://code, scoringScript: score.py}}\n  environment: python:3.12-slim\n"
        ))
        .unwrap()
    }

    fn request(body: &str) -> InvokeRequest {
        InvokeRequest::from_body(body.as_bytes()).unwrap()
    }

    const WITH_DEFAULTS: &str = "apiVersion: mlcompute.io/v1alpha1\nkind: BatchEndpoint\nmetadata: {name: scorer, namespace: ns}\nspec:\n  defaults: {deploymentName: blue, outputPath: pvc://out/jobs}\n";
    const BARE: &str = "apiVersion: mlcompute.io/v1alpha1\nkind: BatchEndpoint\nmetadata: {name: scorer, namespace: ns}\nspec: {}\n";

    #[test]
    fn a_request_on_a_complete_endpoint_passes() {
        let e = endpoint(WITH_DEFAULTS);
        let r = request(r#"{"input":{"path":"pvc://data/in"}}"#);
        assert_eq!(deployment_name(&e, &r), Some("blue"));
        check(&e, Some(&deployment("scorer")), &r).unwrap();
    }

    #[test]
    fn each_missing_piece_has_its_reason() {
        let bare = endpoint(BARE);
        let r = request(r#"{"input":{"path":"pvc://data/in"}}"#);
        let err = check(&bare, None, &r).unwrap_err();
        assert_eq!(err.category(), "no_default_deployment");
        assert!(err.to_string().contains("defaults.deploymentName"), "{err}");

        let named = request(r#"{"input":{"path":"pvc://data/in"},"deploymentName":"blue"}"#);
        assert_eq!(
            check(&bare, None, &named).unwrap_err().category(),
            "deployment_not_found"
        );
        let err = check(&bare, Some(&deployment("other")), &named).unwrap_err();
        assert_eq!(err.category(), "deployment_of_another_endpoint");
        assert!(err.to_string().contains("\"other\""), "{err}");
        let err = check(&bare, Some(&deployment("scorer")), &named).unwrap_err();
        assert_eq!(err.category(), "no_output_path");
        assert!(err.is_caller_error());

        let with_output = request(
            r#"{"input":{"path":"pvc://data/in"},"deploymentName":"blue","outputPath":"pvc://out/x"}"#,
        );
        check(&bare, Some(&deployment("scorer")), &with_output).unwrap();
    }
}
