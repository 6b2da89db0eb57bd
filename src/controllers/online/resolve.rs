//! Dereference for online deployments: the Environment (image, variables, inference routes) and
//! the InstanceType (resources, node selector, tolerations), from the operator's caches.
//!
//! Unlike a training job, a deployment follows its references: a new Environment version rolls
//! the deployment (the Deployment's rolling update keeps it serving).

use kube::{ResourceExt, runtime::reflector::Store};

pub use crate::runtime::resolve::Missing;
use crate::{
    api::{
        environment::{Environment, InferenceConfig},
        instance_type::{InstanceType, InstanceTypeSpec},
        online_deployment::OnlineDeployment,
    },
    runtime::resolve::{self as shared, Found, Refs, Waiter},
};

// The tests below name the default instance type through `use super::*`.
#[cfg(test)]
use crate::api::instance_type::DEFAULT_INSTANCE_TYPE;

pub use crate::contract::scoring_server::{
    LIVENESS_PATH, PORT as SERVING_PORT, READINESS_PATH, SCORING_PATH,
};

/// Everything a deployment's pods need from other objects: the shared [`shared::Resolved`] plus
/// the environment's inference routes.
/// Its fields read through to the shared ones (`resolved.image`); the environment's variables
/// are overridden by the deployment's own.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    pub shared: shared::Resolved,
    /// The environment's inference routes (custom containers).
    pub inference: Option<InferenceConfig>,
}

impl std::ops::Deref for Resolved {
    type Target = shared::Resolved;

    fn deref(&self) -> &shared::Resolved {
        &self.shared
    }
}

/// Where an instance serves: liveness, readiness and scoring routes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routes {
    pub port: i32,
    pub liveness_path: String,
    pub liveness_port: i32,
    pub readiness_path: String,
    pub readiness_port: i32,
    pub scoring_path: String,
}

/// The routes of `od`: the shipped scoring server's for a scoring script, else the
/// environment's inference routes, else Azure ML's defaults.
pub fn routes(od: &OnlineDeployment, inference: Option<&InferenceConfig>) -> Routes {
    match (&od.spec.code_configuration, inference) {
        (None, Some(ic)) => Routes {
            port: ic.scoring_route.port,
            liveness_path: ic.liveness_route.path.clone(),
            liveness_port: ic.liveness_route.port,
            readiness_path: ic.readiness_route.path.clone(),
            readiness_port: ic.readiness_route.port,
            scoring_path: ic.scoring_route.path.clone(),
        },
        (Some(_), _) => Routes {
            port: SERVING_PORT,
            liveness_path: LIVENESS_PATH.into(),
            liveness_port: SERVING_PORT,
            // Both scoring servers answer only once init() succeeded (Azure ML's probe path).
            readiness_path: READINESS_PATH.into(),
            readiness_port: SERVING_PORT,
            scoring_path: SCORING_PATH.into(),
        },
        (None, None) => Routes {
            port: SERVING_PORT,
            // A custom container's defaults (Azure ML's).
            liveness_path: "/".into(),
            liveness_port: SERVING_PORT,
            readiness_path: "/".into(),
            readiness_port: SERVING_PORT,
            scoring_path: SCORING_PATH.into(),
        },
    }
}

/// The Environment `od` names, from the cache (any version; [`resolve_from`] checks it).
pub fn find_environment(od: &OnlineDeployment, envs: &Store<Environment>) -> Option<Environment> {
    let found = shared::find_environment(
        envs,
        od.namespace().as_deref(),
        od.spec.environment.as_deref(),
    );
    found.map(|e| (*e).clone())
}

/// Looks up what `od` references in the caches.
pub fn resolve(
    od: &OnlineDeployment,
    envs: &Store<Environment>,
    instance_types: &Store<InstanceType>,
) -> Result<Resolved, Missing> {
    let env = find_environment(od, envs);
    let it = shared::find_instance_type(instance_types, od.spec.instance_type.as_deref());
    resolve_from(od, env.as_ref(), it.as_deref().map(|i| &i.spec))
}

