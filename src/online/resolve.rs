//! Dereference for online deployments: the Environment (image, variables, inference routes) and
//! the InstanceType (resources, node selector, tolerations), from the operator's caches.
//!
//! Unlike a training job, a deployment follows its references: a new Environment version rolls
//! the deployment (the Deployment's rolling update keeps it serving).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use kube::{ResourceExt, runtime::reflector::Store};

use crate::api::{
    common::{EnvironmentRef, EnvironmentVersion, ResourceRequirements},
    environment::{Environment, InferenceConfig},
    instance_type::{DEFAULT_INSTANCE_TYPE, InstanceType, InstanceTypeSpec},
    online_deployment::OnlineDeployment,
};

/// Azure ML's inference server port, also the default port of a custom container.
pub const SERVING_PORT: i32 = 5001;
/// Azure ML's scoring path.
pub const SCORING_PATH: &str = "/score";

/// Everything a deployment's pods need from other objects.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    pub image: String,
    pub environment_name: Option<String>,
    pub environment_version: Option<String>,
    pub image_pull_secrets: Vec<String>,
    /// The environment's variables; the deployment's own override them.
    pub environment_variables: BTreeMap<String, String>,
    /// The environment's inference routes (custom containers).
    pub inference: Option<InferenceConfig>,
    pub instance_type_name: String,
    pub resources: ResourceRequirements,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
}

impl Resolved {
    /// One line for the `Resolved` condition.
    pub fn summary(&self) -> String {
        match (&self.environment_name, &self.environment_version) {
            (Some(n), Some(v)) => format!(
                "environment {n}:{v} (image {}), instance type {}",
                self.image, self.instance_type_name
            ),
            _ => format!(
                "image {}, instance type {}",
                self.image, self.instance_type_name
            ),
        }
    }
}

/// Why a reference could not be followed: a condition reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    pub reason: &'static str,
    pub message: String,
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
            liveness_path: "/".into(),
            liveness_port: SERVING_PORT,
            // The shipped server answers /readyz only after init() succeeded.
            readiness_path: "/readyz".into(),
            readiness_port: SERVING_PORT,
            scoring_path: SCORING_PATH.into(),
        },
        (None, None) => Routes {
            port: SERVING_PORT,
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
    let r = EnvironmentRef::parse(od.spec.environment.as_deref()?)?;
    let ns = od.namespace();
    envs.state()
        .iter()
        .find(|e| e.namespace() == ns && e.name_any() == r.name)
        .map(|e| (**e).clone())
}

/// Looks up what `od` references in the caches.
pub fn resolve(
    od: &OnlineDeployment,
    envs: &Store<Environment>,
    instance_types: &Store<InstanceType>,
) -> Result<Resolved, Missing> {
    let env = find_environment(od, envs);
    let want = od
        .spec
        .instance_type
        .as_deref()
        .unwrap_or(DEFAULT_INSTANCE_TYPE);
    let it = instance_types
        .state()
        .iter()
        .find(|i| i.name_any() == want)
        .map(|i| i.spec.clone());
    resolve_from(od, env.as_ref(), it.as_ref())
}

/// The pure part of [`resolve`]: given the objects found (or not).
pub fn resolve_from(
    od: &OnlineDeployment,
    environment: Option<&Environment>,
    instance_type: Option<&InstanceTypeSpec>,
) -> Result<Resolved, Missing> {
    let spec = &od.spec;
    let (image, env_name, env_version, pull_secrets, env_vars, inference) = match (
        &spec.image,
        &spec.environment,
    ) {
        (Some(image), _) => (image.clone(), None, None, vec![], BTreeMap::new(), None),
        (None, Some(reference)) => {
            let r = EnvironmentRef::parse(reference).ok_or_else(|| Missing {
                reason: "InvalidEnvironmentReference",
                message: format!(
                    "environment {reference:?} is not <name>, <name>:<version> or <name>@latest"
                ),
            })?;
            let env = environment.ok_or_else(|| Missing {
                    reason: "EnvironmentNotFound",
                    message: format!(
                        "Environment {:?} does not exist in this namespace; the deployment starts once it is created",
                        r.name
                    ),
                })?;
            if let EnvironmentVersion::Exact(want) = &r.version
                && *want != env.spec.version
            {
                return Err(Missing {
                    reason: "EnvironmentVersionNotFound",
                    message: format!(
                        "Environment {:?} is at version {:?}, not the requested {want:?}",
                        r.name, env.spec.version
                    ),
                });
            }
            (
                env.spec.image.clone(),
                Some(r.name),
                Some(env.spec.version.clone()),
                env.spec.image_pull_secrets.clone(),
                env.spec.environment_variables.clone(),
                env.spec.inference_config.clone(),
            )
        }
        (None, None) => {
            return Err(Missing {
                reason: "NoImage",
                message: "neither environment nor image is set".into(),
            });
        }
    };
    let it_name = spec
        .instance_type
        .clone()
        .unwrap_or_else(|| DEFAULT_INSTANCE_TYPE.to_string());
    let it = match (spec.instance_type.is_some(), instance_type) {
        (_, Some(it)) => it.clone(),
        // As in Azure ML, a cluster works without any InstanceType: the built-in default applies.
        (false, None) => InstanceTypeSpec::builtin_default(),
        (true, None) => {
            return Err(Missing {
                reason: "InstanceTypeNotFound",
                message: format!(
                    "InstanceType {it_name:?} does not exist; the deployment starts once it is created"
                ),
            });
        }
    };
    let mut resources = it.resources.clone();
    if let Some(own) = &spec.resources {
        resources.requests.extend(own.requests.clone());
        resources.limits.extend(own.limits.clone());
    }
    // Requests left out default to the limit, as Kubernetes does for a container.
    for (k, v) in resources.limits.clone() {
        resources.requests.entry(k).or_insert(v);
    }
    Ok(Resolved {
        image,
        environment_name: env_name,
        environment_version: env_version,
        image_pull_secrets: pull_secrets,
        environment_variables: env_vars,
        inference,
        instance_type_name: it_name,
        resources,
        node_selector: it.node_selector.clone(),
        tolerations: it.tolerations.clone(),
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
        assert_eq!((r.port, r.readiness_path.as_str()), (5001, "/readyz"));
    }
}
