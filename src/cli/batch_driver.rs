//! `mlcompute batch-driver`: one instance of a batch job (see [`crate::dataplane::batch_driver`]).
//!
//! Every flag can also come from the environment (`MLCOMPUTE_BATCH_*`), which is how the BatchJob
//! controller configures the pods of its Indexed Job; the instance index defaults to
//! `JOB_COMPLETION_INDEX`, which Kubernetes sets in Indexed Job pods.
//!
//! Exit codes ([`crate::contract::exit_codes`]): 0 the shard is done (and the outputs merged when it
//! finished last); 1 internal error (I/O, unreadable input); 2 usage error; 3 the error threshold was
//! crossed (reason on stderr and in `summary.json`); 4 no Python worker could be started (interpreter
//! missing, or the scoring script's import or `init()` failed); 5 `--merge-only` found mini-batches
//! not finished yet.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::Args;
use tracing::info;

use crate::contract::{
    batch_driver as env,
    exit_codes::{
        MERGE_INCOMPLETE as EXIT_MERGE_INCOMPLETE, REASON_PREFIX,
        THRESHOLD_CROSSED as EXIT_THRESHOLD_CROSSED,
        WORKER_START_FAILED as EXIT_WORKER_START_FAILED,
    },
};
use crate::dataplane::batch_driver::{
    driver::{self, DriverConfig, DriverOutcome},
    output::{self, MergeOutcome, OutputAction, OutputSettings},
    plan::Shard,
    pod_progress::SnapshotSink,
    progress::{FileSink, Phase, ProgressSink, StdoutSink},
    threshold::ErrorThreshold,
    worker::RetryPolicy,
};

/// Flags of `mlcompute batch-driver`.
#[derive(Debug, Args)]
pub struct BatchDriverArgs {
    /// Input folder; every regular file below it is an item.
    #[arg(
        long,
        env = env::INPUT,
        required_unless_present = "merge_only"
    )]
    pub input: Option<PathBuf>,
    /// Output folder, shared by all instances (rows, errors, summary, journals).
    #[arg(long, env = env::OUTPUT)]
    pub output: PathBuf,
    /// The scoring script (defines `init()` and `run(mini_batch)`).
    #[arg(
        long,
        env = env::SCORING_SCRIPT,
        required_unless_present = "merge_only"
    )]
    pub scoring_script: Option<PathBuf>,
    /// Model folder, exported to the script as AZUREML_MODEL_DIR.
    #[arg(long, env = env::MODEL_DIR)]
    pub model_dir: Option<PathBuf>,
    /// This instance's index (0-based).
    #[arg(long, env = env::INSTANCE_INDEX, default_value_t = 0)]
    pub instance_index: u32,
    /// Number of instances.
    #[arg(long, env = env::INSTANCE_COUNT, default_value_t = 1)]
    pub instance_count: u32,
    /// Files per `run()` call.
    #[arg(long, env = env::MINI_BATCH_SIZE, default_value_t = 10)]
    pub mini_batch_size: usize,
    /// Python workers per instance (`maxConcurrencyPerInstance`).
    #[arg(long, env = env::MAX_CONCURRENCY, default_value_t = 1)]
    pub max_concurrency: usize,
    /// Retries of a failed or timed-out mini-batch.
    #[arg(long, env = env::MAX_RETRIES, default_value_t = 3)]
    pub max_retries: u32,
    /// Time limit of one mini-batch attempt (`30s`, `500ms`, `1h30m`, or seconds).
    #[arg(long, env = env::TIMEOUT, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Time limit for importing the script and running `init()`.
    #[arg(long, env = "MLCOMPUTE_BATCH_INIT_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub init_timeout: Duration,
    /// Failed items allowed across the whole input; -1 ignores failures.
    #[arg(long, env = env::ERROR_THRESHOLD, default_value_t = -1, allow_negative_numbers = true)]
    pub error_threshold: i64,
    /// `append_row` (one output file) or `summary_only`.
    #[arg(long, env = env::OUTPUT_ACTION, value_enum, default_value_t = OutputAction::AppendRow)]
    pub output_action: OutputAction,
    /// Name of the merged row file in the output folder.
    #[arg(
        long,
        env = env::OUTPUT_FILE,
        default_value = "predictions.csv"
    )]
    pub output_file: String,
    /// Python interpreter for the workers.
    #[arg(long, env = "MLCOMPUTE_BATCH_PYTHON", default_value = "python3")]
    pub python: String,
    /// Folder for the worker shim (default: a folder under the system temp dir).
    #[arg(long, env = "MLCOMPUTE_BATCH_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// How often progress is written while running.
    #[arg(long, env = "MLCOMPUTE_BATCH_PROGRESS_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub progress_interval: Duration,
    /// Only merge the journals in OUTPUT into the output, error and summary files, then exit.
    #[arg(long)]
    pub merge_only: bool,
    /// Also rewrite this file with the instance's latest progress (set by the BatchJob controller:
    /// the Pod's relay sidecar copies it into the job's progress object). The driver itself holds
    /// no Kubernetes credentials.
    #[arg(long, env = env::PROGRESS_FILE)]
    pub progress_file: Option<PathBuf>,
}

