//! Types and validation rules shared by several kinds.
//!
//! The CEL rules live here as small constructors so that every kind says "a DNS label" or "a data URI"
//! the same way, with the same message; the pure parsers next to them are what controllers use to
//! read the same strings, so the API server and the operator agree on what is valid.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::core::Rule;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// RFC 1123 label: what Kubernetes accepts as a Service, Pod-hostname or label-value-like name.
pub const DNS_LABEL_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// The body of an RFC 1123 subdomain: dot-separated DNS labels (the 253-character total is
/// bounded by each field's maxLength or checked by the parsers).
macro_rules! subdomain {
    () => {
        r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*"
    };
}

/// RFC 1123 subdomain: what Kubernetes accepts as most object names (Secrets, ConfigMaps, PVCs).
pub const DNS_SUBDOMAIN_PATTERN: &str = concat!("^", subdomain!(), "$");
/// What Kubernetes accepts as an environment variable name.
pub const ENV_VAR_NAME_PATTERN: &str = "^[-._a-zA-Z][-._a-zA-Z0-9]*$";
/// Azure ML's endpoint and deployment name rule (3–32 characters, starts with a letter), which is
/// also a DNS-1035 label, so Services and Pods can be named after it with room for a suffix.
pub const AZURE_NAME_PATTERN: &str = "^[a-z][-a-z0-9]{1,30}[a-z0-9]$";
/// A sum of one to four number-unit terms, as in `90s`, `1h30m` or `1.5h`. The digits per term are
/// bounded per unit (hours 5, minutes 7, seconds 9, milliseconds 12; fractions 9), so that four
/// terms stay below 4.0e18 ns: the API server's CEL `duration()` (Go's int64 nanoseconds) can
/// never overflow on a string that matches.
pub const DURATION_PATTERN: &str = r"^(([0-9]{1,5}(\.[0-9]{1,9})?h)|([0-9]{1,7}(\.[0-9]{1,9})?m)|([0-9]{1,9}(\.[0-9]{1,9})?s)|([0-9]{1,12}(\.[0-9]{1,9})?ms)){1,4}$";
/// Most number-unit terms in a duration.
pub const MAX_DURATION_TERMS: usize = 4;
/// Longest a TrainingJob may run (`spec.timeout`): 30 days.
pub const MAX_JOB_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);
/// Longest one batch `run()` call may take (`retrySettings.timeout`, `overrides.timeout`): 1 day.
pub const MAX_RUN_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Most failed files a batch job may tolerate before it is aborted (else -1: any number).
pub const MAX_ERROR_THRESHOLD: i32 = 100_000_000;
/// Longest a finished TrainingJob's Pods are kept (`ttlSecondsAfterFinished`): 30 days.
pub const MAX_TTL_SECONDS: i32 = 30 * 24 * 3600;
/// Azure ML's shared-memory size (`2g`) or a Kubernetes binary quantity (`2Gi`); at most 13 digits.
pub const SHM_SIZE_PATTERN: &str = "^[0-9]{1,13}([bkmgBKMG]|[KMGT]i)?$";
/// Largest `/dev/shm` (memory-backed, counted against the instance's memory): 1Ti.
pub const MAX_SHM_SIZE: u64 = 1 << 40;
/// Largest value of any resource quantity (a sanity bound far above any real node).
pub const MAX_QUANTITY: &str = "1Pi";
/// A Kubernetes label key (also a resource name): an optional DNS-subdomain prefix and `/`, then a
/// name of at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit.
pub const LABEL_KEY_PATTERN: &str =
    "^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";
