//! Dereference: the Environment and InstanceType a job names, from the operator's caches.
//! Whatever is missing becomes a `Resolution::Missing` with a reason; the job waits for it.
//! The rules are shared with the other controllers ([`crate::runtime::resolve`]); what is the
//! job's own is that a started job keeps the image it recorded.

use kube::{ResourceExt, runtime::reflector::Store};

pub use crate::runtime::resolve::Resolved;
use crate::{
    api::{
        environment::Environment,
        instance_type::{InstanceType, InstanceTypeSpec},
        training_job::TrainingJob,
    },
    runtime::resolve::{self as shared, Found, Recorded, Refs, Waiter},
};

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
    let env = shared::find_environment(environments, Some(&ns), job.spec.environment.as_deref());
    let it_name = job.spec.resources.instance_type.as_deref();
    let it = shared::find_instance_type(instance_types, it_name);
    resolve_from(job, env.as_deref(), it_name, it.as_deref().map(|i| &i.spec))
}

/// The pure part of [`resolve`]: given the objects found (or not).
pub fn resolve_from(
    job: &TrainingJob,
    environment: Option<&Environment>,
    instance_type_name: Option<&str>,
    instance_type: Option<&InstanceTypeSpec>,
) -> Resolution {
    let status = job.status.as_ref();
    let refs = Refs {
        image: job.spec.image.as_deref(),
        environment: job.spec.environment.as_deref(),
        instance_type: instance_type_name,
        resources: None,
        recorded: status.and_then(|s| {
            Some(Recorded {
                image: s.image.as_deref()?,
                environment_name: s.environment_name.as_deref(),
                environment_version: s.environment_version.as_deref(),
            })
        }),
        waiter: Waiter::Job,
    };
    let found = Found {
        environment,
        instance_type,
    };
    match shared::resolve(&refs, found) {
        Ok(r) => Resolution::Ready(Box::new(r)),
        Err(m) => Resolution::Missing {
            reason: m.reason,
            message: m.message,
        },
    }
}
