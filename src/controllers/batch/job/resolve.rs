//! Dereference a BatchJob: endpoint → deployment (named, or the endpoint's default) → Environment and
//! InstanceType, and the output location. Pure; the caller passes what its caches hold.

use kube::ResourceExt;

use crate::{
    api::{
        batch_deployment::{BatchDeployment, BatchDeploymentSpec},
        batch_endpoint::BatchEndpoint,
        batch_job::BatchJob,
    },
    controllers::batch::deployment::resolve::{Missing, ResolvedDeployment},
};

/// Everything the Job is built from.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub deployment_name: String,
    pub deployment: BatchDeploymentSpec,
    pub resolved: ResolvedDeployment,
    /// `pvc://<claim>/<path>` the results go to.
    pub output_location: String,
}

/// The outcome of dereferencing a job.
#[derive(Clone, Debug, PartialEq)]
pub enum JobResolution {
    Ready(Box<Target>),
    /// Something referenced is missing; the job waits (Queued) until it appears.
    Waiting(Missing),
    /// The job cannot run as submitted (no default deployment, no output location, a deployment of
    /// another endpoint); it fails.
    Invalid(Missing),
}

/// The deployment the job runs on: the named one, else the endpoint's default.
pub fn deployment_name(job: &BatchJob, endpoint: &BatchEndpoint) -> Result<String, Missing> {
    job.spec
        .deployment_name
        .clone()
        .or_else(|| endpoint.spec.defaults.deployment_name.clone())
        .ok_or_else(|| Missing {
            reason: "NoDefaultDeployment",
            message: format!(
                "BatchEndpoint {:?} has no default deployment (defaults.deploymentName) and the job names none: no valid deployments to route to",
                endpoint.name_any()
            ),
        })
}

/// Where the results go: `outputPath`, else `<endpoint defaults.outputPath>/<job name>`.
pub fn output_location(job: &BatchJob, endpoint: &BatchEndpoint) -> Result<String, Missing> {
    if let Some(p) = &job.spec.output_path {
        return Ok(p.clone());
    }
    match &endpoint.spec.defaults.output_path {
        Some(base) => Ok(format!("{}/{}", base.trim_end_matches('/'), job.name_any())),
        None => Err(Missing {
            reason: "NoOutputPath",
            message: format!(
                "the job has no outputPath and BatchEndpoint {:?} has no defaults.outputPath",
                endpoint.name_any()
            ),
        }),
    }
}