/// A Kubernetes label value: empty, or at most 63 letters, digits, `-`, `_` or `.`, starting and
/// ending with a letter or digit.
pub const LABEL_VALUE_PATTERN: &str = "^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$";
/// A DNS-1035 label: what a Service name must be (starts with a letter).
pub const DNS_1035_LABEL_PATTERN: &str = "^[a-z]([-a-z0-9]*[a-z0-9])?$";
/// An input or output name: a safe identifier, usable in `${{inputs.<name>}}`, file paths and
/// environment variable names.
pub const IO_NAME_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_]{0,63}$";
/// `pvc://<claim>[/<path>]`: a path on a PersistentVolumeClaim in the object's namespace. No
/// whitespace or control characters; the URI rules also refuse `..` segments.
pub const PVC_URI_PATTERN: &str = concat!(r"^pvc://", subdomain!(), r"(/[^\s\x00-\x1f\x7f]*)?$");
/// `https://<host>/<path>`: a file or folder downloaded over HTTPS. No whitespace or control
/// characters.
pub const HTTPS_URI_PATTERN: &str = r"^https://[^\s\x00-\x1f\x7f/?#]+([/?#][^\s\x00-\x1f\x7f]*)?$";
/// `configmap://<name>`: code files kept in a ConfigMap in the object's namespace.
pub const CONFIGMAP_URI_PATTERN: &str = concat!("^configmap://", subdomain!(), "$");
/// An environment reference: `<name>`, `<name>:<version>` or `<name>@latest`.
pub const ENVIRONMENT_REF_PATTERN: &str = concat!(
    "^",
    subdomain!(),
    "(:[A-Za-z0-9][A-Za-z0-9._-]{0,63}|@latest)?$"
);
/// An environment version: letters, digits, `.`, `_` and `-`.
pub const VERSION_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]*$";

/// Longest URI accepted; bounds the cost of the CEL rules that match on it.
pub const MAX_URI_LENGTH: u32 = 2048;
/// Most entries in maps and lists that CEL rules iterate over; bounds their cost.
pub const MAX_MAP_ENTRIES: u32 = 64;
/// Most deployments under one endpoint (Azure ML's limit).
pub const MAX_DEPLOYMENTS_PER_ENDPOINT: u32 = 20;

/// The `spec.phase`-like condition types every controller sets.
pub mod condition_types {
    /// The object's children exist and are healthy.
    pub const READY: &str = "Ready";
    /// The spec references something that does not exist or does not fit (environment, instance type, endpoint).
    pub const RESOLVED: &str = "Resolved";
    /// The controller is working towards the spec (rolling out, waiting for capacity).
    pub const PROGRESSING: &str = "Progressing";
}

/// CEL rule constructors, each with a message a `kubectl apply` user can act on.
pub mod rules {
    use super::*;

    fn rule(expr: String, message: String) -> Rule {
        Rule::new(expr).message(message.as_str())
    }

    /// The value is a DNS label naming another object (a deployment, an endpoint, an instance type).
    pub fn dns_label(what: &str) -> Rule {
        rule(
            format!("self.size() <= 63 && self.matches(r'{DNS_LABEL_PATTERN}')"),
            format!(
                "{what} must be a DNS label: at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit"
            ),
        )
    }

    /// Every key of the map is an Azure-ML-style deployment name.
    pub fn deployment_name_keys() -> Rule {
        rule(
            format!("self.all(k, k.matches(r'{AZURE_NAME_PATTERN}'))"),
            "deployment names must be 3-32 lowercase letters, digits or '-', starting with a letter".into(),
        )
    }

    /// The value is an Azure-ML-style endpoint or deployment name.
    pub fn azure_name(what: &str) -> Rule {
        rule(
            format!("self.matches(r'{AZURE_NAME_PATTERN}')"),
            format!(
                "{what} must be 3-32 lowercase letters, digits or '-', starting with a letter and ending with a letter or digit"
            ),
        )
    }

    /// `metadata.name` of the object is an Azure-ML-style name (used at the root of a kind).
    pub fn object_name(kind: &str) -> Rule {
        rule(
            format!("self.metadata.name.matches(r'{AZURE_NAME_PATTERN}')"),
            format!(
                "{kind} names must be 3-32 lowercase letters, digits or '-', starting with a letter and ending with a letter or digit"
            ),
        )
    }

    /// A container image reference; only whitespace is refused here, the registry judges the rest.
    pub fn image() -> Rule {
        rule(
            r"!self.matches(r'\s')".into(),
            "image must be a container image reference without spaces".into(),
        )
    }

    /// A duration such as `30s`, `90m` or `1h30m` (the pattern bounds the digits and terms).
    pub fn duration(what: &str) -> Rule {
        rule(
            format!("self.matches(r'{DURATION_PATTERN}')"),
            format!(
                "{what} must be a duration such as 30s, 90m or 1h30m (units ms, s, m, h; at most {MAX_DURATION_TERMS} terms and 5 digits of hours, 7 of minutes, 9 of seconds)"
            ),
        )
    }

