//! Dereference shared by the controllers that run Pods (training jobs, online and batch
//! deployments): an Environment reference (or inline image) and an InstanceType name become the
//! image, variables, resources and placement the Pods get, or a [`Missing`] with a condition
//! reason and message. One copy, so the three controllers cannot drift apart in what a reference
//! means or in what they tell the user.
//!
//! Pure: the lookups read the operator's caches (reflector stores), never the API server.
//!
//! An Environment object holds one version at a time, so `<name>` and `<name>@latest` take
//! whatever version the object holds now (the newest the cache has seen); `<name>:<version>`
//! resolves to that version while the object holds it, and afterwards to the record of it the
//! Environment controller keeps in `status.versions` (the last 20).

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::api::core::v1::Toleration;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::api::{
    common::{EnvironmentRef, EnvironmentVersion, ResourceRequirements},
    environment::{Environment, EnvironmentVersionRecord},
    instance_type::{DEFAULT_INSTANCE_TYPE, InstanceType, InstanceTypeSpec},
};

/// Something referenced that is not there (yet), or a reference that cannot be followed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    /// PascalCase, for condition reasons and Events.
    pub reason: &'static str,
    /// For people: becomes the condition's message and the Event's note.
    pub message: String,
}

/// Reasons of a reference that cannot be followed whatever else is created (an invalid spec the
/// API server let through): stalled until the spec changes. Every other [`Missing`] names an
/// object that may still appear (GitOps applies the objects of one sync in any order): waited for.
const INVALID: [&str; 2] = ["NoImage", "InvalidEnvironmentReference"];

/// Whether a [`Missing`] of `reason` needs a change of the spec (kstatus `Stalled`), rather than
/// an object that may still be created (`Reconciling`).
pub fn needs_spec_change(reason: &str) -> bool {
    INVALID.contains(&reason)
}

impl Missing {
    /// What the status says of it, by the kstatus conventions: waiting for the object, or
    /// stalled on a reference that cannot be followed ([`needs_spec_change`]).
    pub fn progress(&self) -> super::conditions::Progress {
        if needs_spec_change(self.reason) {
            super::conditions::Progress::stalled(self.reason, self.message.clone())
        } else {
            super::conditions::Progress::working(self.reason, self.message.clone())
        }
    }
}

/// Who waits for a missing object: the tail of the message tells the user what happens once it
/// is created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Waiter {
    /// "…; the job starts once it is created".
    Job,
    /// "…; the deployment starts once it is created".
    Deployment,
    /// No tail: the status says only what is missing.
    #[default]
    Nothing,
}

impl Waiter {
    fn tail(self) -> &'static str {
        match self {
            Waiter::Job => "; the job starts once it is created",
            Waiter::Deployment => "; the deployment starts once it is created",
            Waiter::Nothing => "",
        }
    }
}

/// What a started run recorded in its status. It is kept, so a changed or deleted Environment
/// does not change a run that has started (training jobs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded<'a> {
    pub image: &'a str,
    pub environment_name: Option<&'a str>,
    pub environment_version: Option<&'a str>,
}

/// What a spec references, borrowed from it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Refs<'a> {
    /// An inline image: wins over `environment`, which is then not followed.
    pub image: Option<&'a str>,
    /// `<name>`, `<name>:<version>` or `<name>@latest`.
    pub environment: Option<&'a str>,
    /// `None`: `defaultinstancetype`, else the built-in default.
    pub instance_type: Option<&'a str>,
    /// The referrer's own requests and limits, over the instance type's (online deployments).
    pub resources: Option<&'a ResourceRequirements>,
    /// See [`Recorded`].
    pub recorded: Option<Recorded<'a>>,
    pub waiter: Waiter,
}

/// The objects found for a [`Refs`]; `None`: not in the cache.
#[derive(Clone, Copy, Debug, Default)]
pub struct Found<'a> {
    pub environment: Option<&'a Environment>,
    pub instance_type: Option<&'a InstanceTypeSpec>,
}

/// Everything the Pods need from the referenced objects.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    pub image: String,
    pub environment_name: Option<String>,
    pub environment_version: Option<String>,
    pub image_pull_secrets: Vec<String>,
    /// The Environment's variables; the referrer's own win over them.
    pub environment_variables: BTreeMap<String, String>,
    pub instance_type_name: String,
    pub resources: ResourceRequirements,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
}

