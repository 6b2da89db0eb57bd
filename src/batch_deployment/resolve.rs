//! Dereference a BatchDeployment: its endpoint, Environment (or inline image) and InstanceType. Pure:
//! the caller looks the objects up (in its caches) and passes what it found. Used by the
//! BatchDeployment controller for its status and by the BatchJob controller to build the Job.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;

use crate::api::{
    batch_deployment::BatchDeploymentSpec,
    common::{EnvironmentRef, EnvironmentVersion, ResourceRequirements},
    environment::Environment,
    instance_type::{DEFAULT_INSTANCE_TYPE, InstanceTypeSpec},
};

/// What a deployment's Pods need from other objects.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedDeployment {
    pub image: String,
    pub environment_name: Option<String>,
    pub environment_version: Option<String>,
    pub image_pull_secrets: Vec<String>,
    /// The Environment's variables (the deployment's `settings.environmentVariables` win over them).
    pub environment_variables: BTreeMap<String, String>,
    pub instance_type_name: String,
    pub resources: ResourceRequirements,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
}

impl ResolvedDeployment {
    /// One line for a `Resolved` condition.
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

/// Something the deployment references that is not there (yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    /// PascalCase, for condition reasons and Events.
    pub reason: &'static str,
    pub message: String,
}

/// The objects the caller found for `spec`'s references.
#[derive(Clone, Copy, Debug, Default)]
pub struct Found<'a> {
    pub endpoint_exists: bool,
    pub environment: Option<&'a Environment>,
    pub instance_type: Option<&'a InstanceTypeSpec>,
}

/// Resolves `spec` against what was found.
pub fn resolve(
    spec: &BatchDeploymentSpec,
    found: Found<'_>,
) -> Result<ResolvedDeployment, Missing> {
    if !found.endpoint_exists {
        return Err(Missing {
            reason: "EndpointNotFound",
            message: format!(
                "BatchEndpoint {:?} does not exist in this namespace",
                spec.endpoint_name
            ),
        });
    }
    let (image, environment_name, environment_version, image_pull_secrets, environment_variables) =
        match (&spec.image, &spec.environment) {
            (Some(image), _) => (image.clone(), None, None, Vec::new(), BTreeMap::new()),
            (None, Some(reference)) => {
                let r = EnvironmentRef::parse(reference).ok_or_else(|| Missing {
                    reason: "InvalidEnvironmentReference",
                    message: format!(
                        "environment {reference:?} is not <name>, <name>:<version> or <name>@latest"
                    ),
                })?;
                let env = found.environment.ok_or_else(|| Missing {
                    reason: "EnvironmentNotFound",
                    message: format!("Environment {:?} does not exist in this namespace", r.name),
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
                )
            }
            (None, None) => {
                return Err(Missing {
                    reason: "NoImage",
                    message: "neither environment nor image is set".into(),
                });
            }
        };
    let named = spec.resources.instance_type.as_deref();
    let it = match (named, found.instance_type) {
        (_, Some(it)) => it.clone(),
        // As Azure ML: without any InstanceType objects the built-in default applies.
        (None, None) => InstanceTypeSpec::builtin_default(),
        (Some(name), None) => {
            return Err(Missing {
                reason: "InstanceTypeNotFound",
                message: format!("InstanceType {name:?} does not exist"),
            });
        }
    };
    let mut resources = it.resources.clone();
    // Requests left out default to the limit, as Kubernetes does for a container.
    for (k, v) in &it.resources.limits {
        resources
            .requests
            .entry(k.clone())
            .or_insert_with(|| v.clone());
    }
    Ok(ResolvedDeployment {
        image,
        environment_name,
        environment_version,
        image_pull_secrets,
        environment_variables,
        instance_type_name: named.unwrap_or(DEFAULT_INSTANCE_TYPE).to_string(),
        resources,
        node_selector: it.node_selector,
        tolerations: it.tolerations,
    })
}

/// The Environment name `spec` refers to, if any (for cache lookups).
pub fn environment_name(spec: &BatchDeploymentSpec) -> Option<String> {
    if spec.image.is_some() {
        return None;
    }
    spec.environment
        .as_deref()
        .and_then(EnvironmentRef::parse)
        .map(|r| r.name)
}

/// The InstanceType name to look up: the named one, else `defaultinstancetype`.
pub fn instance_type_name(spec: &BatchDeploymentSpec) -> &str {
    spec.resources
        .instance_type
        .as_deref()
        .unwrap_or(DEFAULT_INSTANCE_TYPE)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(extra: serde_json::Value) -> BatchDeploymentSpec {
        let mut base = json!({
            "endpointName": "scorer",
            "model": "pvc://models/m1",
            "codeConfiguration": { "code": "configmap://score", "scoringScript": "score.py" },
        });
        if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        serde_json::from_value(base).unwrap()
    }

    fn env(version: &str) -> Environment {
        Environment::new(
            "py",
            serde_json::from_value(json!({ "image": "python:3.12", "version": version, "environmentVariables": { "A": "1" } }))
                .unwrap(),
        )
    }

    #[test]
    fn a_registered_environment_and_the_builtin_instance_type_resolve() {
        let e = env("3");
        let found = Found {
            endpoint_exists: true,
            environment: Some(&e),
            instance_type: None,
        };
        let r = resolve(&spec(json!({ "environment": "py:3" })), found).unwrap();
        assert_eq!(r.image, "python:3.12");
        assert_eq!(r.environment_version.as_deref(), Some("3"));
        assert_eq!(r.environment_variables["A"], "1");
        assert_eq!(r.instance_type_name, DEFAULT_INSTANCE_TYPE);
        assert_eq!(r.resources.requests["cpu"].0, "100m");
    }

    #[test]
    fn missing_references_have_reasons() {
        let e = env("2");
        let s = spec(json!({ "environment": "py:3" }));
        let none = Found::default();
        assert_eq!(resolve(&s, none).unwrap_err().reason, "EndpointNotFound");
        let found = Found {
            endpoint_exists: true,
            ..Found::default()
        };
        assert_eq!(
            resolve(&s, found).unwrap_err().reason,
            "EnvironmentNotFound"
        );
        let found = Found {
            endpoint_exists: true,
            environment: Some(&e),
            instance_type: None,
        };
        assert_eq!(
            resolve(&s, found).unwrap_err().reason,
            "EnvironmentVersionNotFound"
        );
        let s = spec(json!({ "image": "python:3.12", "resources": { "instanceType": "gpu-big" } }));
        let found = Found {
            endpoint_exists: true,
            ..Found::default()
        };
        assert_eq!(
            resolve(&s, found).unwrap_err().reason,
            "InstanceTypeNotFound"
        );
        assert_eq!(environment_name(&s), None);
        assert_eq!(instance_type_name(&s), "gpu-big");
    }
}