    /// A well-formed duration is more than zero and at most `max`. Only evaluated on strings that
    /// match [`DURATION_PATTERN`] (the [`duration`] rule reports the others), where CEL's
    /// `duration()` cannot overflow.
    pub fn duration_at_most(what: &str, max: Duration) -> Rule {
        rule(
            format!(
                "!self.matches(r'{DURATION_PATTERN}') || (duration(self) > duration('0s') && duration(self) <= duration('{}s'))",
                max.as_secs()
            ),
            format!(
                "{what} must be more than 0s and at most {}",
                human_duration(max)
            ),
        )
    }

    /// A shared-memory size within 1 byte and [`MAX_SHM_SIZE`], in Azure ML or Kubernetes units.
    pub fn shm_size(what: &str) -> Rule {
        rule(
            format!("self.matches(r'{SHM_SIZE_PATTERN}')"),
            format!("{what} must be a size such as 2g, 512m or 2Gi"),
        )
    }

    /// A well-formed shared-memory size is more than zero and at most [`MAX_SHM_SIZE`]. Divides the
    /// bound by the unit instead of multiplying, so that CEL's int64 never overflows.
    pub fn shm_size_at_most(what: &str) -> Rule {
        let unit = "(self.endsWith('Ti') ? 1099511627776 : self.matches(r'[gG]i?$') ? 1073741824 : self.matches(r'[mM]i?$') ? 1048576 : self.matches(r'[kK]i?$') ? 1024 : 1)";
        rule(
            format!(
                "!self.matches(r'{SHM_SIZE_PATTERN}') || (int(self.find(r'^[0-9]+')) > 0 && int(self.find(r'^[0-9]+')) <= {MAX_SHM_SIZE} / {unit})"
            ),
            format!("{what} must be more than 0 and at most 1Ti (1024g)"),
        )
    }

    /// A data input: a PVC path or an HTTPS URL.
    pub fn input_uri(what: &str) -> Rule {
        rule(
            format!(
                "(self.matches(r'{PVC_URI_PATTERN}') || self.matches(r'{HTTPS_URI_PATTERN}')) && {NO_PARENT}"
            ),
            format!("{what} must be a pvc://<claim>/<path> or https:// URI{URI_HINT}"),
        )
    }

    /// A writable location: only a PVC path can be written.
    pub fn output_uri(what: &str) -> Rule {
        rule(
            format!("self.matches(r'{PVC_URI_PATTERN}') && {NO_PARENT}"),
            format!(
                "{what} must be a pvc://<claim>/<path> URI (outputs are written to a PersistentVolumeClaim){URI_HINT}"
            ),
        )
    }

    /// Where code comes from: a ConfigMap or a PVC path.
    pub fn code_uri(what: &str) -> Rule {
        rule(
            format!(
                "(self.matches(r'{CONFIGMAP_URI_PATTERN}') || self.matches(r'{PVC_URI_PATTERN}')) && {NO_PARENT}"
            ),
            format!("{what} must be a configmap://<name> or pvc://<claim>/<path> URI{URI_HINT}"),
        )
    }

    /// A `pvc://` path has no `..` segment (Kubernetes refuses such a subPath, and it would leave
    /// the claim's folder).
    const NO_PARENT: &str = r"!self.matches(r'^pvc://[^/]*/(.*/)?\.\.(/|$)')";
    const URI_HINT: &str = " without whitespace, control characters or '..' segments";

    /// An environment reference.
    pub fn environment_ref() -> Rule {
        rule(
            format!("self.matches(r'{ENVIRONMENT_REF_PATTERN}')"),
            "environment must be <name>, <name>:<version> or <name>@latest, where <name> is an Environment in this namespace".into(),
        )
    }

    /// A field that may not change once set, nor be added or removed after creation.
    pub fn immutable_optional(field: &str, hint: &str) -> Rule {
        rule(
            format!(
                "has(self.{field}) == has(oldSelf.{field}) && (!has(self.{field}) || self.{field} == oldSelf.{field})"
            ),
            format!("{field} is immutable{hint}"),
        )
    }

    /// A required field that may not change after creation.
    pub fn immutable(field: &str, hint: &str) -> Rule {
        rule(
            format!("self.{field} == oldSelf.{field}"),
            format!("{field} is immutable{hint}"),
        )
    }

    /// Every key of an environment-variable map is a name Kubernetes accepts.
    pub fn env_var_names() -> Rule {
        rule(
            format!("self.all(k, k.matches(r'{ENV_VAR_NAME_PATTERN}'))"),
            "environment variable names must be letters, digits, '_', '-' or '.', and must not start with a digit".into(),
        )
    }

