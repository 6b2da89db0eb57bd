//! An invocation of a batch endpoint as a BatchJob: what `mlcompute batch invoke` and the router's
//! `POST /api/v1/batch/{endpoint}/invoke` both create. Pure, apart from the random name suffix.

use serde::{Deserialize, Serialize};

use crate::api::{
    batch_job::{BatchInput, BatchInputType, BatchJob, BatchJobSpec, BatchOverrides},
    common::{MAX_RUN_TIMEOUT, parse_duration_at_most},
};

/// Why an invocation is refused (before anything is created).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvokeError {
    #[error(
        "unknown --set key {0:?} (known: miniBatchSize, instanceCount, maxRetries, timeout, errorThreshold, outputFileName)"
    )]
    UnknownKey(String),
    #[error("--set {0:?} is not KEY=VALUE")]
    NotKeyValue(String),
    #[error("--set {key}={value:?}: {why}")]
    BadValue {
        key: String,
        value: String,
        why: &'static str,
    },
    #[error("invalid request body: {0}")]
    Body(String),
}

impl InvokeError {
    /// A bounded label (for the router's metrics and HTTP errors).
    pub fn category(&self) -> &'static str {
        match self {
            Self::UnknownKey(_) | Self::NotKeyValue(_) | Self::BadValue { .. } => "bad_override",
            Self::Body(_) => "bad_body",
        }
    }
}

/// The body of `POST /api/v1/batch/{endpoint}/invoke`: a BatchJob spec without the endpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InvokeRequest {
    pub input: BatchInput,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<BatchOverrides>,
}

/// Applies one `KEY=VALUE` override (Azure ML's snake_case or the CRD's camelCase keys).
pub fn apply_set(overrides: &mut BatchOverrides, kv: &str) -> Result<(), InvokeError> {
    let (key, value) = kv
        .split_once('=')
        .ok_or_else(|| InvokeError::NotKeyValue(kv.into()))?;
    let bad = |why| InvokeError::BadValue {
        key: key.into(),
        value: value.into(),
        why,
    };
    let int = |min: i32, max: i32, why| {
        value
            .parse::<i32>()
            .ok()
            .filter(|v| (min..=max).contains(v))
            .ok_or_else(|| bad(why))
    };
    match key.replace('_', "").to_ascii_lowercase().as_str() {
        "minibatchsize" => {
            overrides.mini_batch_size = Some(int(1, 100_000, "expected 1 to 100000 files")?)
        }
        "instancecount" => overrides.instance_count = Some(int(1, 1000, "expected 1 to 1000")?),
        "maxretries" => overrides.max_retries = Some(int(0, 100, "expected 0 to 100")?),
        "errorthreshold" => {
            overrides.error_threshold = Some(int(-1, i32::MAX, "expected -1 or more")?)
        }
        "timeout" => {
            // Azure ML gives seconds; the CRD takes durations.
            let t = if value.chars().all(|c| c.is_ascii_digit()) && !value.is_empty() {
                format!("{value}s")
            } else {
                value.to_string()
            };
            parse_duration_at_most(&t, MAX_RUN_TIMEOUT)
                .map_err(|_| bad("expected a duration such as 30s or 2m, at most 24h"))?;
            overrides.timeout = Some(t);
        }
        "outputfilename" => {
            let ok = !value.is_empty()
                && value != "."
                && value != ".."
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !ok {
                return Err(bad("expected a plain file name"));
            }
            overrides.output_file_name = Some(value.into());
        }
        _ => return Err(InvokeError::UnknownKey(key.into())),
    }
    Ok(())
}

/// Overrides from a list of `KEY=VALUE`; `None` when the list is empty.
pub fn overrides_from_sets(sets: &[String]) -> Result<Option<BatchOverrides>, InvokeError> {
    if sets.is_empty() {
        return Ok(None);
    }
    let mut o = BatchOverrides::default();
    for kv in sets {
        apply_set(&mut o, kv)?;
    }
    Ok(Some(o))
}