impl Resolved {
    /// One line for the `Resolved` condition.
    pub fn summary(&self) -> String {
        summary(
            &self.image,
            self.environment_name.as_deref(),
            self.environment_version.as_deref(),
            &self.instance_type_name,
        )
    }
}

/// The `Resolved` condition's line, for result types that carry more than [`Resolved`].
pub fn summary(
    image: &str,
    environment_name: Option<&str>,
    environment_version: Option<&str>,
    instance_type_name: &str,
) -> String {
    match (environment_name, environment_version) {
        (Some(n), Some(v)) => {
            format!("environment {n}:{v} (image {image}), instance type {instance_type_name}")
        }
        _ => format!("image {image}, instance type {instance_type_name}"),
    }
}

/// The name of the Environment `reference` points at; `None` when absent or malformed.
pub fn environment_name(reference: Option<&str>) -> Option<String> {
    reference.and_then(EnvironmentRef::parse).map(|r| r.name)
}

/// The InstanceType to look up: the named one, else `defaultinstancetype`.
pub fn instance_type_name(named: Option<&str>) -> &str {
    named.unwrap_or(DEFAULT_INSTANCE_TYPE)
}

/// The Environment `reference` names, in `namespace`, from the cache (whatever version it holds;
/// [`resolve`] checks the version).
pub fn find_environment(
    environments: &Store<Environment>,
    namespace: Option<&str>,
    reference: Option<&str>,
) -> Option<Arc<Environment>> {
    let name = environment_name(reference)?;
    let key = match namespace {
        Some(ns) => ObjectRef::new(&name).within(ns),
        None => ObjectRef::new(&name),
    };
    environments.get(&key)
}

/// The InstanceType `named` (else `defaultinstancetype`) from the cache.
pub fn find_instance_type(
    instance_types: &Store<InstanceType>,
    named: Option<&str>,
) -> Option<Arc<InstanceType>> {
    instance_types.get(&ObjectRef::new(instance_type_name(named)))
}

/// Resolves `refs` against what was found: the image first, then the instance type.
pub fn resolve(refs: &Refs<'_>, found: Found<'_>) -> Result<Resolved, Missing> {
    let image = image(refs, found.environment)?;
    let placement = placement(refs, found.instance_type)?;
    Ok(Resolved {
        image: image.image,
        environment_name: image.environment_name,
        environment_version: image.environment_version,
        image_pull_secrets: image.image_pull_secrets,
        environment_variables: image.environment_variables,
        instance_type_name: placement.instance_type_name,
        resources: placement.resources,
        node_selector: placement.node_selector,
        tolerations: placement.tolerations,
    })
}

/// The image half of [`Resolved`].
struct Image {
    image: String,
    environment_name: Option<String>,
    environment_version: Option<String>,
    image_pull_secrets: Vec<String>,
    environment_variables: BTreeMap<String, String>,
}

fn image(refs: &Refs<'_>, environment: Option<&Environment>) -> Result<Image, Missing> {
    let reference = match (refs.image, refs.environment) {
        (Some(image), _) => {
            return Ok(Image {
                image: image.to_string(),
                environment_name: None,
                environment_version: None,
                image_pull_secrets: Vec::new(),
                environment_variables: BTreeMap::new(),
            });
        }
        (None, Some(reference)) => reference,
        (None, None) => {
            return Err(Missing {
                reason: "NoImage",
                message: "neither environment nor image is set".into(),
            });
        }
    };
    let r = EnvironmentRef::parse(reference).ok_or_else(|| Missing {
        reason: "InvalidEnvironmentReference",
        message: format!(
            "environment {reference:?} is not <name>, <name>:<version> or <name>@latest"
        ),
    })?;
    if let Some(recorded) = refs.recorded {
        // Started before: run what was recorded, even if the Environment changed since.
        return Ok(Image {
            image: recorded.image.to_string(),
            environment_name: recorded.environment_name.map(str::to_string),
            environment_version: recorded.environment_version.map(str::to_string),
            image_pull_secrets: environment
                .map(|e| e.spec.image_pull_secrets.clone())
                .unwrap_or_default(),
            environment_variables: environment
                .map(|e| e.spec.environment_variables.clone())
                .unwrap_or_default(),
        });
    }
    let env = environment.ok_or_else(|| Missing {
        reason: "EnvironmentNotFound",
        message: format!(
            "Environment {:?} does not exist in this namespace{}",
            r.name,
            refs.waiter.tail()
        ),
    })?;
    let held = match &r.version {
        EnvironmentVersion::Exact(want) => env.held(want).ok_or_else(|| Missing {
            reason: "EnvironmentVersionNotFound",
            message: format!(
                "Environment {:?} has no version {want:?} (it is at {:?}; versions it has held: {})",
                r.name,
                env.spec.version,
                env.versions_held().join(", ")
            ),
        })?,
        _ => EnvironmentVersionRecord::of(&env.spec),
    };
    Ok(Image {
        image: held.image,
        environment_name: Some(r.name),
        environment_version: Some(held.version),
        image_pull_secrets: held.image_pull_secrets,
        environment_variables: held.environment_variables,
    })
}

