//! Dereference a BatchDeployment: its endpoint, Environment (or inline image) and InstanceType. Pure:
//! the caller looks the objects up (in its caches) and passes what it found. Used by the
//! BatchDeployment controller for its status and by the BatchJob controller to build the Job.

pub use crate::runtime::resolve::{Missing, Resolved as ResolvedDeployment};
use crate::{
    api::{
        batch_deployment::BatchDeploymentSpec, environment::Environment,
        instance_type::InstanceTypeSpec,
    },
    runtime::resolve::{self as shared, Refs, Waiter},
};
// The tests below name the default instance type through `use super::*`.
#[cfg(test)]
use crate::api::instance_type::DEFAULT_INSTANCE_TYPE;

/// The objects the caller found for `spec`'s references.
#[derive(Clone, Copy, Debug, Default)]
pub struct Found<'a> {
    pub endpoint_exists: bool,
    pub environment: Option<&'a Environment>,
    pub instance_type: Option<&'a InstanceTypeSpec>,
}

/// Resolves `spec` against what was found: its endpoint first, then the shared Environment and
/// InstanceType rules. Its messages carry no "… starts once it is created" tail.
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
    let refs = Refs {
        image: spec.image.as_deref(),
        environment: spec.environment.as_deref(),
        instance_type: spec.resources.instance_type.as_deref(),
        resources: None,
        recorded: None,
        waiter: Waiter::Nothing,
    };
    let found = shared::Found {
        environment: found.environment,
        instance_type: found.instance_type,
    };
    shared::resolve(&refs, found)
}

/// The Environment name `spec` refers to, if any (for cache lookups).
pub fn environment_name(spec: &BatchDeploymentSpec) -> Option<String> {
    if spec.image.is_some() {
        return None;
    }
    shared::environment_name(spec.environment.as_deref())
}

/// The InstanceType name to look up: the named one, else `defaultinstancetype`.
pub fn instance_type_name(spec: &BatchDeploymentSpec) -> &str {
    shared::instance_type_name(spec.resources.instance_type.as_deref())
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
