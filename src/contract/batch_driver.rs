//! The command line and environment of a batch driver Pod.
//!
//! Writer: the BatchJob controller, which runs `mlcompute` [`DRIVER_COMMAND`] with no flags in an
//! Indexed Job with the variables of [`driver_env`], plus [`PROGRESS_FILE`]; and the relay sidecar
//! [`RELAY_COMMAND`] with [`PROGRESS_FILE`], [`PROGRESS_CONFIGMAP`], [`POD_NAMESPACE`] and
//! [`INSTANCE_INDEX`]; and an init container [`COPY_BINARY_COMMAND`]. Kubernetes sets
//! [`INSTANCE_INDEX`] in the driver container of an Indexed Job. Reader: the `mlcompute` binary
//! (`cli::batch_driver`, `cli::batch_progress_relay`), whose flags read these variables; a test
//! there parses the whole environment [`driver_env`] gives.
//!
//! An older driver ignores a variable it does not know, and a newer one falls back to its default
//! for a variable an older controller does not set: the environment is compatible both ways as
//! long as every new variable has a default.

use std::path::Path;

use crate::api::{
    batch_deployment::{BatchSettings, LoggingLevel, OutputAction},
    batch_job::BatchOverrides,
};

/// The driver subcommand.
pub const DRIVER_COMMAND: &str = "batch-driver";
/// The relay sidecar's subcommand.
pub const RELAY_COMMAND: &str = "batch-progress-relay";
/// The init container's subcommand that copies the binary into the driver's image.
pub const COPY_BINARY_COMMAND: &str = "copy-binary";

/// The mounted input folder.
pub const INPUT: &str = "MLCOMPUTE_BATCH_INPUT";
/// The mounted output folder, shared by all instances.
pub const OUTPUT: &str = "MLCOMPUTE_BATCH_OUTPUT";
/// The scoring script inside the mounted code.
pub const SCORING_SCRIPT: &str = "MLCOMPUTE_BATCH_SCORING_SCRIPT";
pub const INSTANCE_COUNT: &str = "MLCOMPUTE_BATCH_INSTANCE_COUNT";
pub const MINI_BATCH_SIZE: &str = "MLCOMPUTE_BATCH_MINI_BATCH_SIZE";
pub const MAX_CONCURRENCY: &str = "MLCOMPUTE_BATCH_MAX_CONCURRENCY";
pub const MAX_RETRIES: &str = "MLCOMPUTE_BATCH_MAX_RETRIES";
/// A duration (`30s`, `2m`) or seconds.
pub const TIMEOUT: &str = "MLCOMPUTE_BATCH_TIMEOUT";
/// Failed items allowed; `-1` ignores failures.
pub const ERROR_THRESHOLD: &str = "MLCOMPUTE_BATCH_ERROR_THRESHOLD";
/// `append_row` or `summary_only`.
pub const OUTPUT_ACTION: &str = "MLCOMPUTE_BATCH_OUTPUT_ACTION";
pub const OUTPUT_FILE: &str = "MLCOMPUTE_BATCH_OUTPUT_FILE";
/// `debug`, `info` or `warn` (every `mlcompute` command reads it).
pub const LOG_LEVEL: &str = "MLCOMPUTE_LOG_LEVEL";
/// The mounted model folder (Azure ML's name; the scoring script reads it too).
pub use super::AZUREML_MODEL_DIR as MODEL_DIR;
/// The instance index: Kubernetes sets it in Indexed Job Pods; the relay gets it from the Pod's
/// `batch.kubernetes.io/job-completion-index` annotation.
pub const INSTANCE_INDEX: &str = "JOB_COMPLETION_INDEX";
/// The file the driver rewrites with its [`super::progress::PodProgress`] and the relay reads.
pub const PROGRESS_FILE: &str = "MLCOMPUTE_PROGRESS_FILE";
/// The job's progress ConfigMap, which the relay patches.
pub const PROGRESS_CONFIGMAP: &str = "MLCOMPUTE_PROGRESS_CONFIGMAP";
/// The Pod's namespace (downward API), for the relay.
pub const POD_NAMESPACE: &str = "POD_NAMESPACE";

/// Where the pod finds its inputs and writes its outputs (paths inside the container).
#[derive(Clone, Copy, Debug)]
pub struct PodPaths<'a> {
    /// The mounted input folder.
    pub input: &'a Path,
    /// The mounted output folder, shared by all instances of the job.
    pub output: &'a Path,
    /// The scoring script inside the mounted code.
    pub scoring_script: &'a Path,
    /// The mounted model folder, if any (exported to the script as [`MODEL_DIR`]).
    pub model_dir: Option<&'a Path>,
}