/// The instance-type half of [`Resolved`].
struct Placement {
    instance_type_name: String,
    resources: ResourceRequirements,
    node_selector: BTreeMap<String, String>,
    tolerations: Vec<Toleration>,
}

fn placement(refs: &Refs<'_>, found: Option<&InstanceTypeSpec>) -> Result<Placement, Missing> {
    let it = match (refs.instance_type, found) {
        (_, Some(it)) => it.clone(),
        // As in Azure ML, a cluster works without any InstanceType: the built-in default applies.
        (None, None) => InstanceTypeSpec::builtin_default(),
        (Some(name), None) => {
            return Err(Missing {
                reason: "InstanceTypeNotFound",
                message: format!("InstanceType {name:?} does not exist{}", refs.waiter.tail()),
            });
        }
    };
    let mut resources = it.resources;
    if let Some(own) = refs.resources {
        resources.requests.extend(own.requests.clone());
        resources.limits.extend(own.limits.clone());
    }
    // Requests left out default to the limit, as Kubernetes does for a container.
    for (k, v) in &resources.limits {
        resources
            .requests
            .entry(k.clone())
            .or_insert_with(|| v.clone());
    }
    Ok(Placement {
        instance_type_name: instance_type_name(refs.instance_type).to_string(),
        resources,
        node_selector: it.node_selector,
        tolerations: it.tolerations,
    })
}

#[cfg(test)]
mod tests {
    use kube::runtime::{reflector, watcher};

    use super::*;

    fn environment(yaml: &str) -> Environment {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn torch(version: &str) -> Environment {
        environment(&format!(
            r#"
apiVersion: mlcompute.io/v1alpha1
kind: Environment
metadata: {{ name: torch, namespace: ns }}
spec:
  image: pytorch:{version}
  version: "{version}"
  imagePullSecrets: [registry]
  environmentVariables: {{ A: "1" }}
"#
        ))
    }

    fn gpu() -> InstanceType {
        serde_yaml::from_str(
            r#"
apiVersion: mlcompute.io/v1alpha1
kind: InstanceType
metadata: { name: gpu }
spec:
  resources:
    limits: { cpu: "8", nvidia.com/gpu: "1" }
    requests: { cpu: "4" }
  nodeSelector: { pool: gpu }
  tolerations: [{ key: nvidia.com/gpu, operator: Exists, effect: NoSchedule }]
"#,
        )
        .unwrap()
    }

    fn stores(
        envs: &[Environment],
        its: &[InstanceType],
    ) -> (Store<Environment>, Store<InstanceType>) {
        let (env_store, mut w) = reflector::store();
        for e in envs {
            w.apply_watcher_event(&watcher::Event::Apply(e.clone()));
        }
        let (it_store, mut w) = reflector::store();
        for i in its {
            w.apply_watcher_event(&watcher::Event::Apply(i.clone()));
        }
        (env_store, it_store)
    }

    /// Looks `refs` up in the stores (namespace `ns`) and resolves them.
    fn from_stores(
        refs: &Refs<'_>,
        envs: &Store<Environment>,
        its: &Store<InstanceType>,
    ) -> Result<Resolved, Missing> {
        let env = find_environment(envs, Some("ns"), refs.environment);
        let it = find_instance_type(its, refs.instance_type);
        let found = Found {
            environment: env.as_deref(),
            instance_type: it.as_deref().map(|i| &i.spec),
        };
        resolve(refs, found)
    }

    fn refs(environment: &str) -> Refs<'_> {
        Refs {
            environment: Some(environment),
            ..Refs::default()
        }
    }