/// Runs the driver; exits the process with code 3, 4 or 5 for the outcomes that have one.
pub async fn run(args: BatchDriverArgs) -> anyhow::Result<()> {
    let threshold = ErrorThreshold::from_setting(args.error_threshold)?;
    output::validate_file_name(&args.output_file)?;
    let output_settings = OutputSettings {
        action: args.output_action,
        file_name: args.output_file.clone(),
        threshold,
    };
    if args.merge_only {
        return merge_only(&args, &output_settings);
    }
    let (Some(input), Some(scoring_script)) = (args.input.clone(), args.scoring_script.clone())
    else {
        anyhow::bail!("--input and --scoring-script are required");
    };
    let shard = Shard::new(args.instance_index, args.instance_count)?;
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("cannot create output folder {}", args.output.display()))?;
    let config = DriverConfig {
        input,
        output: args.output.clone(),
        scoring_script: absolute(scoring_script)?,
        model_dir: args.model_dir.clone(),
        shard,
        mini_batch_size: args.mini_batch_size,
        max_concurrency: args.max_concurrency,
        retry: RetryPolicy {
            max_retries: args.max_retries,
            timeout: args.timeout,
        },
        init_timeout: args.init_timeout,
        output_settings,
        python: args.python.clone(),
        work_dir: args.work_dir.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("mlcompute-batch-{}", std::process::id()))
        }),
        progress_interval: args.progress_interval,
    };
    let cleanup = args.work_dir.is_none().then(|| config.work_dir.clone());
    let mut sinks: Vec<Box<dyn ProgressSink>> = vec![
        Box::new(FileSink::new(&config.output, shard.index)),
        Box::new(StdoutSink),
    ];
    if let Some(path) = &args.progress_file {
        sinks.push(Box::new(SnapshotSink::new(path)));
    }
    let outcome = driver::run(config, sinks).await;
    if let Some(dir) = cleanup {
        let _ = std::fs::remove_dir_all(dir);
    }
    match outcome? {
        DriverOutcome::Completed { merged } => {
            match merged {
                Some(summary) => info!(
                    rows = summary.rows,
                    failed_items = summary.items.failed,
                    "batch job completed; outputs merged"
                ),
                None => info!("shard completed; another instance merges the outputs"),
            }
            Ok(())
        }
        DriverOutcome::ThresholdCrossed { reason } => exit(EXIT_THRESHOLD_CROSSED, &reason),
        DriverOutcome::WorkerStartFailed { reason, .. } => exit(EXIT_WORKER_START_FAILED, &reason),
    }
}

fn merge_only(args: &BatchDriverArgs, settings: &OutputSettings) -> anyhow::Result<()> {
    match output::merge(&args.output, settings)? {
        MergeOutcome::Merged(summary) => match (summary.status, summary.reason) {
            (Phase::Failed, Some(reason)) => exit(EXIT_THRESHOLD_CROSSED, &reason),
            _ => {
                info!(
                    rows = summary.rows,
                    failed_items = summary.items.failed,
                    "outputs merged"
                );
                Ok(())
            }
        },
        MergeOutcome::Incomplete { missing } => exit(
            EXIT_MERGE_INCOMPLETE,
            &format!("{missing} mini-batch(es) are not finished yet; nothing merged"),
        ),
    }
}

