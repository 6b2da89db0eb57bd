//! The environment of a batch-driver pod, from a deployment's settings and a job's overrides (pure).
//!
//! The BatchJob controller runs `mlcompute batch-driver` with no flags in an Indexed Job and puts these
//! variables in the container; Kubernetes adds `JOB_COMPLETION_INDEX` (the instance index). Keeping the
//! names here, next to the driver, means the two sides cannot drift: a unit test checks that the CLI
//! reads every one of them.

use std::path::Path;

use crate::api::{
    batch_deployment::{BatchSettings, LoggingLevel, OutputAction},
    batch_job::BatchOverrides,
};

/// Where the pod finds its inputs and writes its outputs (paths inside the container).
#[derive(Clone, Copy, Debug)]
pub struct PodPaths<'a> {
    /// The mounted input folder.
    pub input: &'a Path,
    /// The mounted output folder, shared by all instances of the job.
    pub output: &'a Path,
    /// The scoring script inside the mounted code.
    pub scoring_script: &'a Path,
    /// The mounted model folder, if any (exported to the script as `AZUREML_MODEL_DIR`).
    pub model_dir: Option<&'a Path>,
}

/// Variables for the batch-driver container, in a stable order. `settings.environmentVariables` come
/// last, so a user can set anything else the scoring script reads (they reach the Python workers,
/// which inherit the driver's environment).
pub fn driver_env(
    settings: &BatchSettings,
    overrides: Option<&BatchOverrides>,
    instance_count: i32,
    paths: PodPaths<'_>,
) -> Vec<(String, String)> {
    let o = overrides.cloned().unwrap_or_default();
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let mut env = vec![
        ("MLCOMPUTE_BATCH_INPUT", path(paths.input)),
        ("MLCOMPUTE_BATCH_OUTPUT", path(paths.output)),
        ("MLCOMPUTE_BATCH_SCORING_SCRIPT", path(paths.scoring_script)),
        (
            "MLCOMPUTE_BATCH_INSTANCE_COUNT",
            o.instance_count.unwrap_or(instance_count).to_string(),
        ),
        (
            "MLCOMPUTE_BATCH_MINI_BATCH_SIZE",
            o.mini_batch_size
                .unwrap_or(settings.mini_batch_size)
                .to_string(),
        ),
        (
            "MLCOMPUTE_BATCH_MAX_CONCURRENCY",
            settings.max_concurrency_per_instance.to_string(),
        ),
        (
            "MLCOMPUTE_BATCH_MAX_RETRIES",
            o.max_retries
                .unwrap_or(settings.retry_settings.max_retries)
                .to_string(),
        ),
        (
            "MLCOMPUTE_BATCH_TIMEOUT",
            o.timeout
                .unwrap_or_else(|| settings.retry_settings.timeout.clone()),
        ),
        (
            "MLCOMPUTE_BATCH_ERROR_THRESHOLD",
            o.error_threshold
                .unwrap_or(settings.error_threshold)
                .to_string(),
        ),
        (
            "MLCOMPUTE_BATCH_OUTPUT_ACTION",
            match settings.output_action {
                OutputAction::AppendRow => "append_row",
                OutputAction::SummaryOnly => "summary_only",
            }
            .to_string(),
        ),
        (
            "MLCOMPUTE_BATCH_OUTPUT_FILE",
            o.output_file_name
                .unwrap_or_else(|| settings.output_file_name.clone()),
        ),
        (
            "MLCOMPUTE_LOG_LEVEL",
            match settings.logging_level {
                LoggingLevel::Debug => "debug",
                LoggingLevel::Info => "info",
                LoggingLevel::Warning => "warn",
            }
            .to_string(),
        ),
    ];
    if let Some(model) = paths.model_dir {
        env.push(("AZUREML_MODEL_DIR", path(model)));
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
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::cli::Cli;

    fn paths() -> PodPaths<'static> {
        PodPaths {
            input: Path::new("/mnt/input"),
            output: Path::new("/mnt/output"),
            scoring_script: Path::new("/mnt/code/score.py"),
            model_dir: Some(Path::new("/mnt/model")),
        }
    }

    fn settings() -> BatchSettings {
        serde_json::from_value(serde_json::json!({})).unwrap()
    }

    #[test]
    fn defaults_follow_azure_ml() {
        let env = driver_env(&settings(), None, 2, paths());
        let get = |k: &str| {
            env.iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("MLCOMPUTE_BATCH_MINI_BATCH_SIZE"), Some("10"));
        assert_eq!(get("MLCOMPUTE_BATCH_MAX_CONCURRENCY"), Some("1"));
        assert_eq!(get("MLCOMPUTE_BATCH_MAX_RETRIES"), Some("3"));
        assert_eq!(get("MLCOMPUTE_BATCH_TIMEOUT"), Some("30s"));
        assert_eq!(get("MLCOMPUTE_BATCH_ERROR_THRESHOLD"), Some("-1"));
        assert_eq!(get("MLCOMPUTE_BATCH_OUTPUT_ACTION"), Some("append_row"));
        assert_eq!(get("MLCOMPUTE_BATCH_OUTPUT_FILE"), Some("predictions.csv"));
        assert_eq!(get("MLCOMPUTE_BATCH_INSTANCE_COUNT"), Some("2"));
        assert_eq!(get("AZUREML_MODEL_DIR"), Some("/mnt/model"));
        assert_eq!(get("MLCOMPUTE_LOG_LEVEL"), Some("info"));
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
        let get = |k: &str| {
            env.iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("MLCOMPUTE_BATCH_MINI_BATCH_SIZE"), Some("5"));
        assert_eq!(get("MLCOMPUTE_BATCH_INSTANCE_COUNT"), Some("4"));
        assert_eq!(get("MLCOMPUTE_BATCH_ERROR_THRESHOLD"), Some("7"));
        assert_eq!(get("MLCOMPUTE_BATCH_TIMEOUT"), Some("2m"));
        assert_eq!(get("MLCOMPUTE_BATCH_OUTPUT_FILE"), Some("out.csv"));
        assert_eq!(get("MLCOMPUTE_BATCH_MAX_RETRIES"), Some("0"));
        assert_eq!(
            env.last().unwrap(),
            &("LABELS".to_string(), "a,b".to_string())
        );
    }

    #[test]
    fn the_cli_reads_every_variable_the_controller_sets() {
        let cli = Cli::command();
        let driver = cli.find_subcommand("batch-driver").unwrap();
        let mut read: Vec<String> = driver
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .collect();
        read.extend(
            cli.get_arguments()
                .filter_map(|a| a.get_env())
                .map(|e| e.to_string_lossy().into_owned()),
        );
        for (name, _) in driver_env(&settings(), None, 1, paths()) {
            assert!(read.contains(&name), "batch-driver does not read {name}");
        }
        assert!(read.contains(&"JOB_COMPLETION_INDEX".to_string()));
    }
}