    /// Every quantity in a resource map is well formed.
    pub fn quantities() -> Rule {
        rule(
            "self.all(k, isQuantity(string(self[k])))".into(),
            "resource values must be Kubernetes quantities such as 500m, 2, 4Gi or 1536Mi".into(),
        )
    }

    /// Every quantity in a resource map is within 0 and [`MAX_QUANTITY`].
    pub fn quantities_in_range() -> Rule {
        rule(
            format!(
                "self.all(k, !isQuantity(string(self[k])) || (quantity(string(self[k])).compareTo(quantity('0')) >= 0 && quantity(string(self[k])).compareTo(quantity('{MAX_QUANTITY}')) <= 0))"
            ),
            format!("resource values must not be negative, and at most {MAX_QUANTITY}"),
        )
    }

    /// Every key of a resource map is a resource name (`cpu`, `memory`, `nvidia.com/gpu`).
    pub fn resource_names() -> Rule {
        rule(
            format!("self.all(k, k.matches(r'{LABEL_KEY_PATTERN}'))"),
            "resource names must be names such as cpu, memory or nvidia.com/gpu (an optional DNS prefix and '/', then at most 63 letters, digits, '-', '_' or '.')".into(),
        )
    }

    /// Every key of the map is a Kubernetes label key, and every value a label value.
    pub fn labels(what: &str) -> Rule {
        rule(
            format!(
                "self.all(k, k.matches(r'{LABEL_KEY_PATTERN}') && self[k].matches(r'{LABEL_VALUE_PATTERN}'))"
            ),
            format!(
                "{what} keys must be label keys (an optional DNS prefix and '/', then at most 63 letters, digits, '-', '_' or '.') and values label values (at most 63 of the same, starting and ending with a letter or digit)"
            ),
        )
    }

    /// Every key of an inputs or outputs map is a safe identifier.
    pub fn io_names(what: &str) -> Rule {
        rule(
            format!("self.all(k, k.matches(r'{IO_NAME_PATTERN}'))"),
            format!(
                "{what} names must be identifiers: a letter or '_', then up to 63 letters, digits or '_' (they become paths and ${{{{{what}.<name>}}}} references)"
            ),
        )
    }

    /// `metadata.name` of the object is a DNS-1035 label of at most `max` characters, because the
    /// object's children (named in `why`) are named after it.
    pub fn object_name_for_children(kind: &str, max: u32, why: &str) -> Rule {
        rule(
            format!(
                "self.metadata.name.size() <= {max} && self.metadata.name.matches(r'{DNS_1035_LABEL_PATTERN}')"
            ),
            format!(
                "{kind} names must be at most {max} lowercase letters, digits or '-', starting with a letter and ending with a letter or digit, because {why}"
            ),
        )
    }

    /// `metadata.name` of the object is a DNS label of at most `max` characters (no dots), because
    /// of `why`.
    pub fn object_name_dns_label(kind: &str, max: u32, why: &str) -> Rule {
        rule(
            format!(
                "self.metadata.name.size() <= {max} && self.metadata.name.matches(r'{DNS_LABEL_PATTERN}')"
            ),
            format!(
                "{kind} names must be at most {max} lowercase letters, digits or '-', starting and ending with a letter or digit, because {why}"
            ),
        )
    }
}

/// Extends a schema with `maxProperties`, for maps iterated by CEL rules.
pub(crate) fn max_properties<const N: u32>(schema: &mut Schema) {
    schema.insert("maxProperties".into(), N.into());
}

/// A map of label keys to label values: at most `N` entries, values at most 63 characters. The
/// bounds keep the CEL rule that checks them ([`rules::labels`]) within the API server's budget.
pub(crate) fn label_map<const N: u32>(schema: &mut Schema) {
    schema.insert("maxProperties".into(), N.into());
    if let Some(values) = schema
        .get_mut("additionalProperties")
        .and_then(|v| v.as_object_mut())
    {
        values.insert("maxLength".into(), 63.into());
    }
}

/// Bounds a map of deployment name to percent: at most `N` entries, each value within 0..=`MAX`.
pub(crate) fn percent_map<const N: u32, const MAX: i32>(schema: &mut Schema) {
    schema.insert("maxProperties".into(), N.into());
    if let Some(values) = schema
        .get_mut("additionalProperties")
        .and_then(|v| v.as_object_mut())
    {
        values.insert("minimum".into(), 0.into());
        values.insert("maximum".into(), MAX.into());
    }
}

