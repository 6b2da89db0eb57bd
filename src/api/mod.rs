//! The mlcompute API: every custom resource of group `mlcompute.io`, version `v1alpha1`.
//!
//! Each kind lives in a file of its own; `common` holds what several kinds share (data inputs and
//! outputs, conditions, the CEL rules and the pure parsers controllers use to read the same fields).
//! The CRD YAML under `crds/` and `docs/api.md` are generated from these types by `mlcompute crd`.

pub mod batch_deployment;
pub mod batch_endpoint;
pub mod batch_job;
pub mod common;
pub mod docs;
pub mod environment;
pub mod instance_type;
pub mod online_deployment;
pub mod online_endpoint;
pub mod security_context;
pub mod training_job;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSON, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

pub use batch_deployment::{BatchDeployment, BatchDeploymentSpec, BatchDeploymentStatus};
pub use batch_endpoint::{BatchEndpoint, BatchEndpointSpec, BatchEndpointStatus};
pub use batch_job::{BatchJob, BatchJobSpec, BatchJobStatus};
pub use common::{Condition, JobPhase};
pub use environment::{Environment, EnvironmentSpec, EnvironmentStatus};
pub use instance_type::{InstanceType, InstanceTypeSpec, InstanceTypeStatus};
pub use online_deployment::{OnlineDeployment, OnlineDeploymentSpec, OnlineDeploymentStatus};
pub use online_endpoint::{
    OnlineEndpoint, OnlineEndpointSpec, OnlineEndpointStatus, ProvisioningState,
};
pub use training_job::{TrainingJob, TrainingJobSpec, TrainingJobStatus};

/// API group of every mlcompute kind.
pub const GROUP: &str = "mlcompute.io";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";
/// `kubectl get <CATEGORY>` lists every mlcompute object.
pub const CATEGORY: &str = "mlcompute";

/// Every CRD of the API, in a stable order (the order of `crds/` and `docs/api.md`).
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    [
        Environment::crd(),
        InstanceType::crd(),
        TrainingJob::crd(),
        OnlineEndpoint::crd(),
        OnlineDeployment::crd(),
        BatchEndpoint::crd(),
        BatchDeployment::crd(),
        BatchJob::crd(),
    ]
    .into_iter()
    .map(tidy_descriptions)
    .map(default_status)
    .collect()
}

/// Every object starts with `status: {observedGeneration: 0}` (a schema default, so it is in the
/// API server's answer to the create, before any controller ran). kstatus reads an object without
/// status as Current, which would make a Flux `wait` pass before the operator has looked at it;
/// an observedGeneration behind the generation reads as InProgress, in Argo CD's health script
/// too ("Waiting for the mlcompute operator"). The operator's first status write replaces it.
fn default_status(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        let status = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("status"));
        if let Some(status) = status {
            status.default = Some(JSON(serde_json::json!({ "observedGeneration": 0 })));
        }
    }
    crd
}

/// Rewraps the doc-comment descriptions: rustdoc keeps the source line breaks, which `kubectl
/// explain` would print mid-sentence. Paragraph breaks stay.
fn tidy_descriptions(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            tidy_schema(schema);
        }
    }
    crd
}

fn tidy_schema(schema: &mut JSONSchemaProps) {
    if let Some(d) = &mut schema.description {
        *d = rewrap(d);
    }
    for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        tidy_schema(child);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = &mut schema.items {
        tidy_schema(items);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(values)) = &mut schema.additional_properties {
        tidy_schema(values);
    }
}

/// Joins the lines of each paragraph with single spaces.
pub fn rewrap(text: &str) -> String {
    text.split("\n\n")
        .map(|para| para.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|para| !para.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrap_keeps_paragraphs_and_joins_lines() {
        assert_eq!(rewrap("a\nb\n\nc  d\n"), "a b\n\nc d");
    }

    #[test]
    fn every_crd_is_in_the_group_and_category() {
        for crd in all_crds() {
            assert_eq!(crd.spec.group, GROUP);
            assert_eq!(crd.spec.versions[0].name, VERSION);
            assert_eq!(
                crd.spec.names.categories.as_deref(),
                Some(&[CATEGORY.to_string()][..])
            );
            assert!(
                crd.spec.versions[0]
                    .subresources
                    .as_ref()
                    .and_then(|s| s.status.as_ref())
                    .is_some()
            );
        }
    }

    #[test]
    fn every_object_starts_with_an_observed_generation_of_0() {
        for crd in all_crds() {
            let schema = crd.spec.versions[0]
                .schema
                .clone()
                .and_then(|s| s.open_api_v3_schema)
                .unwrap();
            let status = &schema.properties.as_ref().unwrap()["status"];
            assert_eq!(
                status.default.as_ref().map(|d| &d.0),
                Some(&serde_json::json!({ "observedGeneration": 0 })),
                "{}",
                crd.spec.names.kind
            );
            assert!(
                status
                    .properties
                    .as_ref()
                    .unwrap()
                    .contains_key("observedGeneration")
            );
        }
    }

    #[test]
    fn online_deployment_scales_through_instance_count() {
        let crd = OnlineDeployment::crd();
        let scale = crd.spec.versions[0]
            .subresources
            .clone()
            .unwrap()
            .scale
            .unwrap();
        assert_eq!(scale.spec_replicas_path, ".spec.instanceCount");
        assert_eq!(
            scale.label_selector_path.as_deref(),
            Some(".status.selector")
        );
    }
}