/// Variables for the batch-driver container, in a stable order (pure). `settings.environmentVariables`
/// come last, so a user can set anything else the scoring script reads (they reach the Python
/// workers, which inherit the driver's environment).
pub fn driver_env(
    settings: &BatchSettings,
    overrides: Option<&BatchOverrides>,
    instance_count: i32,
    paths: PodPaths<'_>,
) -> Vec<(String, String)> {
    let o = overrides.cloned().unwrap_or_default();
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let mut env = vec![
        (INPUT, path(paths.input)),
        (OUTPUT, path(paths.output)),
        (SCORING_SCRIPT, path(paths.scoring_script)),
        (
            INSTANCE_COUNT,
            o.instance_count.unwrap_or(instance_count).to_string(),
        ),
        (
            MINI_BATCH_SIZE,
            o.mini_batch_size
                .unwrap_or(settings.mini_batch_size)
                .to_string(),
        ),
        (
            MAX_CONCURRENCY,
            settings.max_concurrency_per_instance.to_string(),
        ),
        (
            MAX_RETRIES,
            o.max_retries
                .unwrap_or(settings.retry_settings.max_retries)
                .to_string(),
        ),
        (
            TIMEOUT,
            o.timeout
                .unwrap_or_else(|| settings.retry_settings.timeout.clone()),
        ),
        (
            ERROR_THRESHOLD,
            o.error_threshold
                .unwrap_or(settings.error_threshold)
                .to_string(),
        ),
        (
            OUTPUT_ACTION,
            match settings.output_action {
                OutputAction::AppendRow => "append_row",
                OutputAction::SummaryOnly => "summary_only",
            }
            .to_string(),
        ),
        (
            OUTPUT_FILE,
            o.output_file_name
                .unwrap_or_else(|| settings.output_file_name.clone()),
        ),
        (
            LOG_LEVEL,
            match settings.logging_level {
                LoggingLevel::Debug => "debug",
                LoggingLevel::Info => "info",
                LoggingLevel::Warning => "warn",
            }
            .to_string(),
        ),
    ];
    if let Some(model) = paths.model_dir {
        env.push((MODEL_DIR, path(model)));
    }
    let mut env: Vec<(String, String)> = env.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    env.extend(
        settings
            .environment_variables
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    env
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn paths() -> PodPaths<'static> {
        PodPaths {
            input: Path::new("/mnt/input"),
            output: Path::new("/mnt/output"),
            scoring_script: Path::new("/mnt/code/score.py"),
            model_dir: Some(Path::new("/mnt/model")),
        }
    }

    pub(crate) fn settings() -> BatchSettings {
        serde_json::from_value(serde_json::json!({})).unwrap()
    }

    fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
        env.iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn defaults_follow_azure_ml() {
        let env = driver_env(&settings(), None, 2, paths());
        assert_eq!(get(&env, MINI_BATCH_SIZE), Some("10"));
        assert_eq!(get(&env, MAX_CONCURRENCY), Some("1"));
        assert_eq!(get(&env, MAX_RETRIES), Some("3"));
        assert_eq!(get(&env, TIMEOUT), Some("30s"));
        assert_eq!(get(&env, ERROR_THRESHOLD), Some("-1"));
        assert_eq!(get(&env, OUTPUT_ACTION), Some("append_row"));
        assert_eq!(get(&env, OUTPUT_FILE), Some("predictions.csv"));
        assert_eq!(get(&env, INSTANCE_COUNT), Some("2"));
        assert_eq!(get(&env, MODEL_DIR), Some("/mnt/model"));
        assert_eq!(get(&env, LOG_LEVEL), Some("info"));
    }

    #[test]
    fn job_overrides_win_and_user_variables_come_last() {
        let mut s = settings();
        s.environment_variables
            .insert("LABELS".into(), "a,b".into());
        let o = BatchOverrides {
            mini_batch_size: Some(5),
            instance_count: Some(4),
            error_threshold: Some(7),
            timeout: Some("2m".into()),
            output_file_name: Some("out.csv".into()),
            max_retries: Some(0),
        };
        let env = driver_env(&s, Some(&o), 2, paths());
        assert_eq!(get(&env, MINI_BATCH_SIZE), Some("5"));
        assert_eq!(get(&env, INSTANCE_COUNT), Some("4"));
        assert_eq!(get(&env, ERROR_THRESHOLD), Some("7"));
        assert_eq!(get(&env, TIMEOUT), Some("2m"));
        assert_eq!(get(&env, OUTPUT_FILE), Some("out.csv"));
        assert_eq!(get(&env, MAX_RETRIES), Some("0"));
        assert_eq!(
            env.last().unwrap(),
            &("LABELS".to_string(), "a,b".to_string())
        );
    }
}