    #[test]
    fn a_name_and_a_name_with_its_version_resolve() {
        let (envs, its) = stores(&[torch("2")], &[]);
        for reference in ["torch", "torch:2"] {
            let r = from_stores(&refs(reference), &envs, &its).unwrap();
            assert_eq!(r.image, "pytorch:2");
            assert_eq!(r.environment_name.as_deref(), Some("torch"));
            assert_eq!(r.environment_version.as_deref(), Some("2"));
            assert_eq!(r.image_pull_secrets, ["registry"]);
            assert_eq!(r.environment_variables["A"], "1");
            assert_eq!(
                r.summary(),
                "environment torch:2 (image pytorch:2), instance type defaultinstancetype"
            );
        }
    }

    #[test]
    fn latest_takes_the_newest_version_the_cache_holds() {
        let (envs, its) = stores(&[torch("1"), torch("3")], &[]);
        let r = from_stores(&refs("torch@latest"), &envs, &its).unwrap();
        assert_eq!(
            (r.image.as_str(), r.environment_version.as_deref()),
            ("pytorch:3", Some("3"))
        );
        // The cache's object never recorded version 1 (no status): it cannot be named.
        let old = from_stores(&refs("torch:1"), &envs, &its).unwrap_err();
        assert_eq!(old.reason, "EnvironmentVersionNotFound");
        assert_eq!(
            old.message,
            r#"Environment "torch" has no version "1" (it is at "3"; versions it has held: 3)"#
        );
    }

    #[test]
    fn a_pinned_version_the_environment_held_before_still_resolves() {
        let mut env = torch("3");
        env.status = Some(crate::api::environment::EnvironmentStatus {
            versions: vec![
                EnvironmentVersionRecord {
                    environment_variables: BTreeMap::from([("A".into(), "old".into())]),
                    ..EnvironmentVersionRecord::of(&torch("1").spec)
                },
                EnvironmentVersionRecord::of(&env.spec),
            ],
            ..Default::default()
        });
        let (envs, its) = stores(&[env], &[]);
        let old = from_stores(&refs("torch:1"), &envs, &its).unwrap();
        assert_eq!(
            (old.image.as_str(), old.environment_version.as_deref()),
            ("pytorch:1", Some("1"))
        );
        assert_eq!(old.environment_variables["A"], "old");
        let current = from_stores(&refs("torch"), &envs, &its).unwrap();
        assert_eq!(current.image, "pytorch:3");
        let missing = from_stores(&refs("torch:2"), &envs, &its).unwrap_err();
        assert!(
            missing.message.ends_with("versions it has held: 1, 3)"),
            "{}",
            missing.message
        );
    }

    #[test]
    fn an_inline_image_wins_and_needs_no_environment() {
        let (envs, its) = stores(&[], &[]);
        let inline = Refs {
            image: Some("python:3.12"),
            environment: Some("torch:9"),
            ..Refs::default()
        };
        let r = from_stores(&inline, &envs, &its).unwrap();
        assert_eq!(r.image, "python:3.12");
        assert_eq!(r.environment_name, None);
        assert!(r.environment_variables.is_empty());
        assert_eq!(
            r.summary(),
            "image python:3.12, instance type defaultinstancetype"
        );
    }