/// A resource map (`cpu`, `memory`, `nvidia.com/gpu`, …) with a short description, instead of the
/// many-paragraph one `Quantity` carries, which would drown `kubectl explain`.
pub(crate) fn resource_map_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "maxProperties": 8,
        "additionalProperties": {
            "x-kubernetes-int-or-string": true,
            "maxLength": 32,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
        },
        "x-kubernetes-validations": [
            serde_json::to_value(rules::quantities()).unwrap_or_default(),
            serde_json::to_value(rules::quantities_in_range()).unwrap_or_default(),
            serde_json::to_value(rules::resource_names()).unwrap_or_default(),
        ]
    })
}

/// A resource map: resource name to quantity, as in a container's `resources.requests`.
pub type ResourceList = BTreeMap<String, Quantity>;

/// Requests and limits for one instance.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRequirements {
    /// Minimum resources reserved for each instance (Kubernetes requests), e.g. `cpu: 500m`, `memory: 1Gi`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "resource_map_schema")]
    pub requests: ResourceList,
    /// Maximum resources each instance may use (Kubernetes limits). GPUs (`nvidia.com/gpu`) go here only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "resource_map_schema")]
    pub limits: ResourceList,
}

/// How a data input reaches the container.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InputMode {
    // Mounted read-only; only `pvc://` inputs can be mounted.
    RoMount,
    // Copied into the container's scratch space before the command starts.
    Download,
    // Not fetched at all: the URI is handed to the command, which reads it itself.
    Direct,
}

/// What a data input is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InputType {
    #[default]
    UriFolder,
    UriFile,
    MlflowModel,
    CustomModel,
    Literal,
}

/// One named input of a job. `${{inputs.<name>}}` in the command resolves to its local path (or
/// its value, for a literal).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.type == 'literal' ? (has(self.value) && !has(self.path)) : (has(self.path) && !has(self.value))")
        .message("a literal input needs value (and no path); a data input needs path (and no value)"),
    validation = Rule::new("!has(self.mode) || self.mode != 'ro_mount' || (has(self.path) && self.path.startsWith('pvc://'))")
        .message("only pvc:// inputs can be mounted (mode ro_mount); use mode download or direct for https://"),
    validation = Rule::new("!has(self.mode) || self.type != 'literal'")
        .message("mode does not apply to literal inputs"),
    validation = Rule::new("!has(self.path) || !self.path.startsWith('https://') || self.type == 'uri_file' || self.type == 'custom_model'")
        .message("an https:// input must be a single file (type uri_file or custom_model): a folder cannot be listed over HTTPS"),
)]
pub struct JobInput {
    /// Kind of input: `uri_folder` (default), `uri_file`, `mlflow_model`, `custom_model`, or `literal` for a plain value.
    #[serde(default, rename = "type")]
    pub type_: InputType,
    /// Where the data lives: `pvc://<claim>/<path>` or `https://…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = rules::input_uri("path"))]
    pub path: Option<String>,
    /// How the data reaches the container. Default: `ro_mount` for `pvc://`, `download` for `https://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<InputMode>,
    /// The value of a `literal` input, substituted as text into the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub value: Option<String>,
}

/// How an output leaves the container.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputMode {
    // Written in place on the claim while the job runs.
    #[default]
    RwMount,
    // Written to scratch space and copied to the claim when the command exits.
    Upload,
}

/// What an output is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputType {
    #[default]
    UriFolder,
    UriFile,
    MlflowModel,
    CustomModel,
}

/// One named output of a job. `${{outputs.<name>}}` in the command resolves to its local path.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobOutput {
    /// Kind of output: `uri_folder` (default), `uri_file`, `mlflow_model` or `custom_model`.
    #[serde(default, rename = "type")]
    pub type_: OutputType,
    /// Where the output is written: `pvc://<claim>/<path>`.
    #[schemars(length(max = 2048))]
    #[x_kube(validation = rules::output_uri("path"))]
    pub path: String,
    /// `rw_mount` (default) writes in place; `upload` copies when the command exits.
    #[serde(default)]
    pub mode: OutputMode,
}