/// The CLI boundary is the one place that picks a specific exit code: the driver has already stopped
/// its workers and written its files.
fn exit(code: i32, reason: &str) -> ! {
    eprintln!("{REASON_PREFIX}{reason}");
    std::process::exit(code)
}

fn absolute(path: PathBuf) -> anyhow::Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path);
    }
    Ok(std::env::current_dir()
        .context("cannot read the current folder")?
        .join(path))
}

/// Parses a duration as the CRDs write it (`500ms`, `30s`, `2m`, `1h30m`, `1.5h`), or a plain number of
/// seconds (Azure ML's `timeout: 30`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    // A plain number is seconds; either way the API's bounded parser reads it (never overflows).
    let with_unit = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        format!("{text}s")
    } else {
        text.to_string()
    };
    crate::api::common::parse_duration(&with_unit).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;
    use crate::{
        cli::{Cli, Command},
        contract::{batch_driver::driver_env, exit_codes},
    };

    fn paths() -> env::PodPaths<'static> {
        env::PodPaths {
            input: std::path::Path::new("/mnt/input"),
            output: std::path::Path::new("/mnt/output"),
            scoring_script: std::path::Path::new("/mnt/code/score.py"),
            model_dir: Some(std::path::Path::new("/mnt/model")),
        }
    }

    /// The flag of `mlcompute batch-driver` (or a global one) that reads variable `name`.
    fn flag_of(name: &str) -> Option<String> {
        let cli = Cli::command();
        let driver = cli.find_subcommand(env::DRIVER_COMMAND).unwrap().clone();
        driver
            .get_arguments()
            .chain(cli.get_arguments())
            .find(|a| a.get_env().is_some_and(|e| e == name))
            .and_then(|a| a.get_long().map(|l| format!("--{l}")))
    }

    #[test]
    fn the_cli_reads_and_parses_every_variable_the_controller_sets() {
        let settings = serde_json::from_value(serde_json::json!({
            "outputAction": "summary_only", "loggingLevel": "warning"
        }))
        .unwrap();
        for settings in [
            settings,
            serde_json::from_value(serde_json::json!({})).unwrap(),
        ] {
            let mut argv = vec!["mlcompute".to_string(), env::DRIVER_COMMAND.to_string()];
            for (name, value) in driver_env(&settings, None, 2, paths()) {
                let flag =
                    flag_of(&name).unwrap_or_else(|| panic!("batch-driver does not read {name}"));
                argv.extend([flag, value]);
            }
            argv.extend([flag_of(env::PROGRESS_FILE).unwrap(), "/p".into()]);
            argv.extend([flag_of(env::INSTANCE_INDEX).unwrap(), "1".into()]);
            let parsed = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            let Command::BatchDriver(args) = parsed.command else {
                panic!("not the driver")
            };
            assert_eq!((args.instance_index, args.instance_count), (1, 2));
        }
    }

    #[test]
    fn the_relay_reads_what_the_controller_sets_and_usage_errors_exit_2() {
        let cli = Cli::command();
        let relay = cli.find_subcommand(env::RELAY_COMMAND).unwrap();
        let read: Vec<String> = relay
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .collect();
        for name in [
            env::PROGRESS_FILE,
            env::PROGRESS_CONFIGMAP,
            env::POD_NAMESPACE,
            env::INSTANCE_INDEX,
        ] {
            assert!(
                read.iter().any(|r| r == name),
                "the relay does not read {name}"
            );
        }
        assert!(cli.find_subcommand(env::COPY_BINARY_COMMAND).is_some());
        let bad = Cli::try_parse_from(["mlcompute", env::DRIVER_COMMAND, "--mini-batch-size", "x"]);
        assert_eq!(bad.unwrap_err().exit_code(), exit_codes::USAGE);
    }

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("3 days").is_err());
        assert!(parse_duration("").is_err());
    }
}