    #[test]
    fn a_missing_environment_says_who_waits() {
        let (envs, its) = stores(&[torch("1")], &[]);
        let cases = [
            (Waiter::Job, "; the job starts once it is created"),
            (
                Waiter::Deployment,
                "; the deployment starts once it is created",
            ),
            (Waiter::Nothing, ""),
        ];
        for (waiter, tail) in cases {
            let r = Refs {
                waiter,
                ..refs("tf")
            };
            let m = from_stores(&r, &envs, &its).unwrap_err();
            assert_eq!(m.reason, "EnvironmentNotFound");
            assert_eq!(
                m.message,
                format!("Environment \"tf\" does not exist in this namespace{tail}")
            );
        }
        let other_namespace = find_environment(&envs, Some("other"), Some("torch"));
        assert!(other_namespace.is_none());
        let m = from_stores(&refs("Torch:1"), &envs, &its).unwrap_err();
        assert_eq!(m.reason, "InvalidEnvironmentReference");
        let m = from_stores(&Refs::default(), &envs, &its).unwrap_err();
        assert_eq!(m.reason, "NoImage");
    }

    #[test]
    fn a_recorded_image_is_kept() {
        let refs = Refs {
            recorded: Some(Recorded {
                image: "pytorch:1",
                environment_name: Some("torch"),
                environment_version: Some("1"),
            }),
            ..refs("torch:1")
        };
        let (envs, its) = stores(&[torch("2")], &[]);
        let r = from_stores(&refs, &envs, &its).unwrap();
        assert_eq!(r.image, "pytorch:1");
        assert_eq!(r.environment_version.as_deref(), Some("1"));
        assert_eq!(r.image_pull_secrets, ["registry"]);
        let (envs, its) = stores(&[], &[]);
        let r = from_stores(&refs, &envs, &its).unwrap();
        assert_eq!(r.image, "pytorch:1");
        assert!(r.image_pull_secrets.is_empty());
    }

    #[test]
    fn a_named_instance_type_places_the_pods() {
        let (envs, its) = stores(&[torch("1")], &[gpu()]);
        let r = Refs {
            instance_type: Some("gpu"),
            ..refs("torch")
        };
        let r = from_stores(&r, &envs, &its).unwrap();
        assert_eq!(r.instance_type_name, "gpu");
        assert_eq!(r.resources.requests["cpu"].0, "4");
        assert_eq!(
            r.resources.requests["nvidia.com/gpu"].0, "1",
            "requests left out default to the limit"
        );
        assert_eq!(r.node_selector["pool"], "gpu");
        assert_eq!(r.tolerations.len(), 1);
    }

    #[test]
    fn a_missing_instance_type_says_who_waits() {
        let (envs, its) = stores(&[torch("1")], &[gpu()]);
        let r = Refs {
            instance_type: Some("gpu-big"),
            waiter: Waiter::Job,
            ..refs("torch")
        };
        let m = from_stores(&r, &envs, &its).unwrap_err();
        assert_eq!(m.reason, "InstanceTypeNotFound");
        assert_eq!(
            m.message,
            "InstanceType \"gpu-big\" does not exist; the job starts once it is created"
        );
    }

    #[test]
    fn the_default_instance_type_is_the_cached_one_else_the_builtin() {
        let (envs, its) = stores(&[torch("1")], &[]);
        let r = from_stores(&refs("torch"), &envs, &its).unwrap();
        assert_eq!(r.instance_type_name, DEFAULT_INSTANCE_TYPE);
        let builtin = InstanceTypeSpec::builtin_default();
        assert_eq!(r.resources.limits, builtin.resources.limits);
        let mut custom = gpu();
        custom.metadata.name = Some(DEFAULT_INSTANCE_TYPE.into());
        let (envs, its) = stores(&[torch("1")], &[custom]);
        let r = from_stores(&refs("torch"), &envs, &its).unwrap();
        assert_eq!(r.instance_type_name, DEFAULT_INSTANCE_TYPE);
        assert_eq!(r.node_selector["pool"], "gpu");
    }

    #[test]
    fn own_resources_override_the_instance_type_before_requests_default() {
        let own: ResourceRequirements = serde_yaml::from_str("limits: { cpu: \"2\" }").unwrap();
        let r = Refs {
            instance_type: Some("gpu"),
            resources: Some(&own),
            ..refs("torch")
        };
        let (envs, its) = stores(&[torch("1")], &[gpu()]);
        let r = from_stores(&r, &envs, &its).unwrap();
        assert_eq!(r.resources.limits["cpu"].0, "2");
        assert_eq!(r.resources.requests["cpu"].0, "4", "a request given stays");
    }
}