/// The pure part of [`resolve`]: given the objects found (or not). The deployment's own
/// resources override the instance type's.
pub fn resolve_from(
    od: &OnlineDeployment,
    environment: Option<&Environment>,
    instance_type: Option<&InstanceTypeSpec>,
) -> Result<Resolved, Missing> {
    let spec = &od.spec;
    let refs = Refs {
        image: spec.image.as_deref(),
        environment: spec.environment.as_deref(),
        instance_type: spec.instance_type.as_deref(),
        resources: spec.resources.as_ref(),
        recorded: None,
        waiter: Waiter::Deployment,
    };
    let found = Found {
        environment,
        instance_type,
    };
    let r = shared::resolve(&refs, found)?;
    // An inline image has no environment, so no routes of one.
    let inference = match (&spec.image, environment, &r.environment_version) {
        (None, Some(e), Some(version)) => e.held(version).and_then(|v| v.inference_config),
        _ => None,
    };
    Ok(Resolved {
        shared: r,
        inference,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn od(spec: serde_json::Value) -> OnlineDeployment {
        serde_json::from_value(json!({
            "apiVersion": "mlcompute.io/v1alpha1", "kind": "OnlineDeployment",
            "metadata": { "name": "blue", "namespace": "ns" },
            "spec": spec,
        }))
        .unwrap()
    }

    fn env(version: &str) -> Environment {
        serde_json::from_value(json!({
            "apiVersion": "mlcompute.io/v1alpha1", "kind": "Environment",
            "metadata": { "name": "sklearn", "namespace": "ns" },
            "spec": { "image": "python:3.12-slim", "version": version,
                      "environmentVariables": { "A": "1" },
                      "inferenceConfig": {
                          "livenessRoute": { "port": 8000, "path": "/health" },
                          "readinessRoute": { "port": 8000, "path": "/ready" },
                          "scoringRoute": { "port": 8000, "path": "/predict" } } }
        }))
        .unwrap()
    }

    #[test]
    fn missing_references_have_reasons() {
        let d = od(json!({ "endpointName": "fraud", "environment": "sklearn:2" }));
        assert_eq!(
            resolve_from(&d, None, None).unwrap_err().reason,
            "EnvironmentNotFound"
        );
        assert_eq!(
            resolve_from(&d, Some(&env("1")), None).unwrap_err().reason,
            "EnvironmentVersionNotFound"
        );
        let d = od(json!({ "endpointName": "fraud", "image": "x", "instanceType": "gpu" }));
        assert_eq!(
            resolve_from(&d, None, None).unwrap_err().reason,
            "InstanceTypeNotFound"
        );
    }

    #[test]
    fn default_instance_type_and_resource_overrides() {
        let d = od(json!({ "endpointName": "fraud", "environment": "sklearn",
                           "resources": { "limits": { "cpu": "1" } } }));
        let r = resolve_from(&d, Some(&env("3")), None).unwrap();
        assert_eq!(r.environment_version.as_deref(), Some("3"));
        assert_eq!(r.instance_type_name, DEFAULT_INSTANCE_TYPE);
        assert_eq!(r.resources.limits["cpu"].0, "1");
        assert_eq!(r.resources.limits["memory"].0, "2Gi");
        assert_eq!(r.resources.requests["cpu"].0, "100m");
    }

    #[test]
    fn routes_follow_the_serving_style() {
        let custom = od(json!({ "endpointName": "fraud", "environment": "sklearn" }));
        let e = env("1");
        let r = routes(&custom, e.spec.inference_config.as_ref());
        assert_eq!((r.port, r.scoring_path.as_str()), (8000, "/predict"));
        let script = od(json!({ "endpointName": "fraud", "environment": "sklearn",
            "codeConfiguration": { "code": "configmap://code", "scoringScript": "score.py" } }));
        let r = routes(&script, e.spec.inference_config.as_ref());
        assert_eq!((r.port, r.readiness_path.as_str()), (5001, "/"));
    }
}