/// Code and the script that serves or scores with it, as in Azure ML's `code_configuration`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CodeConfiguration {
    /// Where the code lives: `configmap://<name>` or `pvc://<claim>/<path>`. Mounted at `/var/azureml-app`.
    #[schemars(length(max = 2048))]
    #[x_kube(validation = rules::code_uri("codeConfiguration.code"))]
    pub code: String,
    /// The scoring script, relative to the code folder (it defines `init()` and `run()`).
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("!self.startsWith('/') && !self.contains('..')").message("scoringScript must be a relative path inside the code folder"))]
    pub scoring_script: String,
}

/// Azure ML job phases, shared by TrainingJob and BatchJob.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum JobPhase {
    // Waiting for capacity, a queue, an environment or an instance type (see conditions).
    Queued,
    // Pods created; images pulling, containers starting, rendezvous forming.
    Starting,
    Running,
    Completed,
    Failed,
    Canceled,
}

impl JobPhase {
    /// Whether the job is finished for good.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Canceled)
    }
}

/// A parsed data or code URI: the schemes the controllers know how to honour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataUri {
    /// A path on a PersistentVolumeClaim in the object's namespace; `path` has no leading `/`.
    Pvc { claim: String, path: String },
    /// An HTTPS URL, kept whole.
    Https(String),
    /// A ConfigMap in the object's namespace.
    ConfigMap(String),
}

/// Why a string is not a [`DataUri`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{uri:?} is not a pvc://, https:// or configmap:// URI")]
pub struct InvalidUri {
    pub uri: String,
}

impl std::str::FromStr for DataUri {
    type Err = InvalidUri;

    fn from_str(uri: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidUri {
            uri: uri.to_string(),
        };
        if let Some(rest) = uri.strip_prefix("pvc://") {
            let (claim, path) = rest.split_once('/').unwrap_or((rest, ""));
            if !is_dns_subdomain(claim)
                || path.chars().any(|c| c.is_whitespace() || c.is_control())
                || path.split('/').any(|segment| segment == "..")
            {
                return Err(invalid());
            }
            return Ok(DataUri::Pvc {
                claim: claim.into(),
                path: path.trim_matches('/').into(),
            });
        }
        if let Some(rest) = uri.strip_prefix("https://") {
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            if host.is_empty() || uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid());
            }
            return Ok(DataUri::Https(uri.into()));
        }
        if let Some(name) = uri.strip_prefix("configmap://") {
            if !is_dns_subdomain(name) {
                return Err(invalid());
            }
            return Ok(DataUri::ConfigMap(name.into()));
        }
        Err(invalid())
    }
}

/// Whether `s` is an RFC 1123 label (as [`DNS_LABEL_PATTERN`]).
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Whether `s` is an RFC 1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Which version of an environment a reference asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvironmentVersion {
    /// `name` or `name@latest`: whatever the Environment currently holds.
    Latest,
    /// `name:version`: the Environment must hold exactly this version.
    Exact(String),
}

/// A parsed `environment` reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvironmentRef {
    /// Name of the Environment object in the referencing object's namespace.
    pub name: String,
    pub version: EnvironmentVersion,
}

impl EnvironmentRef {
    /// Parses `name`, `name:version` or `name@latest`; `None` when malformed.
    pub fn parse(s: &str) -> Option<Self> {
        let (name, version) = if let Some(name) = s.strip_suffix("@latest") {
            (name, EnvironmentVersion::Latest)
        } else if let Some((name, version)) = s.split_once(':') {
            let ok = version.len() <= 64
                && version
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric())
                && version
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !ok {
                return None;
            }
            (name, EnvironmentVersion::Exact(version.into()))
        } else {
            (s, EnvironmentVersion::Latest)
        };
        is_dns_subdomain(name).then(|| EnvironmentRef {
            name: name.into(),
            version,
        })
    }
}

/// Why a string is not a duration of the API.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidDuration {
    #[error(
        "{0:?} is not a duration such as 30s, 90m or 1h30m (units ms, s, m, h; at most 4 terms and 5 digits of hours, 7 of minutes, 9 of seconds, 12 of milliseconds)"
    )]
    Malformed(String),
    #[error("{value:?} must be more than 0s and at most {max}")]
    OutOfRange { value: String, max: String },
}

