//! Submitting an invocation: the checks both `mlcompute batch invoke` and the router's HTTP invoke
//! make before creating a BatchJob, so a job that cannot run is refused with a reason instead of
//! being created and failing later.
//!
//! [`check`] is pure (endpoint, deployment, request in; the first problem out); [`submit`] reads
//! the two objects, checks, and creates the job.

use kube::{Api, Client, ResourceExt, api::PostParams};

use super::invoke::{self, InvokeRequest};
use crate::{
    api::{batch_deployment::BatchDeployment, batch_endpoint::BatchEndpoint, batch_job::BatchJob},
    runtime::children::MANAGER,
};

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
    let mut job = invoke::batch_job(endpoint, &invoke::generated_name(endpoint), request);
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
        serde_json::from_str(body).unwrap()
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
