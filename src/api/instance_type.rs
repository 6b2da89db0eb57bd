//! `InstanceType` (cluster-scoped): a named instance size and the nodes it may run on.

use std::collections::BTreeMap;

use k8s_openapi::{api::core::v1::Toleration, apimachinery::pkg::api::resource::Quantity};
use kube::{CustomResource, KubeSchema};
use schemars::{Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use super::common::{
    Condition, LABEL_KEY_PATTERN, LABEL_VALUE_PATTERN, ResourceRequirements, label_map, rules,
};

/// The instance type used when a job or deployment names none, as in Azure ML. Creating an
/// InstanceType with this name overrides [`InstanceTypeSpec::builtin_default`].
pub const DEFAULT_INSTANCE_TYPE: &str = "defaultinstancetype";

/// The extended resource name of NVIDIA GPUs.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// A named size for one instance (Pod): CPU, memory and GPU requests and limits, plus the node
/// selector and tolerations that place it on a node pool (GPU, spot, low priority).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "mlcompute.io",
    version = "v1alpha1",
    kind = "InstanceType",
    status = "InstanceTypeStatus",
    shortname = "it",
    category = "mlcompute",
    doc = "A named instance size (CPU, memory, GPU) and the node pool it runs on. Cluster-scoped.",
    printcolumn(name = "CPU", type_ = "string", json_path = ".spec.resources.limits.cpu"),
    printcolumn(name = "Memory", type_ = "string", json_path = ".spec.resources.limits.memory"),
    printcolumn(name = "GPU", type_ = "string", json_path = ".spec.resources.limits.nvidia\\.com/gpu"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = rules::object_name_dns_label("InstanceType", 63, "jobs and deployments refer to it by instanceType, which is a DNS label"),
)]
#[serde(rename_all = "camelCase")]
pub struct InstanceTypeSpec {
    /// Free-text description, e.g. the node pool it targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// Node labels an instance's node must carry (ANDed with the operator's own node selector).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = label_map::<32>)]
    #[x_kube(validation = rules::labels("nodeSelector"))]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the instances tolerate, e.g. a spot or GPU pool's `NoSchedule` taint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "tolerations_schema")]
    pub tolerations: Vec<Toleration>,
    /// Requests and limits per instance. `limits` must set `cpu` and `memory`; GPUs are set in
    /// `limits` only, as whole numbers. Requests omitted for a resource default to its limit.
    #[x_kube(
        validation = Rule::new("has(self.limits) && 'cpu' in self.limits && 'memory' in self.limits").message("resources.limits must set cpu and memory"),
        validation = Rule::new("!has(self.requests) || !('nvidia.com/gpu' in self.requests)").message("nvidia.com/gpu goes in resources.limits only (Kubernetes requests the same amount)"),
        validation = Rule::new("!has(self.limits) || !('nvidia.com/gpu' in self.limits) || string(self.limits['nvidia.com/gpu']).matches(r'^[0-9]+$')").message("nvidia.com/gpu must be a whole number of GPUs"),
        validation = Rule::new("!has(self.requests) || !has(self.limits) || self.requests.all(k, !(k in self.limits) || !isQuantity(string(self.requests[k])) || !isQuantity(string(self.limits[k])) || quantity(string(self.requests[k])).compareTo(quantity(string(self.limits[k]))) <= 0)")
            .message("each request must be at most the matching limit"),
    )]
    pub resources: ResourceRequirements,
}

/// The tolerations list: Kubernetes' Toleration fields with bounded lengths (so the CEL rules'
/// cost is bounded) and rules that refuse what the API server would refuse later on the Pods,
/// each with a message naming the field.
fn tolerations_schema(_: &mut SchemaGenerator) -> Schema {
    let rule = |expr: String, message: &str| {
        serde_json::to_value(kube::core::Rule::new(expr).message(message)).unwrap_or_default()
    };
    json_schema!({
        "type": "array",
        "maxItems": 32,
        "items": {
            "type": "object",
            "properties": {
                "key": { "type": "string", "maxLength": 317, "description": "Taint key to tolerate; empty (with operator Exists) tolerates every taint." },
                "operator": { "type": "string", "maxLength": 16, "description": "`Equal` (default: key and value match) or `Exists` (any value)." },
                "value": { "type": "string", "maxLength": 63, "description": "Taint value to match with operator Equal." },
                "effect": { "type": "string", "maxLength": 32, "description": "`NoSchedule`, `PreferNoSchedule` or `NoExecute`; empty matches every effect." },
                "tolerationSeconds": { "type": "integer", "format": "int64", "minimum": 0, "maximum": 31536000, "description": "With effect NoExecute: seconds the instance stays bound after the taint appears. Omitted: forever." }
            },
            "x-kubernetes-validations": [
                rule("!has(self.operator) || self.operator in ['Exists', 'Equal']".into(), "toleration operator must be Exists or Equal"),
                rule("!has(self.effect) || self.effect in ['', 'NoSchedule', 'PreferNoSchedule', 'NoExecute']".into(), "toleration effect must be NoSchedule, PreferNoSchedule or NoExecute (or empty for all)"),
                rule(format!("!has(self.key) || self.key == '' || self.key.matches(r'{LABEL_KEY_PATTERN}')"), "toleration key must be a label key (an optional DNS prefix and '/', then at most 63 letters, digits, '-', '_' or '.')"),
                rule(format!("!has(self.value) || self.value.matches(r'{LABEL_VALUE_PATTERN}')"), "toleration value must be a label value (at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"),
                rule("(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')".into(), "a toleration without a key must have operator Exists (it then tolerates every taint)"),
                rule("!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''".into(), "a toleration with operator Exists must not set a value"),
                rule("!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')".into(), "tolerationSeconds applies only to effect NoExecute")
            ]
        }
    })
}

impl InstanceTypeSpec {
    /// The instance type used when none is named and no `defaultinstancetype` object exists:
    /// Azure ML's built-in default, 100m CPU / 2Gi requested, 2 CPU / 2Gi limit, any node.
    pub fn builtin_default() -> Self {
        let q = |s: &str| Quantity(s.to_string());
        InstanceTypeSpec {
            description: Some("built-in default (Azure ML defaultinstancetype)".into()),
            resources: ResourceRequirements {
                requests: [
                    ("cpu".to_string(), q("100m")),
                    ("memory".to_string(), q("2Gi")),
                ]
                .into(),
                limits: [
                    ("cpu".to_string(), q("2")),
                    ("memory".to_string(), q("2Gi")),
                ]
                .into(),
            },
            ..Default::default()
        }
    }

    /// Number of GPUs per instance (0 when none or unparsable).
    pub fn gpus(&self) -> u32 {
        self.resources
            .limits
            .get(GPU_RESOURCE)
            .and_then(|q| q.0.parse().ok())
            .unwrap_or(0)
    }
}

/// Observed state of an InstanceType.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceTypeStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready nodes that match the node selector and tolerations and are large enough for one
    /// instance (0 when none does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matching_nodes: Option<i32>,
    /// Standard conditions: `Ready` True once the operator has seen the type (an InstanceType is a
    /// definition and waits on nothing), with reason `NodesFit`, or `NoMatchingNodes` and why no
    /// node fits in the message (what names the type stays Pending until one does).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_default_matches_azure_ml() {
        let d = InstanceTypeSpec::builtin_default();
        assert_eq!(d.resources.requests["cpu"].0, "100m");
        assert_eq!(d.resources.limits["memory"].0, "2Gi");
        assert_eq!(d.gpus(), 0);
    }
}