/// Parses a duration as accepted by [`DURATION_PATTERN`] (`30s`, `1h30m`, `1.5h`, `250ms`), with the
/// same digit and term limits, in exact integer nanoseconds (as Go's `time.ParseDuration`, which
/// the API server's CEL uses, up to its rounding of fractions). Never panics.
pub fn parse_duration(s: &str) -> Result<Duration, InvalidDuration> {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let bad = || InvalidDuration::Malformed(s.chars().take(80).collect());
    if s.is_empty() {
        return Err(bad());
    }
    let digits = |t: &str| t.bytes().take_while(u8::is_ascii_digit).count();
    let mut rest = s;
    let mut terms = 0;
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        terms += 1;
        if terms > MAX_DURATION_TERMS {
            return Err(bad());
        }
        let (whole, tail) = rest.split_at(digits(rest));
        let (frac, tail) = match tail.strip_prefix('.') {
            Some(t) if digits(t) > 0 => t.split_at(digits(t)),
            Some(_) => return Err(bad()),
            None => ("", tail),
        };
        let (unit, max_digits, tail) = if let Some(t) = tail.strip_prefix("ms") {
            (1_000_000u128, 12, t)
        } else if let Some(t) = tail.strip_prefix('s') {
            (NANOS_PER_SEC, 9, t)
        } else if let Some(t) = tail.strip_prefix('m') {
            (60 * NANOS_PER_SEC, 7, t)
        } else if let Some(t) = tail.strip_prefix('h') {
            (3600 * NANOS_PER_SEC, 5, t)
        } else {
            return Err(bad());
        };
        if whole.is_empty() || whole.len() > max_digits || frac.len() > 9 {
            return Err(bad());
        }
        let whole: u128 = whole.parse().map_err(|_| bad())?;
        let fraction = if frac.is_empty() {
            0
        } else {
            let f: u128 = frac.parse().map_err(|_| bad())?;
            let scale = 10u128.pow(u32::try_from(frac.len()).map_err(|_| bad())?);
            f * unit / scale
        };
        nanos += whole * unit + fraction;
        rest = tail;
    }
    let secs = u64::try_from(nanos / NANOS_PER_SEC).map_err(|_| bad())?;
    let sub = u32::try_from(nanos % NANOS_PER_SEC).map_err(|_| bad())?;
    Ok(Duration::new(secs, sub))
}

/// [`parse_duration`], and more than zero and at most `max` (as [`rules::duration_at_most`]).
pub fn parse_duration_at_most(s: &str, max: Duration) -> Result<Duration, InvalidDuration> {
    let d = parse_duration(s)?;
    if d.is_zero() || d > max {
        return Err(InvalidDuration::OutOfRange {
            value: s.chars().take(80).collect(),
            max: human_duration(max),
        });
    }
    Ok(d)
}

/// `720h (30 days)`, `24h (1 day)`, `90s`: how messages state a bound.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        s if s >= 86400 && s % 86400 == 0 => {
            let days = s / 86400;
            format!(
                "{}h ({days} day{})",
                s / 3600,
                if days == 1 { "" } else { "s" }
            )
        }
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Why a string is not a shared-memory size of the API.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidShmSize {
    #[error("{0:?} is not a size such as 2g, 512m or 2Gi")]
    Malformed(String),
    #[error("{0:?} must be more than 0 and at most 1Ti (1024g)")]
    OutOfRange(String),
}

/// Parses a shared-memory size (Azure ML's `2g` or Kubernetes' `2Gi`) into bytes, with the limits
/// of [`SHM_SIZE_PATTERN`] and [`rules::shm_size_at_most`]. Azure ML's single letters are binary
/// units, as with `docker run --shm-size`.
pub fn parse_shm_size(s: &str) -> Result<u64, InvalidShmSize> {
    let malformed = || InvalidShmSize::Malformed(s.chars().take(80).collect());
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = s.split_at(digits);
    if num.is_empty() || num.len() > 13 {
        return Err(malformed());
    }
    let n: u64 = num.parse().map_err(|_| malformed())?;
    let shift = match unit {
        "" | "b" | "B" => 0,
        "k" | "K" | "Ki" => 10,
        "m" | "M" | "Mi" => 20,
        "g" | "G" | "Gi" => 30,
        "Ti" => 40,
        _ => return Err(malformed()),
    };
    n.checked_mul(1u64 << shift)
        .filter(|bytes| (1..=MAX_SHM_SIZE).contains(bytes))
        .ok_or_else(|| InvalidShmSize::OutOfRange(s.chars().take(80).collect()))
}