/// A generated job name: `<endpoint>-<5 random lowercase letters and digits>`.
pub fn generated_name(endpoint: &str) -> String {
    use rand_core::{OsRng, RngCore};
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bytes = [0u8; 5];
    OsRng.fill_bytes(&mut bytes);
    let suffix: String = bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    format!("{endpoint}-{suffix}")
}

/// The BatchJob an invocation creates (name generated; namespace left to the caller's API).
pub fn batch_job(endpoint: &str, name: &str, request: InvokeRequest) -> BatchJob {
    BatchJob::new(
        name,
        BatchJobSpec {
            endpoint_name: endpoint.into(),
            deployment_name: request.deployment_name,
            input: request.input,
            output_path: request.output_path,
            overrides: request.overrides,
            cancel: false,
        },
    )
}

/// The router's handler logic: a BatchJob from the invoke request body (JSON).
pub fn batch_job_from_invoke(endpoint: &str, body: &[u8]) -> Result<BatchJob, InvokeError> {
    let request: InvokeRequest =
        serde_json::from_slice(body).map_err(|e| InvokeError::Body(e.to_string()))?;
    Ok(batch_job(endpoint, &generated_name(endpoint), request))
}

/// An input of the given path; `uri_file` when `file`.
pub fn input(path: &str, file: bool) -> BatchInput {
    BatchInput {
        type_: if file {
            BatchInputType::UriFile
        } else {
            BatchInputType::UriFolder
        },
        path: path.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_accept_azure_and_crd_keys() {
        let o = overrides_from_sets(&[
            "mini_batch_size=5".into(),
            "instanceCount=3".into(),
            "timeout=90".into(),
            "error_threshold=-1".into(),
            "output_file_name=out.csv".into(),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(o.mini_batch_size, Some(5));
        assert_eq!(o.instance_count, Some(3));
        assert_eq!(o.timeout.as_deref(), Some("90s"));
        assert_eq!(o.error_threshold, Some(-1));
        assert_eq!(o.output_file_name.as_deref(), Some("out.csv"));
        assert_eq!(overrides_from_sets(&[]).unwrap(), None);
    }

    #[test]
    fn bad_sets_say_why() {
        let err = |s: &str| overrides_from_sets(&[s.to_string()]).unwrap_err();
        assert!(matches!(err("colour=blue"), InvokeError::UnknownKey(k) if k == "colour"));
        assert!(matches!(err("miniBatchSize"), InvokeError::NotKeyValue(_)));
        assert!(matches!(
            err("miniBatchSize=0"),
            InvokeError::BadValue { .. }
        ));
        assert!(matches!(err("timeout=soon"), InvokeError::BadValue { .. }));
        assert!(matches!(
            err("outputFileName=a/b"),
            InvokeError::BadValue { .. }
        ));
        assert!(
            err("colour=blue")
                .to_string()
                .contains("known: miniBatchSize")
        );
    }

    #[test]
    fn the_router_body_becomes_a_batch_job() {
        let body = br#"{"input":{"path":"pvc://data/images"},"deploymentName":"blue","overrides":{"miniBatchSize":4}}"#;
        let job = batch_job_from_invoke("scorer", body).unwrap();
        let name = job.metadata.name.clone().unwrap();
        assert!(name.starts_with("scorer-") && name.len() == "scorer-".len() + 5);
        assert_eq!(job.spec.endpoint_name, "scorer");
        assert_eq!(job.spec.deployment_name.as_deref(), Some("blue"));
        assert_eq!(job.spec.input.type_, BatchInputType::UriFolder);
        assert_eq!(job.spec.overrides.unwrap().mini_batch_size, Some(4));
        assert!(matches!(
            batch_job_from_invoke("scorer", br#"{"inputs":{}}"#),
            Err(InvokeError::Body(_))
        ));
    }
}