/// Resolves `job` given its endpoint, the deployment named by [`deployment_name`] (if found) and
/// that deployment's own resolution.
pub fn resolve(
    job: &BatchJob,
    endpoint: Option<&BatchEndpoint>,
    lookup: impl FnOnce(&str) -> Option<(BatchDeployment, Result<ResolvedDeployment, Missing>)>,
) -> JobResolution {
    let Some(endpoint) = endpoint else {
        return JobResolution::Waiting(Missing {
            reason: "EndpointNotFound",
            message: format!(
                "BatchEndpoint {:?} does not exist in this namespace; the job starts once it is created",
                job.spec.endpoint_name
            ),
        });
    };
    let name = match deployment_name(job, endpoint) {
        Ok(n) => n,
        Err(m) => return JobResolution::Invalid(m),
    };
    let output_location = match output_location(job, endpoint) {
        Ok(o) => o,
        Err(m) => return JobResolution::Invalid(m),
    };
    let Some((deployment, resolution)) = lookup(&name) else {
        return JobResolution::Waiting(Missing {
            reason: "DeploymentNotFound",
            message: format!(
                "BatchDeployment {name:?} does not exist in this namespace; the job starts once it is created"
            ),
        });
    };
    if deployment.spec.endpoint_name != job.spec.endpoint_name {
        return JobResolution::Invalid(Missing {
            reason: "DeploymentOfAnotherEndpoint",
            message: format!(
                "BatchDeployment {name:?} belongs to endpoint {:?}, not {:?}",
                deployment.spec.endpoint_name, job.spec.endpoint_name
            ),
        });
    }
    match resolution {
        Ok(resolved) => JobResolution::Ready(Box::new(Target {
            deployment_name: name,
            deployment: deployment.spec,
            resolved,
            output_location,
        })),
        Err(m) => JobResolution::Waiting(m),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::controllers::batch::deployment::resolve::{self as dres, Found};

    pub fn endpoint(default: Option<&str>, output: Option<&str>) -> BatchEndpoint {
        serde_json::from_value(json!({
            "apiVersion": "mlcompute.io/v1alpha1", "kind": "BatchEndpoint",
            "metadata": { "name": "scorer", "namespace": "ns" },
            "spec": { "defaults": { "deploymentName": default, "outputPath": output } }
        }))
        .unwrap()
    }

    pub fn deployment(name: &str, endpoint: &str) -> BatchDeployment {
        serde_json::from_value(json!({
            "apiVersion": "mlcompute.io/v1alpha1", "kind": "BatchDeployment",
            "metadata": { "name": name, "namespace": "ns" },
            "spec": { "endpointName": endpoint, "model": "pvc://models/m1", "image": "python:3.12",
                      "codeConfiguration": { "code": "configmap://score", "scoringScript": "score.py" } }
        }))
        .unwrap()
    }

    pub fn job(deployment: Option<&str>) -> BatchJob {
        serde_json::from_value(json!({
            "apiVersion": "mlcompute.io/v1alpha1", "kind": "BatchJob",
            "metadata": { "name": "scorer-abc12", "namespace": "ns", "uid": "u1" },
            "spec": { "endpointName": "scorer", "deploymentName": deployment,
                      "input": { "path": "pvc://data/images" } }
        }))
        .unwrap()
    }

    fn lookup(name: &str) -> Option<(BatchDeployment, Result<ResolvedDeployment, Missing>)> {
        let d = deployment(name, if name == "stray" { "other" } else { "scorer" });
        let found = Found {
            endpoint_exists: true,
            ..Found::default()
        };
        let r = dres::resolve(&d.spec, found);
        (name != "gone").then_some((d, r))
    }

    fn reason(r: JobResolution) -> &'static str {
        match r {
            JobResolution::Ready(_) => "Ready",
            JobResolution::Waiting(m) => m.reason,
            JobResolution::Invalid(m) => m.reason,
        }
    }

    #[test]
    fn the_endpoint_default_applies_and_the_output_goes_under_the_default_path() {
        let e = endpoint(Some("blue"), Some("pvc://results/batch/"));
        let JobResolution::Ready(t) = resolve(&job(None), Some(&e), lookup) else {
            panic!("not ready")
        };
        assert_eq!(t.deployment_name, "blue");
        assert_eq!(t.output_location, "pvc://results/batch/scorer-abc12");
        let JobResolution::Ready(t) = resolve(&job(Some("green")), Some(&e), lookup) else {
            panic!("not ready")
        };
        assert_eq!(t.deployment_name, "green");
    }

    #[test]
    fn what_is_missing_has_a_reason() {
        let e = endpoint(None, Some("pvc://results/batch"));
        assert_eq!(
            reason(resolve(&job(None), None, lookup)),
            "EndpointNotFound"
        );
        assert!(matches!(
            resolve(&job(None), Some(&e), lookup),
            JobResolution::Invalid(Missing {
                reason: "NoDefaultDeployment",
                ..
            })
        ));
        assert_eq!(
            reason(resolve(&job(Some("gone")), Some(&e), lookup)),
            "DeploymentNotFound"
        );
        assert_eq!(
            reason(resolve(&job(Some("stray")), Some(&e), lookup)),
            "DeploymentOfAnotherEndpoint"
        );
        let no_output = endpoint(Some("blue"), None);
        assert_eq!(
            reason(resolve(&job(None), Some(&no_output), lookup)),
            "NoOutputPath"
        );
    }
}