#[cfg(test)]
#[path = "common_proptest.rs"]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_the_schema_pattern() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(
            parse_duration("1h1m1s1ms"),
            Ok(Duration::from_millis(3_661_001))
        );
        assert_eq!(
            parse_duration("99999h"),
            Ok(Duration::from_secs(99999 * 3600))
        );
        for bad in [
            "",
            "30",
            "s",
            "1d",
            "-1s",
            "1.s",
            "1..5s",
            " 1s",
            ".5s",
            "1h1h1h1h1h",
            "99999999999999h",
            "100000h",
            "10000000m",
            "1000000000s",
            "1000000000000ms",
            "1.0000000001s",
            "1\u{0}s",
            "\u{ff11}s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bounded_durations_refuse_zero_and_too_long() {
        assert_eq!(
            parse_duration_at_most("720h", MAX_JOB_TIMEOUT),
            Ok(MAX_JOB_TIMEOUT)
        );
        assert!(matches!(
            parse_duration_at_most("720h1ms", MAX_JOB_TIMEOUT),
            Err(InvalidDuration::OutOfRange { .. })
        ));
        assert!(parse_duration_at_most("0s", MAX_JOB_TIMEOUT).is_err());
        assert_eq!(human_duration(MAX_JOB_TIMEOUT), "720h (30 days)");
        assert_eq!(human_duration(MAX_RUN_TIMEOUT), "24h (1 day)");
        assert_eq!(human_duration(Duration::from_secs(90)), "90s");
    }

    #[test]
    fn shm_sizes_accept_azure_and_kubernetes_units() {
        assert_eq!(parse_shm_size("2g"), Ok(2 << 30));
        assert_eq!(parse_shm_size("2Gi"), Ok(2 << 30));
        assert_eq!(parse_shm_size("512m"), Ok(512 << 20));
        assert_eq!(parse_shm_size("1024"), Ok(1024));
        assert_eq!(parse_shm_size("1Ti"), Ok(MAX_SHM_SIZE));
        assert_eq!(parse_shm_size("1024g"), Ok(MAX_SHM_SIZE));
        for bad in ["2gb", "g", "", "-1g", "99999999999999", "2 g"] {
            assert!(
                matches!(parse_shm_size(bad), Err(InvalidShmSize::Malformed(_))),
                "{bad:?}"
            );
        }
        for big in ["0", "0g", "1025g", "2Ti", "9999999999999Ti"] {
            assert!(
                matches!(parse_shm_size(big), Err(InvalidShmSize::OutOfRange(_))),
                "{big:?}"
            );
        }
    }

    #[test]
    fn uris_parse_into_the_supported_schemes() {
        assert_eq!(
            "pvc://data/cifar/train".parse(),
            Ok(DataUri::Pvc {
                claim: "data".into(),
                path: "cifar/train".into()
            })
        );
        assert_eq!(
            "pvc://data".parse(),
            Ok(DataUri::Pvc {
                claim: "data".into(),
                path: "".into()
            })
        );
        assert_eq!(
            "https://example.com/m.onnx".parse(),
            Ok(DataUri::Https("https://example.com/m.onnx".into()))
        );
        assert_eq!(
            "configmap://score-code".parse(),
            Ok(DataUri::ConfigMap("score-code".into()))
        );
        for bad in [
            "azureml://datastores/x",
            "http://example.com",
            "pvc://Data/x",
            "https:///x",
            "pvc://",
        ] {
            assert!(bad.parse::<DataUri>().is_err(), "{bad}");
        }
    }

    #[test]
    fn environment_references_follow_azure_ml_forms() {
        let r = EnvironmentRef::parse("torch:2").unwrap();
        assert_eq!(
            (r.name.as_str(), r.version),
            ("torch", EnvironmentVersion::Exact("2".into()))
        );
        assert_eq!(
            EnvironmentRef::parse("torch@latest").unwrap().version,
            EnvironmentVersion::Latest
        );
        assert_eq!(
            EnvironmentRef::parse("torch").unwrap().version,
            EnvironmentVersion::Latest
        );
        assert!(EnvironmentRef::parse("Torch:2").is_none());
        assert!(EnvironmentRef::parse("torch:").is_none());
    }

    #[test]
    fn dns_labels() {
        assert!(is_dns_label("blue-1"));
        assert!(!is_dns_label("-blue"));
        assert!(!is_dns_label("Blue"));
        assert!(!is_dns_label(&"a".repeat(64)));
    }
}
