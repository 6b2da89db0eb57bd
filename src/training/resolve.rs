//! Dereference: the Environment and InstanceType a job names, from the operator's caches.
//! Whatever is missing becomes a `Resolution::Missing` with a reason; the job waits for it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use kube::{ResourceExt, runtime::reflector::Store};

use crate::api::{
    common::{EnvironmentRef, EnvironmentVersion, ResourceRequirements},
    environment::Environment,
    instance_type::{DEFAULT_INSTANCE_TYPE, InstanceType, InstanceTypeSpec},
    training_job::TrainingJob,
};

/// Everything the Pods need from other objects.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    pub image: String,
    pub environment_name: Option<String>,
    pub environment_version: Option<String>,
    pub image_pull_secrets: Vec<String>,
    /// The environment's variables; the job's own override them.
    pub environment_variables: BTreeMap<String, String>,
    pub instance_type_name: String,
    pub resources: ResourceRequirements,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
}

impl Resolved {
    /// One line for the `Resolved` condition.
    pub fn summary(&self) -> String {
        match (&self.environment_name, &self.environment_version) {
            (Some(n), Some(v)) => {
                format!(
                    "environment {n}:{v} (image {}), instance type {}",
                    self.image, self.instance_type_name
                )
            }
            _ => format!(
                "image {}, instance type {}",
                self.image, self.instance_type_name
            ),
        }
    }
}

/// The outcome of dereferencing.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolution {
    Ready(Box<Resolved>),
    Missing {
        reason: &'static str,
        message: String,
    },
}

/// Looks up what `job` references. Once a job has started, its recorded image is kept, so a
/// changed or deleted Environment does not change a running job.
pub fn resolve(
    job: &TrainingJob,
    environments: &Store<Environment>,
    instance_types: &Store<InstanceType>,
) -> Resolution {
    let ns = job.namespace().unwrap_or_default();
    let env_objects: Vec<Environment> = match job
        .spec
        .environment
        .as_deref()
        .and_then(EnvironmentRef::parse)
    {
        Some(r) => environments
            .state()
            .iter()
            .filter(|e| e.namespace().as_deref() == Some(ns.as_str()) && e.name_any() == r.name)
            .map(|e| (**e).clone())
            .collect(),
        None => Vec::new(),
    };
    let it_name = job.spec.resources.instance_type.clone();
    let it = instance_types
        .state()
        .iter()
        .find(|i| i.name_any() == it_name.as_deref().unwrap_or(DEFAULT_INSTANCE_TYPE))
        .map(|i| i.spec.clone());
    resolve_from(job, env_objects.first(), it_name.as_deref(), it.as_ref())
}

/// The pure part of [`resolve`]: given the objects found (or not).
pub fn resolve_from(
    job: &TrainingJob,
    environment: Option<&Environment>,
    instance_type_name: Option<&str>,
    instance_type: Option<&InstanceTypeSpec>,
) -> Resolution {
    let status = job.status.clone().unwrap_or_default();
    let (image, env_name, env_version, pull_secrets, env_vars) = match (
        &job.spec.image,
        &job.spec.environment,
    ) {
        (Some(image), _) => (image.clone(), None, None, Vec::new(), BTreeMap::new()),
        (None, Some(reference)) => {
            let Some(r) = EnvironmentRef::parse(reference) else {
                return Resolution::Missing {
                    reason: "InvalidEnvironmentReference",
                    message: format!(
                        "environment {reference:?} is not <name>, <name>:<version> or <name>@latest"
                    ),
                };
            };
            match (environment, &status.image) {
                // Started before: run what was recorded, even if the Environment changed since.
                (_, Some(recorded)) => (
                    recorded.clone(),
                    status.environment_name.clone(),
                    status.environment_version.clone(),
                    environment
                        .map(|e| e.spec.image_pull_secrets.clone())
                        .unwrap_or_default(),
                    environment
                        .map(|e| e.spec.environment_variables.clone())
                        .unwrap_or_default(),
                ),
                (None, None) => {
                    return Resolution::Missing {
                        reason: "EnvironmentNotFound",
                        message: format!(
                            "Environment {:?} does not exist in this namespace; the job starts once it is created",
                            r.name
                        ),
                    };
                }
                (Some(env), None) => {
                    if let EnvironmentVersion::Exact(want) = &r.version
                        && *want != env.spec.version
                    {
                        return Resolution::Missing {
                            reason: "EnvironmentVersionNotFound",
                            message: format!(
                                "Environment {:?} is at version {:?}, not the requested {want:?}",
                                r.name, env.spec.version
                            ),
                        };
                    }
                    (
                        env.spec.image.clone(),
                        Some(r.name.clone()),
                        Some(env.spec.version.clone()),
                        env.spec.image_pull_secrets.clone(),
                        env.spec.environment_variables.clone(),
                    )
                }
            }
        }
        (None, None) => {
            return Resolution::Missing {
                reason: "NoImage",
                message: "neither environment nor image is set".into(),
            };
        }
    };
    let (it_name, it) = match (instance_type_name, instance_type) {
        (_, Some(it)) => (
            instance_type_name
                .unwrap_or(DEFAULT_INSTANCE_TYPE)
                .to_string(),
            it.clone(),
        ),
        // Like Azure ML, a cluster works without any InstanceType: the built-in default applies.
        (None, None) => (
            DEFAULT_INSTANCE_TYPE.to_string(),
            InstanceTypeSpec::builtin_default(),
        ),
        (Some(name), None) => {
            return Resolution::Missing {
                reason: "InstanceTypeNotFound",
                message: format!(
                    "InstanceType {name:?} does not exist; the job starts once it is created"
                ),
            };
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
    Resolution::Ready(Box::new(Resolved {
        image,
        environment_name: env_name,
        environment_version: env_version,
        image_pull_secrets: pull_secrets,
        environment_variables: env_vars,
        instance_type_name: it_name,
        resources,
        node_selector: it.node_selector.clone(),
        tolerations: it.tolerations.clone(),
    }))
}
